"""Dense layers after pooling (sentence-transformers' `Dense` modules): weights, bias, activation, in numpy.

They run here, beside pooling, rather than inside the ONNX graph, so every runtime (onnxruntime
CPU/CUDA, OpenVINO, the fused GPU topology that pools in its replica) shares one implementation,
the backbone graph stays the plain transformer the optimizer knows how to fuse, and int8
quantisation never touches them. Their cost is one small matmul per text, not per token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedder.errors import ArtifactError


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


# sentence-transformers names the activation by its torch class path; the last part is what matters.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, np.float32(0)),
    "sigmoid": _sigmoid,
}


def activation_name(torch_path: str) -> str | None:
    """Our name for an activation ('torch.nn.modules.activation.Tanh' -> 'tanh'), or None when unsupported."""
    name = torch_path.rsplit(".", 1)[-1].lower()
    return name if name in ACTIVATIONS else None


@dataclass(frozen=True)
class DenseLayer:
    """y = activation(x @ weight.T + bias), as torch.nn.Linear followed by the named activation."""

    weight: np.ndarray  # float32 (out_features, in_features)
    bias: np.ndarray | None  # float32 (out_features,)
    activation: str

    @property
    def out_features(self) -> int:
        """Width of the layer's output."""
        return int(self.weight.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply the layer to (n, in_features) float32 rows."""
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return np.asarray(ACTIVATIONS[self.activation](y), dtype=np.float32)


def save_dense(path: Path, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """Write one layer's weights as .npz (no pickle: the runtime reads them with numpy alone)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # np.savez would append .npz to a str path
        if bias is None:
            np.savez(fh, weight=np.asarray(weight, np.float32))
        else:
            np.savez(fh, weight=np.asarray(weight, np.float32), bias=np.asarray(bias, np.float32))


def load_dense(directory: Path, specs: Sequence[Mapping[str, Any]]) -> tuple[DenseLayer, ...]:
    """The Dense layers a manifest lists, read from the artifact directory and checked against it."""
    layers = []
    for i, spec in enumerate(specs):
        activation = str(spec.get("activation", ""))
        if activation not in ACTIVATIONS:
            raise ArtifactError(
                f"dense layer {i}: activation {activation!r} is not one of {sorted(ACTIVATIONS)}"
            )
        try:
            with np.load(directory / str(spec["file"]), allow_pickle=False) as data:
                weight = np.asarray(data["weight"], np.float32)
                bias = np.asarray(data["bias"], np.float32) if "bias" in data else None
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"dense layer {i}: cannot read {spec.get('file')!r}: {exc}") from exc
        expected = (int(spec["out_features"]), int(spec["in_features"]))
        if weight.shape != expected:
            raise ArtifactError(f"dense layer {i}: weight shape {weight.shape}, manifest says {expected}")
        layers.append(DenseLayer(weight, bias, activation))
    return tuple(layers)
