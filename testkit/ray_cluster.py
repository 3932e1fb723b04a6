"""Ray clusters for tests and benchmarks: a small local Ray, a multi-node cluster in one machine,
and Ray's fake multi-node autoscaler (a head started with `ray start`, every process killed by PID).

Run them inside `../shared/bin/loopback-only` on the shared machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from testkit.net import free_port

RAY_BIN = str(Path(sys.executable).with_name("ray"))
MiB = 2**20


@contextlib.contextmanager
def start_local_ray(
    num_cpus: int = 2,
    object_store_mb: int = 200,
    log_to_driver: bool = True,
    metrics_export_port: int | None = None,
) -> Iterator[str]:
    """A local single-node Ray with small explicit resources and no dashboard; yields its address.
    With `metrics_export_port`, the node's metrics agent serves Prometheus text there (/metrics),
    as `ray start --metrics-export-port` does on a cluster."""
    import ray

    extra: dict[str, Any] = {"_metrics_export_port": metrics_export_port} if metrics_export_port else {}
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_mb * MiB,
        include_dashboard=False,
        log_to_driver=log_to_driver,
        **extra,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


# The GCS declares a node dead after this many missed health checks (Ray's defaults: every 3 s,
# 5 misses, ~15 s). Tests that kill a node wait for that before the job reschedules; ~3 s here,
# with a 1 s answer time so a node slowed by the tests' own load on 2 cores is not taken for dead.
FAST_NODE_DEATH = {
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}


@contextlib.contextmanager
def multinode_cluster(head: dict[str, Any], nodes: Sequence[dict[str, Any]]) -> Iterator[Any]:
    """A `ray.cluster_utils.Cluster`: a head (its node args, no dashboard) and `nodes`, one dict of
    node args each. The driver connects before the workers are added, so it attaches to the head's
    raylet and any worker node can be removed without cutting the driver off."""
    import ray
    from ray.cluster_utils import Cluster

    head_args = {"include_dashboard": False, "_system_config": FAST_NODE_DEATH, **head}
    cluster = Cluster(initialize_head=True, connect=True, head_node_args=head_args)
    try:
        for node in nodes:
            cluster.add_node(**node)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def node_kind(node: dict[str, Any]) -> str:
    """Classify a ray.nodes() entry by the custom resource its node type carries."""
    resources = node.get("Resources", {})
    if "gpu_worker" in resources:
        return "gpu"
    if "cpu_worker" in resources:
        return "cpu"
    return "head"


def start_head(config: Path) -> str:
    """Start a fake multi-node head with the autoscaler; return its session directory."""
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1"}
    cmd = [RAY_BIN, "start", "--head", "--num-cpus=0", "--include-dashboard=false"]
    cmd += [f"--autoscaling-config={config}", "--disable-usage-stats"]
    subprocess.run(cmd, env=env, check=True, timeout=120, capture_output=True)
    return os.path.realpath("/tmp/ray/session_latest")


def stop_cluster_processes(session_dir: str) -> list[int]:
    """Kill, by PID, every process of this run's Ray session (head, fake nodes, workers)."""
    me = os.getpid()
    victims = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != me and session_dir in " ".join(proc.info["cmdline"] or []):
                victims.append(proc)
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    # A throwaway test cluster has nothing to flush: whatever has not exited after 3 s is killed.
    _, alive = psutil.wait_procs(victims, timeout=3)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return [p.pid for p in victims]


def object_store_by_node() -> list[dict[str, Any]]:
    """Object-store bytes (all copies, primary copies) and object count on each alive node."""
    import ray
    from ray._private.internal_api import node_stats

    out = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        with contextlib.suppress(Exception):  # a node going away between listing and asking
            stats = node_stats(
                node["NodeManagerAddress"], node["NodeManagerPort"], include_memory_info=False
            ).store_stats
            out.append(
                {
                    "kind": node_kind(node),
                    "bytes": int(stats.object_store_bytes_used),
                    "primary_copy_bytes": int(stats.object_store_bytes_primary_copy),
                    "objects": int(stats.num_local_objects),
                }
            )
    return out


@contextlib.contextmanager
def fake_cluster(config: Path) -> Iterator[str]:
    """A running fake multi-node head, connected; every process of it killed on exit."""
    import ray
    from ray import serve

    session = start_head(config)
    try:
        ray.init(address="auto", log_to_driver=False)
        yield session
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        killed = stop_cluster_processes(session)
        print(f"stopped {len(killed)} Ray processes of this run by PID", flush=True)


@contextlib.contextmanager
def serve_on_loopback(proxy_location: str | None = None) -> Iterator[str]:
    """Ray Serve on the connected Ray, its HTTP proxy on a free loopback port; yields the base URL
    and shuts Serve down afterwards.

    `proxy_location` "HeadOnly" keeps the one proxy on the head: by default Serve starts one on
    every node with a replica, and on one machine they all share the loopback port, so a client's
    connection may land on a worker node's proxy (and break when that node is killed)."""
    from ray import serve

    port = free_port()
    where: dict[str, Any] = {"proxy_location": proxy_location} if proxy_location else {}
    serve.start(http_options={"host": "127.0.0.1", "port": port}, **where)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
