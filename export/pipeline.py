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
from typing import TYPE_CHECKING, Any

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
from embedder.encoder import Encoder, embed_probe
from embedder.head import save_dense
from embedder.tokenize import TextTokenizer
from export.errors import ExportError
from export.precisions import PRECISIONS
from export.quantize import CALIBRATION_TEXTS, Int8Scheme, calibrate, quantize
from export.source import SourceModel, hash_weights, read_source
from export.texts import PARITY_TEXTS, PROMPT_PARITY_TEXTS
from export.verify import (
    BATCH_MIN_COSINE,
    PARITY_MIN_COSINE,
    batch_independence,
    parity_figures,
    prompted_reference_vectors,
)

# torch and transformers (export.onnx_export) and the onnxruntime optimizer (export.optimize, with
# sympy) are 4 s of imports: they load once the source checks passed, so a refused model
# directory fails at once (and tests of refusals need no torch).
if TYPE_CHECKING:
    from export.onnx_export import TorchDense

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
    from export.onnx_export import load_tokenizer

    hf_tok = load_tokenizer(source)
    backend = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    # The artifact's tokenizer has no built-in padding/truncation: max length comes from the manifest.
    # Its post-processor (CLS/SEP, or the EOS a decoder embedder appends) stays: it is the truth,
    # as sentence-transformers uses it.
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(tmp / TOKENIZER_FILE))
    names = [n for n in _INPUT_ORDER if n in hf_tok.model_input_names]
    # Padding is masked out, so its id only has to be a valid one; decoders often have no pad token.
    pad_id = next((i for i in (hf_tok.pad_token_id, hf_tok.eos_token_id) if i is not None), 0)
    return names, int(pad_id)


def _write_dense(source: SourceModel, tmp: Path) -> tuple[tuple[dict[str, Any], ...], tuple[TorchDense, ...]]:
    """Each Dense module's weights as head/dense_<i>.npz, its manifest entry, and the torch copy."""
    from export.onnx_export import dense_weights

    entries, layers = [], []
    for i, spec in enumerate(source.dense):
        weight, bias = dense_weights(spec)
        name = f"head/dense_{i}.npz"
        save_dense(tmp / name, weight.numpy(), None if bias is None else bias.numpy())
        entries.append(
            {
                "file": name,
                "in_features": spec.in_features,
                "out_features": spec.out_features,
                "bias": spec.bias,
                "activation": spec.activation,
            }
        )
        layers.append((weight, bias, spec.activation))
    return tuple(entries), tuple(layers)


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
    from export.onnx_export import OPSET, export_onnx
    from export.optimize import optimize

    input_names, pad_id = _write_tokenizer(source, tmp)
    (tmp / "1_Pooling").mkdir()
    (tmp / POOLING_FILE).write_text(json.dumps(source.pooling_config, indent=2), encoding="utf-8")
    dense_entries, dense_layers = _write_dense(source, tmp)
    log(
        f"{source.architecture} ({source.save_format} layout) hidden={source.hidden_size} "
        f"pooling={source.pooling} dense={len(source.dense)} normalize={source.normalize} "
        f"dim={source.dimension} max_len={source.max_seq_length} prompts={sorted(source.prompts) or 'none'} "
        f"-> {req.precision}"
    )
    raw = tmp / "raw.onnx"
    log("tracing the model with torch.onnx (dynamic batch and sequence axes)")
    output_name = export_onnx(source, raw, input_names, req.pooling_in_graph, dense_layers)
    fused = tmp / ("fp32.onnx" if req.precision == "int8" else MODEL_FILE)
    fuse = source.family.fuse
    log(
        "fusing the graph (onnxruntime transformer optimizer)" if fuse else "plain graph (no fusion patterns)"
    )
    fused_ops = optimize(source, raw, fused, fp16=req.precision == "fp16", fuse=fuse)
    manifest = Manifest(
        dimension=source.dimension,
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
        hidden_size=source.hidden_size,
        dense=dense_entries,
        prompts=dict(source.prompts),
        default_prompt_name=source.default_prompt_name,
        source_padding_side=source.padding_side,
        graph="fused" if fuse else "plain",
    )
    log("computing reference vectors with sentence-transformers")
    reference, prompted = prompted_reference_vectors(
        source.path, PARITY_TEXTS, sorted(source.prompts), PROMPT_PARITY_TEXTS
    )
    if req.precision == "int8":
        manifest = _quantize_int8(tmp, fused, manifest, log)
    floor = req.min_cosine if req.min_cosine is not None else PARITY_MIN_COSINE[req.precision]
    encoder = _encoder_for(tmp, manifest, np.zeros((0, source.dimension), np.float32))
    figures = _parity(encoder, reference, prompted)
    if fuse and figures["min_cosine"] < floor and req.precision != "int8":
        # A fusion pattern that matched where it should not: the plain graph is the same model.
        log(f"fused graph parity {figures['min_cosine']:.6f} < {floor}; falling back to the plain graph")
        optimize(source, raw, fused, fp16=req.precision == "fp16", fuse=False)
        fused_ops, manifest = {}, dataclasses.replace(manifest, graph="plain")
        encoder = _encoder_for(tmp, manifest, np.zeros((0, source.dimension), np.float32))
        figures = {**_parity(encoder, reference, prompted), "fusion_fallback": True}
    raw.unlink()
    figures["fused_ops"] = fused_ops
    figures["min_cosine_required"] = floor
    # Every precision: a text's vector must not depend on its batch companions (padding included).
    figures.update(batch_independence(encoder, PARITY_TEXTS))
    figures["batch_min_cosine_required"] = BATCH_MIN_COSINE
    log(f"alone vs in one padded batch: min cosine {figures['batch_min_cosine']:.7f}")
    if figures["batch_min_cosine"] < BATCH_MIN_COSINE:
        raise ExportError(
            f"vectors depend on their batch: min cosine {figures['batch_min_cosine']:.6f} between a "
            f"text alone and in a batch (< {BATCH_MIN_COSINE}); no artifact written"
        )
    log(
        f"parity vs sentence-transformers: min cosine {figures['min_cosine']:.6f}, "
        f"max abs diff {figures['max_abs_diff']:.2e} over {figures['texts']} texts"
        + (f" (+{len(prompted)} prompts: min {figures['prompt_min_cosine']:.6f})" if prompted else "")
    )
    worst = min(figures["min_cosine"], figures.get("prompt_min_cosine", 1.0))
    if worst < floor:
        raise ExportError(
            f"parity check failed: min cosine {worst:.6f} < {floor} for {req.precision} on "
            f"{source.architecture} (worst text #{figures['worst_index']}: "
            f"{PARITY_TEXTS[figures['worst_index']][:40]!r}); no artifact written"
        )
    np.save(tmp / PROBE_FILE, embed_probe(encoder))
    manifest = dataclasses.replace(manifest, parity=figures)
    return dataclasses.replace(manifest, fingerprint=compute_fingerprint(tmp, manifest))


def _parity(encoder: Encoder, reference: np.ndarray, prompted: dict[str, np.ndarray]) -> dict[str, Any]:
    """Parity of the encoder's graph against sentence-transformers, without and with each prompt."""
    figures = parity_figures(reference, encoder.encode(list(PARITY_TEXTS)))
    per_prompt = {
        name: parity_figures(ref, encoder.encode(list(PROMPT_PARITY_TEXTS), prompt_name=name))["min_cosine"]
        for name, ref in prompted.items()
    }
    if per_prompt:
        figures["prompt_min_cosine"] = min(per_prompt.values())
        figures["prompt_min_cosine_by_name"] = per_prompt
    return figures


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
