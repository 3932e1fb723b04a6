"""GPU capacity for the bulk job: ask the autoscaler for the pool's GPU bundles and wait, bounded.

`ray.cluster_resources()` counts live nodes only. On an autoscaling cluster whose GPU node type
has `min_workers: 0` (cluster.yaml) no GPU exists until something asks for one, so the job asks
(`ray.autoscaler.sdk.request_resources`), waits with progress on stderr, and withdraws the
request when it is done so idle GPU nodes can be removed. A cluster without an autoscaler (a
plain `ray.init()` or hand-started nodes) can never grow: that fails at once with the same
explanation instead of waiting out the timeout.

The decisions (slots per node, which autoscaler runs, the messages) are plain functions of what
Ray reports, so they are tested without a cluster; `wait_for_gpu_capacity` takes its Ray calls
as arguments for the same reason.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from embedder.errors import EmbedderError

# How the cluster can grow: "autoscaler" (v1 monitor with a real node provider, or v2, as on
# KubeRay), "fixed" (the monitor mirrors hand-started nodes; nothing can be added), "unknown".
Autoscaling = Literal["autoscaler", "fixed", "unknown"]

# With no autoscaler status at all after this long, no monitor runs: nothing will add nodes.
# The v1 monitor writes its status every 5 s (AUTOSCALER_UPDATE_INTERVAL_S); three rounds.
NO_STATUS_SECONDS = 15.0
# Progress lines on stderr: at most this often unless the cluster changed.
PROGRESS_EVERY_SECONDS = 15.0

HOW_TO_FIX = (
    "on the cluster launcher raise available_node_types.gpu_worker.max_workers in cluster.yaml "
    "(and check the cloud account's GPU quota for that instance type); on KubeRay raise the GPU "
    "worker group's maxReplicas; or lower --min-actors / --gpus-per-actor, raise "
    "--gpu-wait-seconds, or run with --device cpu"
)


class GpuCapacityError(EmbedderError):
    """The GPUs the job's actor pool needs did not appear (or never can on this cluster)."""


@dataclass(frozen=True)
class Capacity:
    """What the live cluster offers for one actor's bundle."""

    nodes: int  # alive nodes
    gpu_nodes: int  # alive nodes with any GPU
    gpus: float  # GPUs on alive nodes
    slots: int  # how many actor bundles fit (each inside one node)

    def describe(self) -> str:
        return (
            f"{self.gpus:g} GPU(s) on {self.gpu_nodes} of {self.nodes} alive node(s), "
            f"room for {self.slots} actor(s)"
        )


def actor_bundle(gpus_per_actor: float, cpus_per_actor: float) -> dict[str, float]:
    """The resources one pool actor reserves (CPU left out at 0: GPU node types offer CPU 0)."""
    bundle = {"GPU": float(gpus_per_actor)}
    if cpus_per_actor > 0:
        bundle["CPU"] = float(cpus_per_actor)
    return bundle


def bundle_text(bundle: Mapping[str, float], count: int) -> str:
    """`2 x {GPU: 1, CPU: 1}` for messages."""
    inner = ", ".join(f"{k}: {v:g}" for k, v in bundle.items())
    return f"{count} x {{{inner}}}"


def capacity(nodes: list[dict[str, Any]], bundle: Mapping[str, float]) -> Capacity:
    """Capacity from `ray.nodes()` entries: an actor's bundle must fit inside one node's totals.

    Totals, not what is free right now: other work on the node ends, a node that is too small
    never grows, and the pool's own actors use what they reserve.
    """
    alive = [n for n in nodes if n.get("Alive")]
    slots = 0
    for node in alive:
        resources = node.get("Resources", {})
        per_node = [
            math.floor(resources.get(name, 0.0) / amount + 1e-9)
            for name, amount in bundle.items()
            if amount > 0
        ]
        slots += min(per_node) if per_node else 0
    gpus = sum(float(n.get("Resources", {}).get("GPU", 0.0)) for n in alive)
    gpu_nodes = sum(1 for n in alive if n.get("Resources", {}).get("GPU", 0.0) > 0)
    return Capacity(nodes=len(alive), gpu_nodes=gpu_nodes, gpus=gpus, slots=slots)


def autoscaling_from_status(status: Mapping[str, Any] | None, v2: bool) -> Autoscaling:
    """Which kind of cluster this is, from the v1 monitor's status (GCS key `__autoscaling_status`).

    Ray's v1 monitor runs on every head. Without --autoscaling-config it drives a read-only
    provider that names each node's type `node_<node id>` (it only mirrors what is there); with a
    config, node types carry the config's names (`ray.head.default`, `gpu_worker`). The v2
    autoscaler (KubeRay) writes no such status but flags itself in the GCS.
    """
    if v2:
        return "autoscaler"
    report = (status or {}).get("autoscaler_report")
    if not isinstance(report, Mapping):
        return "unknown"  # monitor starting, or not running (decided by how long it stays absent)
    mapping = report.get("node_type_mapping") or {}
    if not mapping:
        return "unknown"
    readonly = all(str(node_type) == f"node_{node_id}" for node_id, node_type in mapping.items())
    return "fixed" if readonly else "autoscaler"


