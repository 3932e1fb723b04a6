"""Ray-free serving pieces: compact hand-offs and the fair model scheduler reproduce the encoder exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from embedder import Encoder
from embedder.batches import HiddenStates, TokenBatch
from embedder.config import BatchConfig
from embedder.handoff import HiddenPack, pack_tokens, pool_pack, run_merged, split_pack
from engine.backend import EmbedOptions
from engine.scheduler import ModelScheduler, SchedulerConfig

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


def test_in_process_stages_give_the_encoders_vectors_under_concurrency(
    tiny_artifact: Path, encoder: Encoder
) -> None:
    from engine.inprocess import InProcessBackend

    backend = InProcessBackend(
        str(tiny_artifact), scheduler=SchedulerConfig(pass_tokens=40, batch=BatchConfig(24, 3))
    )
    requests = [TEXTS, TEXTS[1:2], [TEXTS[3]] * 5, TEXTS[::-1]]

    async def main() -> list[np.ndarray]:
        packs = [await backend.tokenize(r) for r in requests]
        opts = [EmbedOptions(), EmbedOptions(), EmbedOptions(dimensions=8), EmbedOptions(normalize=False)]
        return await asyncio.gather(*(backend.encode(p, o) for p, o in zip(packs, opts, strict=True)))

    got = asyncio.run(main())
    assert np.abs(got[0] - encoder.encode(TEXTS)).max() <= 1e-5
    assert np.abs(got[1] - encoder.encode(TEXTS[1:2])).max() <= 1e-5
    assert np.abs(got[2] - encoder.encode([TEXTS[3]] * 5, dimensions=8)).max() <= 1e-5
    assert np.abs(got[3] - encoder.encode(TEXTS[::-1], normalize=False)).max() <= 1e-4
    assert backend.scheduler.passes < 4 + 4  # requests shared passes


class CountingModel:
    """Identity-ish numpy model that records which texts (first token id) each call saw."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, batch: TokenBatch) -> HiddenStates:
        self.calls.append(batch.input_ids[:, 0].tolist())
        hidden = np.repeat(batch.input_ids[:, :, None].astype(np.float32), 2, axis=2)
        return HiddenStates(hidden, batch.attention_mask, batch.positions)


def _pack(first_ids: list[int], length: int) -> object:
    from embedder.handoff import TokenPack

    ids = np.concatenate([np.full(length, i, np.int32) for i in first_ids])
    lengths = np.full(len(first_ids), length, np.int32)
    return TokenPack(ids, None, lengths, lengths.astype(np.int64))


def test_scheduler_serves_a_small_request_within_one_pass_of_a_large_one() -> None:
    model = CountingModel()
    sched = ModelScheduler(
        model, 0, pooled=False, config=SchedulerConfig(pass_tokens=40, batch=BatchConfig(40, 4))
    )
    big = _pack(list(range(100, 140)), 10)  # 40 texts, 400 tokens: ten passes
    small = _pack([7], 10)

    async def main() -> tuple[int, int]:
        big_task = asyncio.create_task(sched.submit(big))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the big one is queued and its first pass starts
        out = await sched.submit(small)  # type: ignore[arg-type]
        passes_for_small = sched.passes
        assert np.array_equal(out[:, 0], np.full(10, 7.0))
        await big_task
        return passes_for_small, sched.passes

    for_small, total = asyncio.run(main())
    assert for_small <= 2 and total >= 10  # the small one did not wait behind the big one
    flat = [t for call in model.calls for t in call]
    assert sorted(flat) == sorted([*range(100, 140), 7])  # every text ran exactly once


def test_scheduler_drops_a_cancelled_request() -> None:
    model = CountingModel()
    sched = ModelScheduler(
        model, 0, pooled=False, config=SchedulerConfig(pass_tokens=20, batch=BatchConfig(20, 2))
    )
    big = _pack(list(range(100, 140)), 10)

    async def main() -> None:
        task = asyncio.create_task(sched.submit(big))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        while sched.passes < 2:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(10):  # a lost wake-up must fail here, not hang the suite
            assert (await sched.submit(_pack([5], 10)))[0, 0] == 5.0  # type: ignore[arg-type]

    asyncio.run(main())
    ran = [t for call in model.calls for t in call]
    assert len(ran) < 20 and 5 in ran and sched.queued_tokens == 0


