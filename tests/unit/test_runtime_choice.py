"""`auto` picks backend and precision from the CPU's units and what is installed; forced choices
that cannot run are refused with the reason. CPUs are fed as flag sets, so every class is tested here."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from embedder.cpu_features import matrix_units, parse_cpuinfo
from embedder.runtime_choice import RuntimeChoice, RuntimeRefused, choose_runtime

AVX2 = {"avx2", "fma", "f16c"}
AVX512_VNNI = AVX2 | {"avx512f", "avx512_vnni"}
ZEN4 = AVX512_VNNI | {"avx512_bf16"}  # AVX-512 BF16, no AMX (AMD EPYC Genoa)
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_int8", "amx_tile"}
BOTH = {"onnxruntime", "openvino"}
ORT_ONLY = {"onnxruntime"}


def choose(
    flags: Collection[str],
    installed: Collection[str] = BOTH,
    backend: str = "auto",
    precision: str = "auto",
    providers: Collection[str] = ("cpu",),
    artifact: str = "fp32",
) -> RuntimeChoice:
    return choose_runtime(
        backend=backend,
        precision=precision,
        providers=providers,
        artifact_precision=artifact,
        cpu_flags=flags,
        installed=installed,
    )


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, ZEN4], ids=["amx", "avx512-bf16"])
def test_auto_runs_openvino_bf16_where_the_cpu_has_bf16_units(flags: set[str]) -> None:
    got = choose(flags)
    assert (got.backend, got.precision, got.device) == ("openvino", "bf16", "cpu")


@pytest.mark.parametrize("flags", [AVX2, AVX512_VNNI], ids=["avx2", "avx512-vnni"])
def test_auto_keeps_onnxruntime_fp32_without_bf16_units(flags: set[str]) -> None:
    got = choose(flags)
    assert (got.backend, got.precision) == ("onnxruntime", "fp32")
    assert "no bf16 units" in got.reason


def test_auto_keeps_onnxruntime_fp32_when_openvino_is_not_installed() -> None:
    got = choose(SAPPHIRE_RAPIDS, installed=ORT_ONLY)
    assert (got.backend, got.precision) == ("onnxruntime", "fp32")
    assert "no OpenVINO" in got.reason


def test_every_choice_can_be_forced() -> None:
    assert choose(SAPPHIRE_RAPIDS, backend="onnxruntime").backend == "onnxruntime"
    assert choose(SAPPHIRE_RAPIDS, precision="fp32") == RuntimeChoice(
        "onnxruntime", "fp32", "cpu", "auto/fp32: onnxruntime fp32"
    )
    forced = choose(SAPPHIRE_RAPIDS, backend="openvino", precision="fp32")
    assert (forced.backend, forced.precision) == ("openvino", "fp32")
    # bf16 forced on a CPU without the units: OpenVINO runs it (the session reports what ran).
    assert choose(AVX2, precision="bf16").backend == "openvino"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "onnxruntime", "precision": "bf16"}, "no bf16 kernels"),
        ({"precision": "fp16"}, "fp16 runs on CUDA only"),
        ({"backend": "openvino", "installed": ORT_ONLY}, r"pip install '.\[openvino\]'"),
        ({"precision": "bf16", "installed": ORT_ONLY}, "needs OpenVINO"),
        ({"precision": "int8"}, "int8 is an exported artifact"),
        ({"backend": "tvm"}, "backend must be one of"),
        ({"backend": "openvino", "providers": ("cuda",)}, "CPUs only"),
        ({"precision": "bf16", "providers": ("cuda",)}, "on CUDA use fp16 or fp32"),
        ({"precision": "bf16", "artifact": "int8"}, "cannot run a int8 artifact"),
    ],
)
def test_impossible_choices_are_refused_with_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(RuntimeRefused, match=message):
        choose(SAPPHIRE_RAPIDS, **kwargs)


def test_cuda_means_onnxruntime_fp32_unless_fp16_is_asked() -> None:
    assert choose(SAPPHIRE_RAPIDS, providers=("cuda",)) == RuntimeChoice(
        "onnxruntime", "fp32", "cuda", "cuda: onnxruntime fp32"
    )
    assert choose(AVX2, providers=("cuda",), precision="fp16").precision == "fp16"


def test_exported_int8_and_fp16_artifacts_run_as_exported() -> None:
    int8 = choose(SAPPHIRE_RAPIDS, artifact="int8")
    assert (int8.backend, int8.precision) == ("onnxruntime", "int8")
    assert choose(SAPPHIRE_RAPIDS, artifact="fp16", providers=("cuda",)).device == "cuda"


def test_cpuinfo_parsing_finds_the_matrix_units() -> None:
    text = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16 amx_tile\n"
    model, flags = parse_cpuinfo(text)
    assert model == "Intel Xeon"
    assert matrix_units(flags) == ["amx_bf16", "amx_tile", "avx512_bf16"]
