"""What bf16 vectors do to matching: an index built from fp32 vectors queried with bf16 vectors and back.

    python -m bench.precision_retrieval [--stored 3000] [--queries 1000]

Stored questions and held-out paraphrase queries come from bench.corpus_gen (different seeds:
same intents, other wordings). Each side is embedded with onnxruntime fp32 and with OpenVINO bf16
(the fp32 artifact's weights). Reported for every (index precision, query precision) pair: top-1
agreement with the all-fp32 answer, top-1 accuracy on the labelled group, recall@10 of an IVF
index against exact all-fp32 search, and the largest score difference. Accuracy, not timing:
the figures do not depend on machine load. Writes bench/results/precision_retrieval.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from bench.corpus_gen import generate
from bench.harness import Envelope, write_report
from embedder import Encoder


def top_k(index_vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (scores, ids)."""
    flat = faiss.IndexFlatIP(index_vectors.shape[1])
    flat.add(index_vectors)
    scores, ids = flat.search(queries, k)
    return scores, ids


def ivf_search(index_vectors: np.ndarray, queries: np.ndarray, k: int, nlist: int = 64) -> np.ndarray:
    """ids from an IVF-Flat index (trained and filled with `index_vectors`), nprobe 8."""
    quantizer = faiss.IndexFlatIP(index_vectors.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, index_vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(index_vectors)
    ivf.add(index_vectors)
    ivf.nprobe = 8
    return ivf.search(queries, k)[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Embed both sides in both precisions, compare, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", default="artifacts/minilm-fp32")
    p.add_argument("--stored", type=int, default=3000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--out", default="bench/results/precision_retrieval.json")
    args = p.parse_args(argv)
    envelope = Envelope("python -m bench.precision_retrieval " + " ".join(argv or []))
    stored, queries = generate(args.stored, seed=0), generate(args.queries, seed=7)
    encoders = {
        "fp32": Encoder.load(args.artifact, backend="onnxruntime", precision="fp32"),
        "bf16": Encoder.load(args.artifact, backend="openvino", precision="bf16"),
    }
    vec = {
        (side, prec): enc.encode(table.column("question").to_pylist())
        for prec, enc in encoders.items()
        for side, table in (("stored", stored), ("queries", queries))
    }
    stored_group = np.asarray(stored.column("group").to_pylist())
    query_group = np.asarray(queries.column("group").to_pylist())
    ref_scores, ref_ids = top_k(vec["stored", "fp32"], vec["queries", "fp32"], 10)
    pairs: dict[str, Any] = {}
    for index_prec in ("fp32", "bf16"):
        for query_prec in ("fp32", "bf16"):
            scores, ids = top_k(vec["stored", index_prec], vec["queries", query_prec], 10)
            ivf_ids = ivf_search(vec["stored", index_prec], vec["queries", query_prec], 10)
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ivf_ids, ref_ids, strict=True)])
            pairs[f"index_{index_prec}_query_{query_prec}"] = {
                "top1_agreement_with_fp32": round(float(np.mean(ids[:, 0] == ref_ids[:, 0])), 4),
                "top1_group_accuracy": round(float(np.mean(stored_group[ids[:, 0]] == query_group)), 4),
                "ivf_recall_at_10_vs_exact_fp32": round(float(recall), 4),
                "max_top1_score_diff": round(float(np.abs(scores[:, 0] - ref_scores[:, 0]).max()), 6),
            }
            print(index_prec, query_prec, pairs[f"index_{index_prec}_query_{query_prec}"])
    cos = np.einsum("ij,ij->i", vec["queries", "fp32"], vec["queries", "bf16"])
    report = {
        "benchmark": "precision_retrieval",
        "stored": args.stored,
        "queries": args.queries,
        "runtimes": {k: e.runtime.as_dict() for k, e in encoders.items()},
        "query_vector_cosine_fp32_vs_bf16": {
            "min": round(float(cos.min()), 6),
            "mean": round(float(cos.mean()), 6),
        },
        "pairs": pairs,
        **envelope.finish(own_load=0.0),
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
