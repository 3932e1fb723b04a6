"""The artifact the gpu-marked tests run on: QM_GPU_ARTIFACT (set by `make gpu-check`, so no
export and no torch are needed on the GPU machine), else MiniLM exported once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gpu_artifact(request: pytest.FixtureRequest) -> Path:
    given = os.environ.get("QM_GPU_ARTIFACT")
    if given:
        return Path(given)
    return Path(request.getfixturevalue("minilm_artifact"))
