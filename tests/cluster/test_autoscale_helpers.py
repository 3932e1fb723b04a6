"""The pieces of bench/autoscale.py that decide what the demo reports, checked without Ray."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.autoscale import ServeSettings, knee, make_corpus, read_ids
from testkit.ray_cluster import node_kind


def test_knee_is_the_smallest_concurrency_near_peak_throughput() -> None:
    levels = {1: {"rps": 6.0}, 2: {"rps": 6.5}, 4: {"rps": 7.0}, 8: {"rps": 7.1}}
    assert knee(levels) == 2  # 6.5 >= 0.9 * 7.1; 6.0 is not


def test_knee_of_a_batching_replica_is_higher() -> None:
    levels = {1: {"rps": 5.0}, 2: {"rps": 9.0}, 4: {"rps": 16.0}, 8: {"rps": 17.0}}
    assert knee(levels) == 4


@pytest.mark.parametrize(
    ("resources", "kind"),
    [
        ({"CPU": 0.0, "node:__internal_head__": 1.0}, "head"),
        ({"CPU": 2.0, "cpu_worker": 2.0}, "cpu"),
        ({"CPU": 1.0, "GPU": 1.0, "gpu_worker": 1.0}, "gpu"),
    ],
)
def test_nodes_are_counted_by_their_node_type_resource(resources: dict[str, float], kind: str) -> None:
    assert node_kind({"Resources": resources, "Alive": True}) == kind


def test_corpus_is_split_into_files_and_every_id_reads_back_once(tmp_path: Path) -> None:
    ids = make_corpus(tmp_path / "corpus", rows=1000, files=12)
    files = sorted((tmp_path / "corpus").glob("*.parquet"))
    assert len(files) == 12  # one file is one block: the pool needs several to grow
    assert sum(pq.read_metadata(f).num_rows for f in files) == 1000
    assert sorted(read_ids(tmp_path / "corpus")) == ids == list(range(1000))


def test_autoscaling_config_is_accepted_by_serve() -> None:
    from ray.serve.config import AutoscalingConfig

    settings = ServeSettings()
    config = AutoscalingConfig.model_validate(settings.autoscaling_config(2.0))
    assert config.min_replicas <= config.max_replicas
    assert config.upscale_delay_s >= config.look_back_period_s
