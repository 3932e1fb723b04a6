"""What pyproject.toml pins, read once for the deploy-kit tests (Dockerfile, k8s manifests)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


@dataclass(frozen=True)
class Pins:
    version: str  # the project's version (image tags start with it)
    ray: str  # the ray==X pin
    python: str  # the Python the project is checked against ([tool.mypy] python_version)
    onnxruntime_gpu: str  # the [gpu] extra's requirement, e.g. onnxruntime-gpu[cuda,cudnn]==1.31.1

    @property
    def onnxruntime_gpu_version(self) -> str:
        """The onnxruntime-gpu version alone, e.g. 1.31.1."""
        return self.onnxruntime_gpu.split("==", 1)[1]

    @property
    def onnxruntime_gpu_extras(self) -> set[str]:
        """The extras named in the [gpu] requirement, e.g. {"cuda", "cudnn"}."""
        m = re.match(r"onnxruntime-gpu\[([^]]*)\]==", self.onnxruntime_gpu)
        return {e.strip() for e in m.group(1).split(",")} if m else set()

    @property
    def python_tag(self) -> str:
        """Ray's image tag for this Python, e.g. py311."""
        return "py" + self.python.replace(".", "")


def read_pins(path: Path = REPO / "pyproject.toml") -> Pins:
    data = tomllib.loads(path.read_text())
    project = data["project"]
    (ray,) = [
        m.group(1) for d in project["dependencies"] if (m := re.match(r"ray(?:\[[^]]*\])?==([\w.]+)$", d))
    ]
    (gpu,) = [d for d in project["optional-dependencies"]["gpu"] if d.startswith("onnxruntime-gpu")]
    return Pins(
        version=project["version"],
        ray=ray,
        python=str(data["tool"]["mypy"]["python_version"]),
        onnxruntime_gpu=gpu,
    )


PROJECT_PINS = read_pins()
