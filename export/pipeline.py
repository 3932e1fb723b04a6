"""Orchestrates an export: source checks -> ONNX -> fuse -> (quantize) -> parity -> artifact."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from embedder.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    POOLING_FILE,
    PROBE_FILE,
    TOKENIZER_FILE,
    Artifact,
    Manifest,
    compute_fingerprint,
)
from embedder.config import EncoderConfig, SessionConfig
from embedder.encoder import Encoder
from embedder.errors import ExportError
from embedder.probe import PROBE_TEXTS
from embedder.tokenize import TextTokenizer
from export.onnx_export import OPSET, export_onnx, load_tokenizer
from export.optimize import optimize
from export.quantize import CALIBRATION_TEXTS, Int8Scheme, calibrate, quantize
from export.source import SourceModel, hash_weights, read_source
from export.texts import PARITY_TEXTS
from export.verify import (
    BATCH_MIN_COSINE,
    PARITY_MIN_COSINE,
    batch_independence,
    parity_figures,
    reference_vectors,
)

PRECISIONS = ("fp32", "fp16", "int8")
_INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class ExportRequest:
    """What `python -m export` was asked to do."""

    model_dir: Path
    out_dir: Path
    precision: str = "fp32"
    pooling_in_graph: bool = False
    overwrite: bool = False
    min_cosine: float | None = None  # override of the precision's parity floor (tests only)


def _write_tokenizer(source: SourceModel, tmp: Path) -> tuple[list[str], int]:
    hf_tok = load_tokenizer(source)
    backend = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    # The artifact's tokenizer has no built-in padding/truncation: max length comes from the manifest.
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(tmp / TOKENIZER_FILE))
    names = [n for n in _INPUT_ORDER if n in hf_tok.model_input_names]
    pad_id = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else 0
    return names, int(pad_id)


def _encoder_for(tmp: Path, manifest: Manifest, probe: np.ndarray) -> Encoder:
    # The stored probe and parity figures are the reference every runtime is compared with: always
    # onnxruntime at the artifact's own precision, whatever auto would pick on this machine.
    config = EncoderConfig(session=SessionConfig(backend="onnxruntime"), verify_fingerprint=False)
    return Encoder(Artifact(path=tmp, manifest=manifest, probe_vectors=probe), config)


def run_export(req: ExportRequest, log: Any = print) -> Manifest:
    """Export and verify; the artifact appears at out_dir only when complete and within tolerance."""
    if req.precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {PRECISIONS}, got {req.precision!r}")
    started = time.perf_counter()
    source = read_source(req.model_dir)
    out = req.out_dir
    if out.exists() and not req.overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = _build(req, source, tmp, log)
        manifest = dataclasses.replace(
            manifest, parity={**manifest.parity, "export_seconds": round(time.perf_counter() - started, 1)}
        )
        (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)  # atomic on one filesystem: no half-written artifact is ever visible
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(req: ExportRequest, source: SourceModel, tmp: Path, log: Any) -> Manifest:
    input_names, pad_id = _write_tokenizer(source, tmp)
    (tmp / "1_Pooling").mkdir()
    (tmp / POOLING_FILE).write_text(json.dumps(source.pooling_config, indent=2), encoding="utf-8")
    log(
        f"{source.architecture} dim={source.hidden_size} pooling={source.pooling} "
        f"normalize={source.normalize} max_len={source.max_seq_length} -> {req.precision}"
    )
    raw = tmp / "raw.onnx"
    log("tracing the model with torch.onnx (dynamic batch and sequence axes)")
    output_name = export_onnx(source, raw, input_names, req.pooling_in_graph)
    fused = tmp / ("fp32.onnx" if req.precision == "int8" else MODEL_FILE)
    log("fusing the graph (onnxruntime transformer optimizer)")
    fused_ops = optimize(source, raw, fused, fp16=req.precision == "fp16")
    raw.unlink()
    manifest = Manifest(
        dimension=source.hidden_size,
        max_seq_length=source.max_seq_length,
        pooling=source.pooling,
        normalize=source.normalize,
        precision=req.precision,
        pooling_in_graph=req.pooling_in_graph,
        input_names=tuple(input_names),
        output_name=output_name,
        pad_token_id=pad_id,
        do_lower_case=source.do_lower_case,
        source_model=str(source.path),
        source_hash=hash_weights(source),
        architecture=source.architecture,
        opset=OPSET,
        onnxruntime_version=ort.__version__,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    log("computing reference vectors with sentence-transformers")
    reference = reference_vectors(source.path, PARITY_TEXTS)
    empty_probe = np.zeros((0, source.hidden_size), np.float32)

    if req.precision == "int8":
        manifest = _quantize_int8(tmp, fused, manifest, log)
    encoder = _encoder_for(tmp, manifest, empty_probe)
    log(f"parity against sentence-transformers on {len(PARITY_TEXTS)} texts")
    figures = parity_figures(reference, encoder.encode(list(PARITY_TEXTS)))
    figures["fused_ops"] = fused_ops
    floor = req.min_cosine if req.min_cosine is not None else PARITY_MIN_COSINE[req.precision]
    figures["min_cosine_required"] = floor
    if req.precision == "int8":
        # Static scales: a text's vector must not depend on its batch companions (padding included).
        figures.update(batch_independence(encoder, PARITY_TEXTS))
        figures["batch_min_cosine_required"] = BATCH_MIN_COSINE
        log(f"int8 alone vs in one padded batch: min cosine {figures['batch_min_cosine']:.7f}")
        if figures["batch_min_cosine"] < BATCH_MIN_COSINE:
            raise ExportError(
                f"int8 vectors depend on their batch: min cosine {figures['batch_min_cosine']:.6f} between a "
                f"text alone and in a batch (< {BATCH_MIN_COSINE}); no artifact written"
            )
    log(
        f"parity vs sentence-transformers: min cosine {figures['min_cosine']:.6f}, "
        f"max abs diff {figures['max_abs_diff']:.2e} over {figures['texts']} texts"
    )
    if figures["min_cosine"] < floor:
        raise ExportError(
            f"parity check failed: min cosine {figures['min_cosine']:.6f} < {floor} for {req.precision} "
            f"(worst text #{figures['worst_index']}: {PARITY_TEXTS[figures['worst_index']][:40]!r}); no artifact written"
        )
    np.save(tmp / PROBE_FILE, encoder.encode(list(PROBE_TEXTS)))
    manifest = dataclasses.replace(manifest, parity=figures)
    return dataclasses.replace(manifest, fingerprint=compute_fingerprint(tmp, manifest))


def _quantize_int8(tmp: Path, fused: Path, manifest: Manifest, log: Any) -> Manifest:
    """Calibrate on CALIBRATION_TEXTS (one text per run: no padding), write static int8 as the model."""
    tokenizer = TextTokenizer.from_artifact(
        Artifact(path=tmp, manifest=manifest, probe_vectors=np.zeros((0, manifest.dimension), np.float32))
    )
    tokenized = tokenizer.tokenize(list(CALIBRATION_TEXTS))

    def feeds() -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(CALIBRATION_TEXTS)):
            yield tokenized.batch(np.array([i])).feeds(manifest.input_names)

    log(f"calibrating int8 scales on {len(CALIBRATION_TEXTS)} texts")
    ranges = calibrate(fused, feeds())
    scheme = Int8Scheme()
    done = quantize(fused, tmp / MODEL_FILE, ranges, scheme)
    fused.unlink()
    log(
        f"static int8, {sum(done['quantized_nodes'].values())} nodes, calibrated on {len(CALIBRATION_TEXTS)} texts"
    )
    return dataclasses.replace(
        manifest,
        quantization={
            "method": "static int8: per-channel activation scales from calibration folded into per-column "
            "weight scales; fp32 for outlier channels of FFN-output inputs; 7-bit weights (exact u8s8 on AVX2)",
            "batch_independent": True,
            "calibration_texts": len(CALIBRATION_TEXTS),
            "calibration_tokens": next(iter(ranges.values())).tokens if ranges else 0,
            **scheme.describe(),
            **done,
        },
    )
