"""The exported model directory: manifest, files, fingerprint.

Everything downstream reads dims, pooling and max length from here; nothing guesses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import storage
from embedder.errors import ArtifactError, ModelMismatch
from embedder.prompts import Prompts
from storage.cache import fetch_dir, safe_key

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
POOLING_FILE = "1_Pooling/config.json"
PROBE_FILE = "probe_vectors.npy"
MANIFEST_FILE = "manifest.json"
# Files whose bytes define the artifact; any edit changes the fingerprint.
FINGERPRINTED_FILES = (MODEL_FILE, TOKENIZER_FILE, POOLING_FILE, PROBE_FILE)


@dataclass(frozen=True)
class Manifest:
    """What an artifact says about itself (manifest.json)."""

    dimension: int
    max_seq_length: int
    pooling: str
    normalize: bool
    precision: str
    pooling_in_graph: bool
    input_names: tuple[str, ...]
    output_name: str
    pad_token_id: int
    do_lower_case: bool = False
    source_model: str = ""
    source_hash: str = ""
    architecture: str = ""
    opset: int = 17
    onnxruntime_version: str = ""
    parity: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    format_version: int = FORMAT_VERSION
    created_at: str = ""
    # Width of the backbone's token vectors; differs from `dimension` when Dense layers follow
    # pooling (0 in artifacts written before Dense support: the same as `dimension`).
    hidden_size: int = 0
    # Dense layers after pooling, in order: {file, in_features, out_features, bias, activation}.
    dense: tuple[dict[str, Any], ...] = ()
    # The model's prompts (name -> text) and default prompt name, as sentence-transformers keeps them.
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    # The source model's family facts, for /info and the docs (how its tokenizer padded, and why
    # padding right here gives the same vectors: see docs/models.md).
    source_padding_side: str = "right"
    graph: str = ""  # "fused" (onnxruntime optimizer) or "plain", with the reason in parity

    def to_json(self) -> str:
        """Serialise for manifest.json."""
        data = dataclasses.asdict(self)
        data["input_names"] = list(self.input_names)
        data["dense"] = [dict(d) for d in self.dense]
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse manifest.json content, rejecting unknown format versions."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"manifest format_version {version!r} is not supported (expected {FORMAT_VERSION})"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["input_names"] = tuple(kwargs.get("input_names", ()))
        kwargs["dense"] = tuple(dict(d) for d in kwargs.get("dense", ()))
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ArtifactError(f"manifest.json is incomplete: {exc}") from exc

    def prompt_set(self) -> Prompts:
        """The model's prompts with sentence-transformers' rules for choosing one."""
        return Prompts(self.prompts, self.default_prompt_name)

    @property
    def backbone_width(self) -> int:
        """Width of the graph's per-token vectors (the pooled width before any Dense layer)."""
        return self.hidden_size or self.dimension

    @property
    def files(self) -> tuple[str, ...]:
        """Every file whose bytes define the artifact (the fixed ones plus each Dense layer's)."""
        return FINGERPRINTED_FILES + tuple(str(d["file"]) for d in self.dense)

    def identity(self) -> dict[str, Any]:
        """The fields that change what vectors mean; hashed into the fingerprint."""
        extra: dict[str, Any] = {}
        # Only when present, so artifacts exported before prompts and Dense support keep their fingerprint.
        if self.dense:
            extra["dense"] = [dict(d) for d in self.dense]
        if self.prompts:
            extra["prompts"] = dict(sorted(self.prompts.items()))
            extra["default_prompt_name"] = self.default_prompt_name
        return {
            **extra,
            "dimension": self.dimension,
            "max_seq_length": self.max_seq_length,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "precision": self.precision,
            "pooling_in_graph": self.pooling_in_graph,
            "input_names": list(self.input_names),
            "output_name": self.output_name,
            "do_lower_case": self.do_lower_case,
        }


