"""The suite's tiny models and their fp32 artifacts, from the build cache (testkit.build_cache):
built with torch and exported once per change of what determines them, then copied in.

What keys them: these parameters, the code that builds them (export/ and embedder/, which writes
the manifest and the probe vectors, testkit's tiny-model builder, this module and the cache),
and the versions of the packages an export runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from testkit.build_cache import REPO, cache_key, cached_dir

_SOURCES = (
    REPO / "export",
    REPO / "embedder",
    REPO / "testkit" / "tiny_model.py",
    REPO / "testkit" / "tiny_cache.py",
    REPO / "testkit" / "build_cache.py",
)
_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "sentence-transformers",
    "onnx",
    "onnxruntime",
    "numpy",
)


def _key(kind: str, **params: object) -> str:
    return cache_key({"kind": kind, **params}, _SOURCES, _PACKAGES)


def tiny_model(dest: Path, seed: int = 0, prompted: bool = False) -> Path:
    """A copy at dest of the tiny sentence-transformers model (testkit.tiny_model's defaults and
    `seed`; `prompted`: with e5-style prompts, seed 0)."""

    def build(directory: Path) -> None:
        from testkit.tiny_model import make_prompted_st_model, make_tiny_st_model

        if prompted:
            make_prompted_st_model(directory)
        else:
            make_tiny_st_model(directory, seed=seed)

    return cached_dir("tiny-model", _key("model", seed=seed, prompted=prompted), build, dest)


def tiny_artifact(dest: Path, seed: int = 0, prompted: bool = False) -> Path:
    """A copy at dest of tiny_model(seed, prompted) exported to an fp32 artifact; the copy must load
    as an artifact (manifest read, files hashed against the fingerprint) or it is rebuilt."""

    def build(directory: Path) -> None:
        from testkit.tiny_model import export_tiny

        with tempfile.TemporaryDirectory() as scratch:  # the model is the export's input only
            export_tiny(tiny_model(Path(scratch) / "model", seed=seed, prompted=prompted), directory)

    def check(copy: Path) -> None:
        from embedder.artifact import Artifact

        Artifact.load(copy)

    return cached_dir("tiny-artifact", _key("artifact", seed=seed, prompted=prompted), build, dest, check)