def test_scheduler_serves_a_request_submitted_as_its_worker_stops() -> None:
    # A caller that submits again as soon as its first answer is back reaches the scheduler
    # in the same loop iteration in which the worker finds the queue empty and stops. That
    # request must start a new worker, not wait for one that has already left (it hung CI).
    sched = ModelScheduler(CountingModel(), 0, pooled=False)

    async def main() -> list[float]:
        firsts = []
        for i in range(5):
            # asyncio.timeout, not wait_for: wait_for's extra task would hide the race.
            async with asyncio.timeout(10):
                out = await sched.submit(_pack([i + 1], 4))  # type: ignore[arg-type]
            firsts.append(float(out[0, 0]))
        return firsts

    assert asyncio.run(main()) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_serve_config_in_git_is_a_valid_deploy_config() -> None:
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from deployments.app import DEFAULTS, AppArgs, resolve_topology

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve_config.yaml").read_text())
    app = ServeDeploySchema.model_validate(raw).applications[0]
    args = AppArgs.model_validate(app.args)
    assert app.import_path == "deployments.app:build_app" and resolve_topology(args) == "inline"
    assert resolve_topology(args.model_copy(update={"num_gpus": 1.0})) == "fused"
    assert (
        args.session.get("threads", 0) > 0 and args.session.get("allow_spinning") is False
    )  # never 0 threads
    assert set(args.deployments) <= set(DEFAULTS)
    graph = ("Ingress", "Tokenizer", "Backbone", "Pooling", "Searcher")
    # The whole staged graph must fit one 2-CPU node.
    assert sum(DEFAULTS[d]["ray_actor_options"]["num_cpus"] for d in graph) <= 2.0


def test_inline_on_cpu_gets_its_measured_layout_unless_told_otherwise() -> None:
    from deployments.app import (
        INLINE_CPU_BATCHING,
        INLINE_CPU_SESSION,
        AppArgs,
        inline_options,
        with_gpu_profile,
    )

    opts, inline = inline_options(AppArgs(artifact="a"), None)
    assert inline["session"] == INLINE_CPU_SESSION and inline["batching"] == INLINE_CPU_BATCHING
    workers, threads = INLINE_CPU_BATCHING["workers"], INLINE_CPU_SESSION["threads"]
    assert opts["ray_actor_options"]["num_cpus"] >= workers * threads  # reserves the cores it uses
    own = AppArgs(artifact="a", session={"threads": 2}, batching={"workers": 1})
    assert inline_options(own, None)[1]["session"] == {"threads": 2}
    assert inline_options(own, None)[1]["batching"] == {"workers": 1}
    gpu_opts, gpu_inline = inline_options(with_gpu_profile(AppArgs(artifact="a", num_gpus=1)), None)
    assert gpu_inline["session"] == {"providers": ["cuda"]} and gpu_opts["ray_actor_options"]["num_gpus"] == 1


def test_a_reserved_gpu_means_cuda_and_gpu_batching_and_a_cpu_session_there_is_refused() -> None:
    from deployments.app import AppArgs, with_gpu_profile
    from embedder.config import GPU_BATCH_TOKENS

    gpu = with_gpu_profile(AppArgs(artifact="a", num_gpus=1))
    assert gpu.session["providers"] == ["cuda"]
    assert gpu.batching["batch"]["batch_tokens"] == GPU_BATCH_TOKENS  # not the CPU's 1,024
    with pytest.raises(ValueError, match=r"num_gpus=1.0 reserves a GPU, but session.providers=\['cpu'\]"):
        with_gpu_profile(AppArgs(artifact="a", num_gpus=1, session={"providers": ["cpu"]}))
    # Rehearsing on fake GPU nodes is allowed only when asked for by name.
    stand_in = AppArgs(artifact="a", num_gpus=1, session={"providers": ["cpu"]}, cpu_stand_in_for_gpu=True)
    assert with_gpu_profile(stand_in).session["providers"] == ["cpu"]
    # Batching the user set is kept.
    assert with_gpu_profile(AppArgs(artifact="a", num_gpus=1, batching={"workers": 2})).batching == {
        "workers": 2
    }