def compute_fingerprint(directory: Path, manifest: Manifest) -> str:
    """Hash of the defining files plus the identity fields: 'sha256:' + 16 hex digits."""
    digest = hashlib.sha256()
    for name in manifest.files:
        path = directory / name
        digest.update(name.encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    digest.update(json.dumps(manifest.identity(), sort_keys=True).encode())
    return "sha256:" + digest.hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    """A loaded, file-verified artifact directory."""

    path: Path
    manifest: Manifest
    probe_vectors: np.ndarray
    # Where the artifact was loaded from when that is a URI (path is then the node-local cache).
    origin: str = ""

    @property
    def model_path(self) -> Path:
        """Path of the ONNX graph."""
        return self.path / MODEL_FILE

    @property
    def tokenizer_path(self) -> Path:
        """Path of the tokenizers JSON."""
        return self.path / TOKENIZER_FILE

    @property
    def fingerprint(self) -> str:
        """The manifest's fingerprint (verified against the files at load)."""
        return self.manifest.fingerprint

    @classmethod
    def load(cls, path: str | Path, verify_files: bool = True) -> Artifact:
        """Read and check an artifact directory or URI; raise ArtifactError / ModelMismatch with the reason.

        A URI (s3://, gs://, ...) is fetched into the node-local cache keyed by its fingerprint and
        verified there (a corrupt or half-written cached copy is fetched again).
        """
        if storage.is_uri(path) and storage.is_remote(str(path)):
            loaded = cls._load_dir(fetch_artifact(str(path)), verify_files=True)
            return dataclasses.replace(loaded, origin=storage.resolve(path).uri)
        return cls._load_dir(Path(storage.resolve(path).path), verify_files)

    @classmethod
    def _load_dir(cls, directory: Path, verify_files: bool) -> Artifact:
        if not directory.is_dir():
            raise ArtifactError(f"artifact directory {directory} does not exist")
        missing = [n for n in (*FINGERPRINTED_FILES, MANIFEST_FILE) if not (directory / n).is_file()]
        if missing:
            raise ArtifactError(f"artifact {directory} is incomplete: missing {', '.join(missing)}")
        try:
            data = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"cannot read {directory / MANIFEST_FILE}: {exc}") from exc
        manifest = Manifest.from_dict(data)
        missing = [n for n in manifest.files if not (directory / n).is_file()]
        if missing:
            raise ArtifactError(f"artifact {directory} is incomplete: missing {', '.join(missing)}")
        if verify_files:
            actual = compute_fingerprint(directory, manifest)
            if actual != manifest.fingerprint:
                raise ModelMismatch(
                    f"artifact {directory}: files hash to {actual} but the manifest says "
                    f"{manifest.fingerprint}; a file was edited or corrupted. Re-export the model."
                )
        probe = np.load(directory / PROBE_FILE)
        return cls(path=directory, manifest=manifest, probe_vectors=probe)


def fetch_artifact(uri: str) -> Path:
    """A verified local copy of a remote artifact, cached under artifacts/<fingerprint>."""
    loc = storage.resolve(uri)
    try:
        data = storage.read_json(loc.child(MANIFEST_FILE))
    except storage.StorageError as exc:
        raise ArtifactError(f"artifact {uri}: cannot read {MANIFEST_FILE} ({exc})") from None
    expected = str(data.get("fingerprint", ""))
    if not expected:
        raise ArtifactError(f"artifact {uri}: {MANIFEST_FILE} has no fingerprint")

    def verify(directory: Path) -> None:
        # Hashes every defining file: a truncated or corrupted cached copy fails here.
        loaded = Artifact._load_dir(directory, verify_files=True)
        if loaded.fingerprint != expected:
            raise ModelMismatch(f"{directory} holds {loaded.fingerprint}, expected {expected}")

    return fetch_dir(loc, f"artifacts/{safe_key(expected)}", verify, log=lambda _m: None)
