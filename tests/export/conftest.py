"""Fixtures the export tests share (one int8 export per test session, not one per module)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_int8_artifact(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported to int8 once per test session (shared by the int8 test modules)."""
    from export.pipeline import ExportRequest, run_export  # here: only the slow int8 tests export

    out = tmp_path_factory.getbasetemp() / "minilm-int8" / "artifact"
    if not (out / "manifest.json").exists():
        run_export(ExportRequest(minilm_dir, out, precision="int8"), log=lambda *_: None)
    return out
