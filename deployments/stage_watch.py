"""Whether the stages an Ingress calls have a live replica, as the Serve controller sees them.

The readiness probe passes once; after that /ready stayed 200 even with every model replica
gone (its node died), while requests waited for a replacement. This thread asks the controller
(serve.status(), one call per interval) how many replicas of each stage are live and sets
EmbedService.unavailable while one has none, so /ready answers 503 for exactly that time and a
load balancer can send traffic elsewhere. A thread, not a task: serve.status() blocks, and it
must keep running whatever the replica's event loop is doing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ray import serve

from service.core import EmbedService

# Seconds between two controller calls: a model node's loss shows on /ready about this long after
# the controller saw the replica gone (node death, ~15 s by default, then its health check).
WATCH_INTERVAL_S = 1.0


# Replica states that serve requests: RUNNING, and UPDATING (applying a new user_config in place,
# e.g. a collection added) or PENDING_MIGRATION (being drained off a node) still answer.
LIVE = frozenset({"RUNNING", "UPDATING", "PENDING_MIGRATION"})


def missing_stages(status: serve.schema.ServeStatus, app: str, stages: Sequence[str]) -> list[str]:
    """The stages of `app` with no live replica (a stage the controller does not list counts as missing)."""
    deployments = status.applications[app].deployments if app in status.applications else {}
    out = []
    for name in stages:
        states = deployments[name].replica_states if name in deployments else {}
        # Keys are ReplicaState (a str Enum) or its plain value, depending on how the status was built.
        running = sum(n for state, n in states.items() if getattr(state, "value", state) in LIVE)
        if not running:
            out.append(name)
    return out


class StageWatch:
    """A daemon thread keeping `service.unavailable` equal to the stages without a live replica."""

    def __init__(
        self, service: EmbedService, stages: Sequence[str], interval_s: float = WATCH_INTERVAL_S
    ) -> None:
        self.service, self.stages, self.interval_s = service, list(stages), interval_s
        self.app = serve.get_replica_context().app_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qm-stage-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                missing = missing_stages(serve.status(), self.app, self.stages)
            except Exception:  # the controller restarting: keep the last answer, ask again
                continue
            self.service.unavailable = (
                f"no running replica of {', '.join(missing)} (a node may have been lost; Serve is "
                "starting a replacement)"
                if missing
                else ""
            )

    def stop(self) -> None:
        self._stop.set()