def no_autoscaler_message(bundle: Mapping[str, float], count: int, have: Capacity) -> str:
    return (
        f"--device gpu: the actor pool needs {bundle_text(bundle, count)} but this Ray cluster has "
        f"{have.describe()} and no autoscaler that could add GPU nodes (a fixed cluster, e.g. a "
        "local ray.init() or hand-started nodes). Start the job on an autoscaling cluster "
        "(cluster.yaml with its gpu_worker type, or KubeRay), add GPU nodes to this one, or run "
        "with --device cpu"
    )


def timeout_message(bundle: Mapping[str, float], count: int, have: Capacity, waited: float) -> str:
    return (
        f"--device gpu: asked the autoscaler for {bundle_text(bundle, count)} and waited "
        f"{waited:.0f} s; the cluster has {have.describe()}. The GPU nodes did not come up: "
        f"{HOW_TO_FIX}"
    )


def ray_autoscaler_status() -> tuple[dict[str, Any] | None, bool]:
    """(v1 monitor status or None, whether the v2 autoscaler is on) from the connected cluster's GCS."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    v2 = False
    with contextlib.suppress(Exception):  # an older GCS without the key: treat as v1
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        v2 = bool(is_autoscaler_v2(fetch_from_server=True))
    raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    status = None
    if raw:
        with contextlib.suppress(ValueError):
            status = json.loads(raw)
    return status, v2


def request_bundles(bundles: list[dict[str, float]]) -> None:
    """Replace this cluster's standing autoscaler request (an empty list withdraws it)."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)


def ray_nodes() -> list[dict[str, Any]]:
    import ray

    return list(ray.nodes())


def stderr_line(text: str) -> None:
    print(f"embed_corpus: {text}", file=sys.stderr, flush=True)


@dataclass
class Probes:
    """The cluster calls the wait makes; replaced by fakes in tests."""

    nodes: Callable[[], list[dict[str, Any]]] = ray_nodes
    status: Callable[[], tuple[dict[str, Any] | None, bool]] = ray_autoscaler_status
    request: Callable[[list[dict[str, float]]], None] = request_bundles
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = stderr_line


def wait_for_gpu_capacity(
    bundle: Mapping[str, float],
    count: int,
    timeout: float,
    probes: Probes | None = None,
    poll_seconds: float = 2.0,
) -> bool:
    """Make room for `count` actors of `bundle`; True when a request was made (withdraw it later).

    Returns at once when the live cluster already has room. Otherwise asks the autoscaler for the
    bundles and polls until they fit, printing what is asked, what is there and the time left;
    raises GpuCapacityError on timeout, or at once when the cluster has no autoscaler.
    """
    p = probes or Probes()
    have = capacity(p.nodes(), bundle)
    if have.slots >= count:
        return False
    status, v2 = p.status()
    if autoscaling_from_status(status, v2) == "fixed":
        raise GpuCapacityError(no_autoscaler_message(bundle, count, have))
    p.request([dict(bundle) for _ in range(count)])
    try:
        _poll(p, bundle, count, timeout, poll_seconds, status is not None or v2)
    except BaseException:
        with contextlib.suppress(Exception):  # the error that got us here matters more
            p.request([])
        raise
    return True


def _poll(
    p: Probes, bundle: Mapping[str, float], count: int, timeout: float, poll_seconds: float, seen_status: bool
) -> None:
    started = p.clock()
    deadline = started + timeout
    last_line, last_seen = -math.inf, None
    while True:
        have = capacity(p.nodes(), bundle)
        now = p.clock()
        if have.slots >= count:
            p.log(f"GPU capacity ready after {now - started:.0f} s: {have.describe()}")
            return
        if now >= deadline:
            raise GpuCapacityError(timeout_message(bundle, count, have, now - started))
        status, v2 = p.status()
        seen_status = seen_status or status is not None or v2
        kind = autoscaling_from_status(status, v2)
        if kind == "fixed" or (not seen_status and now - started >= min(NO_STATUS_SECONDS, timeout)):
            raise GpuCapacityError(no_autoscaler_message(bundle, count, have))
        if have != last_seen or now - last_line >= PROGRESS_EVERY_SECONDS:
            p.log(
                f"waiting for GPU nodes: asked the autoscaler for {bundle_text(bundle, count)}; "
                f"the cluster has {have.describe()}; {deadline - now:.0f} s left"
            )
            last_line, last_seen = now, have
        p.sleep(min(poll_seconds, max(deadline - now, 0.0)))


@contextlib.contextmanager
def gpu_capacity(
    bundle: Mapping[str, float], count: int, timeout: float, probes: Probes | None = None
) -> Iterator[None]:
    """Hold room for the pool while the body runs; withdraw the autoscaler request afterwards.

    The request stays up for the whole job so the autoscaler does not retire a GPU node between
    pipeline stages; withdrawing it lets the nodes go after the idle timeout. (Ray Data's own
    autoscaling may replace the standing request while the job runs; that is fine, it asks for
    the same pool.)
    """
    p = probes or Probes()
    requested = wait_for_gpu_capacity(bundle, count, timeout, p)
    try:
        yield
    finally:
        if requested:
            with contextlib.suppress(Exception):  # a cluster already gone has nothing to withdraw
                p.request([])
