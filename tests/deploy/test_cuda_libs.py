"""embedder.cuda_libs, the build-time check the GPU image and GPU nodes run: it must fail the build
when the CUDA provider's libraries do not resolve, name each missing one, let only the driver's
libcuda.so.1 be absent at build time, and say plainly when onnxruntime is the CPU build."""

from __future__ import annotations

import ctypes
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embedder import cuda_libs
from embedder.cuda_libs import DRIVER_LIB, NO_CUDA_PROVIDER, check, elf_needed, parse_dlopen_error

REPO = Path(__file__).resolve().parents[2]


def real_dlopen_error(path_or_name: str) -> str:
    """The OSError text ctypes gives for this library on this machine."""
    with pytest.raises(OSError) as info:
        ctypes.CDLL(path_or_name)
    return str(info.value)


def shared_lib() -> Path:
    """A small real shared library that ships with every onnxruntime build (CPU one included)."""
    import onnxruntime

    path = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_shared.so"
    assert path.exists(), path
    return path


def fake_gpu_package(tmp_path: Path, renames: dict[bytes, bytes]) -> Path:
    """An onnxruntime-gpu-shaped folder whose CUDA provider is a real ELF library with some
    DT_NEEDED names rewritten (same length or shorter), so dlopen fails the way it would."""
    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    data = shared_lib().read_bytes()
    for old, new in renames.items():
        assert len(new) <= len(old) and old + b"\0" in data
        data = data.replace(old + b"\0", new.ljust(len(old), b"\0") + b"\0")
    (capi / cuda_libs.PROVIDER_LIB).write_bytes(data)
    (capi / "build_and_package_info.py").write_text(
        "package_name = 'onnxruntime-gpu'\n__version__ = '1.31.1'\ncuda_version = '13.0'\n"
    )
    return capi.parent


def test_cpu_build_says_it_has_no_cuda_provider_and_fails() -> None:
    """This machine runs the CPU onnxruntime: the module must refuse, in one clear line."""
    try:
        importlib.metadata.version("onnxruntime-gpu")
        pytest.skip("onnxruntime-gpu is installed here")
    except importlib.metadata.PackageNotFoundError:
        pass
    result = subprocess.run(
        [sys.executable, "-m", "embedder.cuda_libs"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0, result.stdout
    assert NO_CUDA_PROVIDER in result.stdout
    assert len(result.stdout.strip().splitlines()) == 1, result.stdout


def test_missing_library_is_named_from_the_real_dlopen_error() -> None:
    message = real_dlopen_error("libqmatch-absent.so.7")
    assert parse_dlopen_error(message, "libqmatch-absent.so.7") == (
        "libqmatch-absent.so.7",
        "not found on the library search path (No such file or directory)",
    )


def test_broken_files_are_explained(tmp_path: Path) -> None:
    empty = tmp_path / "libempty.so.1"
    empty.write_bytes(b"")
    pointer = tmp_path / "libpointer.so.1"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n" * 20)
    lib, reason = parse_dlopen_error(real_dlopen_error(str(empty)), str(empty))
    assert (lib, reason.split(" (")[0]) == ("libempty.so.1", "file too short")
    lib, reason = parse_dlopen_error(real_dlopen_error(str(pointer)), str(pointer))
    assert (lib, reason.split(" (")[0]) == ("libpointer.so.1", "invalid ELF header")


@pytest.mark.parametrize(
    ("message", "library", "words"),
    [
        # Recorded from onnxruntime-gpu 1.31.1 installed without its [cuda] extra.
        (
            "libcublasLt.so.13: cannot open shared object file: No such file or directory",
            "libcublasLt.so.13",
            "not found",
        ),
        # glibc's text for a libstdc++ older than the provider was built against.
        (
            "/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found "
            "(required by /opt/venv/onnxruntime/capi/libonnxruntime_providers_cuda.so)",
            "libstdc++.so.6",
            "GLIBCXX_3.4.32, which libonnxruntime_providers_cuda.so needs",
        ),
        # glibc's text for a CUDA library of another minor version than the provider's.
        (
            "/opt/venv/onnxruntime/capi/libonnxruntime_providers_cuda.so: undefined symbol: "
            "cublasLtMatmulAlgoGetHeuristic_v2",
            "libonnxruntime_providers_cuda.so",
            "undefined symbol cublasLtMatmulAlgoGetHeuristic_v2",
        ),
        ("/x/libcudnn.so.9: wrong ELF class: ELFCLASS32", "libcudnn.so.9", "32/64-bit"),
    ],
)
def test_dlopen_error_texts(message: str, library: str, words: str) -> None:
    lib, reason = parse_dlopen_error(message, "whatever.so")
    assert lib == library
    assert words in reason
    assert "\n" not in reason


def test_unknown_error_text_is_kept_not_lost() -> None:
    assert parse_dlopen_error("something new happened", "libx.so.1") == (
        "libx.so.1",
        "something new happened",
    )


def test_elf_needed_reads_what_readelf_reads() -> None:
    needed = elf_needed(shared_lib())
    assert "libc.so.6" in needed
    readelf = shutil.which("readelf")
    if readelf:
        out = subprocess.run([readelf, "-d", str(shared_lib())], capture_output=True, text=True, check=True)
        listed = [line.split("[")[1].rstrip("]") for line in out.stdout.splitlines() if "(NEEDED)" in line]
        assert needed == listed


def test_every_missing_library_is_reported_not_just_the_first(tmp_path: Path) -> None:
    package = fake_gpu_package(
        tmp_path, {b"libstdc++.so.6": b"libcuda.so.1", b"libgcc_s.so.1": b"libqmnone.so"}
    )
    report = check(package, preload=False)
    by_lib = {u.library: u for u in report.unresolved}
    assert {"libqmnone.so", "libcudnn.so.9"} <= set(by_lib)
    assert not report.ok
    assert report.cuda_build == "13.0" and report.package == "onnxruntime-gpu"
    lines = report.lines()
    assert lines[0].startswith("FAIL: onnxruntime-gpu 1.31.1 (CUDA 13.0)")
    assert any(line.strip().startswith("missing: libqmnone.so:") for line in lines)


@pytest.mark.skipif(cuda_libs.driver_cuda_version() is not None, reason="a real NVIDIA driver is here")
def test_only_the_driver_library_may_be_missing_at_build_time(tmp_path: Path) -> None:
    package = fake_gpu_package(tmp_path, {b"libstdc++.so.6": b"libcuda.so.1"})
    report = check(package, preload=False, runtime_libs=())
    assert [(u.library, u.allowed) for u in report.unresolved] == [(DRIVER_LIB, True)]
    assert report.ok, report.lines()
    # On a GPU node the driver must be there: the same finding fails the check.
    strict = check(package, preload=False, runtime_libs=(), require_driver=True)
    assert [(u.library, u.allowed) for u in strict.unresolved] == [(DRIVER_LIB, False)]
    assert not strict.ok
