"""The precisions an export writes, apart from the pipeline so `python -m export --help` loads no torch."""

from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8")
