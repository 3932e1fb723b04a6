"""Ray-free serving helpers: compact hand-offs reproduce the encoder's vectors exactly."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from embedder import Encoder
from embedder.config import BatchConfig
from embedder.errors import EmptyInput, InputTooLong, TooManyInputs
from embedder.serving import (
    HiddenPack,
    as_text_list,
    check_lengths,
    encode_base64,
    pack_tokens,
    pool_pack,
    run_merged,
    split_pack,
)

TEXTS = ["short", "a somewhat longer question about refunds and delivery", "mid length text here", "x"]


@pytest.fixture(scope="module")
def encoder(tiny_artifact: Path) -> Encoder:
    return Encoder.load(tiny_artifact)


def test_merged_requests_give_each_request_the_encoders_vectors(encoder: Encoder) -> None:
    # Three "requests" merged into one backbone pass with a budget small enough to need several calls.
    requests = [TEXTS[:1], TEXTS[1:3], TEXTS[3:]]
    packs = [pack_tokens(encoder.tokenizer.tokenize(r)) for r in requests]
    outs, calls = run_merged(
        packs, 0, BatchConfig(batch_tokens=24, max_batch_size=2), encoder.backbone.run, False
    )
    assert len(calls) > 1 and all(n <= 2 for n, _ in calls)
    for texts, pack, out in zip(requests, packs, outs, strict=True):
        vectors = pool_pack(encoder.pooler, HiddenPack(out, pack.lengths), None, None)
        assert np.abs(vectors - encoder.encode(texts)).max() <= 1e-5


def test_split_pack_respects_budget_and_keeps_order(encoder: Encoder) -> None:
    pack = pack_tokens(encoder.tokenizer.tokenize(TEXTS))
    pieces = split_pack(pack, 12)
    assert all(p.tokens <= 12 or p.size == 1 for p in pieces)
    assert np.array_equal(np.concatenate([p.ids for p in pieces]), pack.ids)
    assert sum(p.size for p in pieces) == pack.size


def test_request_checks_name_the_field() -> None:
    assert as_text_list("one", "input", 4) == ["one"]
    with pytest.raises(TooManyInputs) as many:
        as_text_list(["a"] * 5, "input", 4)
    assert many.value.field == "input"
    with pytest.raises(EmptyInput) as empty:
        as_text_list(["a", " "], "questions", 4)
    assert empty.value.field == "questions[1]"
    with pytest.raises(InputTooLong) as long:
        check_lengths(np.array([3, 300]), 256, truncate=False, field="inputs")
    assert long.value.token_count == 300 and long.value.field == "inputs[1]"
    check_lengths(np.array([300]), 256, truncate=True, field="inputs")  # truncation allowed: no error


def test_base64_is_openai_little_endian_float32() -> None:
    v = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    assert np.array_equal(np.frombuffer(base64.b64decode(encode_base64(v)), dtype="<f4"), v)


def test_micro_batcher_merges_while_busy_and_isolates_failures() -> None:
    import asyncio

    from embedder.serving import MicroBatcher

    seen: list[list[int]] = []

    async def run(jobs: list[int]) -> list[object]:
        seen.append(jobs)
        await asyncio.sleep(0.01)  # a pass through the stages
        return [ValueError(f"bad {j}") if j == 7 else j * 10 for j in jobs]

    async def main() -> list[object]:
        batcher = MicroBatcher(run, max_parallel=1, max_items=8)
        calls = [batcher.submit(j) for j in range(20)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    assert [r for r in results if not isinstance(r, Exception)] == [j * 10 for j in range(20) if j != 7]
    assert isinstance(results[7], ValueError)
    assert seen[0] == [0]  # idle: the first job runs at once, no waiting for company
    assert max(len(b) for b in seen) == 8 and len(seen) <= 4  # later ones merged up to max_items


def test_serve_config_in_git_is_a_valid_deploy_config() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from deployments.app import DEFAULTS, AppArgs

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve_config.yaml").read_text())
    app = ServeDeploySchema.model_validate(raw).applications[0]
    args = AppArgs.model_validate(app.args)
    assert app.import_path == "deployments.app:build_app" and args.topology == "graph"
    assert set(args.deployments) <= set(DEFAULTS)
    graph = ("Ingress", "Tokenizer", "Backbone", "Pooling", "Searcher")
    # The whole default graph must fit one 2-CPU node.
    assert sum(DEFAULTS[d]["ray_actor_options"]["num_cpus"] for d in graph) <= 2.0
