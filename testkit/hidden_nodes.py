"""A local multi-node Ray cluster whose worker nodes cannot see the driver's files.

How (works with Ray 2.60 as root, inside ../shared/bin/loopback-only): the driver starts the head
in-process with no CPUs, so no actor, task or replica can run beside the driver's files. Each
worker node is a separate `ray start --address ... --block`, launched through
`unshare --mount --propagation private` with fresh, empty tmpfs mounts over:

- pytest's base temp directory, where every test keeps its data (corpus, artifact copies,
  outputs);
- /tmp/ray, where the head keeps its session directory. The worker gets its own
  /tmp/ray/session_* (Ray names the session after the head's, but the directory and its sockets
  are private to the node), and its model/index cache (QM_CACHE_DIR=/tmp/ray/qm-cache);
- the repo's artifacts/, data/, runs/ and indexes/ folders (the shipped model and sample corpus);
- ~/.cache (so no node sees another's caches).

Not all of /tmp: the checkout and its venv may live there (CI clones into /tmp), and the node
must still run the code, as every real node has it installed.

All nodes share the loopback network namespace, so they reach the head, each other and the S3
server on 127.0.0.1, exactly as separate machines would over a network. The code (the venv and
the repo's Python packages) stays visible, as it is installed on every real node.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.ray_cluster import FAST_NODE_DEATH

REPO = Path(__file__).resolve().parents[1]
HIDDEN_REPO_DIRS = ("artifacts", "data", "runs", "indexes")
WORKER_CACHE = "/tmp/ray/qm-cache"  # inside the worker's private /tmp/ray


@dataclass
class HiddenNode:
    """One worker node process group and its Ray node id."""

    process: subprocess.Popen[bytes]
    node_id: str


@dataclass
class HiddenDiskCluster:
    """Head in this process (0 CPUs) plus worker nodes that each see only their own private /tmp."""

    env: dict[str, str]
    hide: tuple[Path, ...] = ()  # directories of the driver the worker nodes must not see
    nodes: list[HiddenNode] = field(default_factory=list)
    address: str = ""

    def start(self) -> None:
        import ray

        ray.init(
            num_cpus=0,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=150 * 2**20,
            _system_config=FAST_NODE_DEATH,  # a killed node is declared dead in ~3 s, not ~15 s
        )
        self.address = ray.get_runtime_context().gcs_address

    def add_node(self, num_cpus: int = 1, timeout: float = 90.0) -> HiddenNode:
        import ray

        before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        hidden = [*self.hide, Path("/tmp/ray"), *(REPO / n for n in HIDDEN_REPO_DIRS), Path.home() / ".cache"]
        mounts = [f"mount -t tmpfs tmpfs {shlex.quote(str(d))}" for d in hidden if d.is_dir()]
        ray_bin = Path(sys.executable).with_name("ray")
        start = (
            f"exec {shlex.quote(str(ray_bin))} start --address={self.address} --num-cpus={num_cpus} "
            f"--object-store-memory={100 * 2**20} --block"
        )
        script = " && ".join([*mounts, start])
        env = {**os.environ, **self.env, "QM_CACHE_DIR": WORKER_CACHE}
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killing it kills the whole node
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = {n["NodeID"] for n in ray.nodes() if n["Alive"]} - before
            if new:
                node = HiddenNode(proc, new.pop())
                self.nodes.append(node)
                return node
            if proc.poll() is not None:
                raise RuntimeError(f"worker node exited with {proc.returncode}")
            time.sleep(0.2)
        proc.kill()
        raise RuntimeError("worker node did not join the cluster")

    def kill(self, node: HiddenNode) -> None:
        """SIGKILL every process of the node at once (a machine that died)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=30)
        self.nodes.remove(node)

    def shutdown(self) -> None:
        import ray

        for node in list(self.nodes):
            try:
                os.killpg(node.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for node in self.nodes:
            try:
                node.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
        self.nodes.clear()
        ray.shutdown()

    def busy_nodes(self) -> list[HiddenNode]:
        """Worker nodes with some CPU taken (they host an actor or replica)."""
        import ray._private.state as ray_state

        free: dict[str, Any] = ray_state.available_resources_per_node()
        total = {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in __import__("ray").nodes() if n["Alive"]}
        return [n for n in self.nodes if free.get(n.node_id, {}).get("CPU", 0.0) < total.get(n.node_id, 0.0)]
