"""bench.memory's arithmetic (starts nothing): the workloads' shapes, variants and the growth check."""

from __future__ import annotations

from bench.memory import ENGINES, GOAL_GROWTH, growth, variants
from bench.memory_load import reachable_shapes, request_shapes
from embedder.config import BatchConfig


def test_requests_span_the_issue_shapes() -> None:
    reqs = request_shapes(2000, seed=0)
    sizes = [len(r) for r in reqs]
    lengths = [int(x) for r in reqs for x in r]
    assert min(sizes) == 1 and max(sizes) == 64
    assert min(lengths) == 1 and max(lengths) == 512
    assert request_shapes(5, seed=3)[2].tolist() == request_shapes(5, seed=3)[2].tolist()  # seeded


def test_reachable_shapes_are_what_the_planner_can_cut() -> None:
    shapes = reachable_shapes(256, BatchConfig())
    assert all(b * w <= 1024 or b == 1 for b, w in shapes)
    assert (16, 64) in shapes and (17, 1) not in shapes and (5, 256) not in shapes
    assert len(shapes) == len(set(shapes)) == 2348


def test_every_engine_runs_at_every_padding() -> None:
    runs = variants(["auto", "openvino-bf16"], [0, 32])
    assert list(runs) == ["auto/pad0", "auto/pad32", "openvino-bf16/pad0", "openvino-bf16/pad32"]
    assert runs["openvino-bf16/pad32"] == {**ENGINES["openvino-bf16"], "pad_to_multiple": 32}


def test_growth_is_measured_from_the_reference_sample() -> None:
    samples = [(0, 100.0), (10, 200.0), (50, 210.0), (100, 215.0)]
    g = growth(samples, 10)
    assert (g["rss_mb_reference"], g["rss_mb_final"], g["growth"], g["goal_met"]) == (
        200.0,
        215.0,
        0.075,
        True,
    )
    assert not growth([(0, 100.0), (10, 200.0), (100, 200.0 * (1 + GOAL_GROWTH) + 1)], 10)["goal_met"]
