"""Fair, token-budgeted model scheduling: many requests' texts share each model pass.

Passes run on `workers` lanes (a pass runs in a worker thread; onnxruntime releases the GIL, so
the event loop keeps reading requests while the model computes). Each pass takes texts
round-robin from the queued requests (one text of each request in turn) until the pass's
real-token budget is full, then the core planner sorts them by length and cuts padded model
calls. So:
- at concurrency 1 a request runs at once (no batching window);
- under load, passes fill with many requests' texts (one model call serves many requests);
- a request whose caller gave up (timeout, disconnect) is dropped before its next pass;
- a pass that raises is re-run request by request, so only the culprit gets the error;
- requests carry a tenant (the API key's name, a plain string) and its weight: a pass goes
  round-robin across tenants with queued work first (`weight` texts of each tenant in turn, the
  first tenant rotating from pass to pass), then across that tenant's requests as above.

Fair share of the lanes (issue 26). A pass is not preemptible, so round-robin alone still made a
quiet key's one-text request wait for the flood's pass in progress and then share its own pass
with ~2,000 flood tokens (~10 ms alone, ~700 ms flooded on 2 cores). Two rules remove both waits:
- one tenant runs at most `tenant_lanes` passes at once (default `workers - 1`): with two lanes a
  flood holds one, and another key's request finds the other free the moment it arrives. It runs
  beside the flood's pass, each on the session's full thread count: the OS shares the cores, so
  the quiet pass is ~2x slower than alone, not 40x. Alone, a tenant runs one full-thread pass at a
  time, which is what a single lane did before: that pass already uses every core, so the lane
  kept free costs the flood nothing (a second pass of its own would only split the cores between
  two of its passes). With a one-thread session per lane (the Serve inline layout) the kept lane
  would halve a lone tenant: set `tenant_lanes = workers` there.
- while another lane stays free, a new pass takes one tenant's texts only: a quiet key's pass then
  holds its own question, not the flood's texts. Only the last free lane merges tenants.
Passes are started synchronously when a request arrives or a pass ends (no worker task that a
request could race), so these rules hold exactly, not usually.
With `workers` 1 nothing can be kept free: a request waits for the pass in progress (at most one
pass, however much is queued) and shares the next one round-robin, as before issue 26.
The lanes may be shared by several models' schedulers (a replica's `Lanes`, set as `gate` by its
host): at most `workers` passes at once across the models, and a tenant's cap counts them all.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedder.config import BatchConfig
from embedder.handoff import TokenPack, run_merged
from settings.loader import from_mapping

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    """How requests are merged into model passes, and how many passes run at once."""

    # Real tokens per pass, across requests. The pass is then cut into model calls of `batch`
    # (the core's measured best on CPU: 1,024 padded tokens, 16 texts). 2,048 keeps a pass under
    # ~0.4 s on 2 CPU cores (onnxruntime fp32; ~0.1 s with OpenVINO bf16), which bounds how long
    # a request waits where no lane is free. On a GPU raise both (e.g. pass_tokens 32768,
    # batch_tokens 16384, max_batch_size 256).
    pass_tokens: int = 2048
    batch: BatchConfig = field(default_factory=BatchConfig)
    # Lanes: passes that may run at once. 2, with a session of all the cores' threads: one tenant
    # uses one full-thread pass at a time (all the cores) and the other lane is free for any
    # other tenant's request the moment it arrives (module docstring). On CPU nodes shared with
    # the HTTP path, two 1-thread passes were faster (bench/results/serve-haproxy.json).
    workers: int = 2
    # Passes one tenant may run at once; 0: `workers - 1` (1 when workers is 1), so one lane is
    # always free for another tenant. Set it to `workers` where each lane has one core's thread
    # (a lone tenant would otherwise get half the cores); fairness is then round-robin only.
    tenant_lanes: int = 0

    def __post_init__(self) -> None:
        if self.pass_tokens < 1:
            raise ValueError(f"SchedulerConfig.pass_tokens must be >= 1, got {self.pass_tokens}")
        if self.workers < 1:
            raise ValueError(f"SchedulerConfig.workers must be >= 1, got {self.workers}")
        if not 0 <= self.tenant_lanes <= self.workers:
            raise ValueError(
                f"SchedulerConfig.tenant_lanes must be 0 (workers - 1) or 1..workers, got {self.tenant_lanes}"
            )

    @property
    def lanes_per_tenant(self) -> int:
        """Passes one tenant may run at once (tenant_lanes resolved)."""
        return self.tenant_lanes or max(1, self.workers - 1)


class Lanes:
    """The passes that may run at once on one replica's cores, and whose they are.

    Shared by every scheduler of a replica's models (issue 25: at most `size` passes across them,
    each session being sized for all the cores); a tenant's passes count against its cap
    (`per_tenant`) whichever model runs them. Plain counters, no asyncio primitive: every change
    happens on the event loop, and a freed lane is offered to the attached schedulers at once.
    """

    def __init__(self, size: int, per_tenant: int = 0) -> None:
        if size < 1:
            raise ValueError(f"Lanes size must be >= 1, got {size}")
        self.size = size
        self.per_tenant = min(size, per_tenant or max(1, size - 1))
        self.busy = 0
        self.tenants: dict[str, int] = {}  # tenant -> passes running that hold some of its texts
        # Weak: a model evicted from a replica must not stay alive through the lanes it shared.
        self._dispatchers: list[weakref.WeakMethod[Callable[[], None]]] = []
        self._turn = 0  # which scheduler is offered a freed lane first

    @classmethod
    def of(cls, config: SchedulerConfig) -> Lanes:
        """Lanes of a scheduler config (workers, tenant_lanes)."""
        return cls(config.workers, config.lanes_per_tenant)

    @property
    def free(self) -> int:
        """Lanes not running a pass."""
        return self.size - self.busy

    def allows(self, tenant: str) -> bool:
        """Whether `tenant` may have texts in one more pass."""
        return self.tenants.get(tenant, 0) < self.per_tenant

    def attach(self, dispatch: Callable[[], None]) -> None:
        """`dispatch` (a bound method) is called whenever a lane frees: a scheduler starting its
        next passes. Held weakly, dropped once its scheduler is gone."""
        self._dispatchers.append(weakref.WeakMethod(dispatch))

    def take(self, tenants: Iterable[str]) -> None:
        """One lane, for a pass holding texts of `tenants`."""
        self.busy += 1
        for t in tenants:
            self.tenants[t] = self.tenants.get(t, 0) + 1

    def release(self, tenants: Iterable[str]) -> None:
        """The pass of `tenants` ended: its lane goes to the attached schedulers, in turn."""
        self.busy -= 1
        for t in tenants:
            left = self.tenants.get(t, 0) - 1
            if left > 0:
                self.tenants[t] = left
            else:
                self.tenants.pop(t, None)
        live = [(ref, fn) for ref in self._dispatchers if (fn := ref()) is not None]
        self._dispatchers = [ref for ref, _ in live]
        if live:
            self._turn = (self._turn + 1) % len(live)
            for k in range(len(live)):
                live[(self._turn + k) % len(live)][1]()


@dataclass
class _Queued:
    pack: TokenPack
    future: asyncio.Future[np.ndarray]
    tenant: str = ""  # whose request (an API key's name; "" when the caller names none)
    weight: int = 1  # texts the tenant gets per round-robin turn
    claimed: int = 0  # texts handed to a pass (done or in flight)
    done: int = 0  # texts whose vectors are back
    parts: dict[int, np.ndarray] = field(default_factory=dict)  # first row of a pass -> its output

    def remaining_tokens(self) -> int:
        return int(self.pack.lengths[self.claimed :].sum())


# Environment prefix of SchedulerConfig fields (QM_SCHED_PASS_TOKENS, QM_SCHED_BATCH_BATCH_TOKENS, ...).
SCHEDULER_ENV_PREFIX = "QM_SCHED_"


def scheduler_config(data: dict[str, Any] | None) -> SchedulerConfig:
    """SchedulerConfig from a mapping (Serve args, user_config) with QM_SCHED_<FIELD> environment overrides."""
    return from_mapping(SchedulerConfig, data, env_prefix=SCHEDULER_ENV_PREFIX)


PassObserver = Callable[[int, list[tuple[int, int]]], None]
Chosen = list[tuple[_Queued, np.ndarray]]


class ModelScheduler:
    """Queues TokenPacks and runs them through `forward` in fair, token-budgeted passes."""

    def __init__(
        self,
        forward: Callable[[Any], Any],
        pad_token_id: int,
        pooled: bool,
        config: SchedulerConfig | None = None,
        on_pass: PassObserver | None = None,
    ) -> None:
        self._forward = forward
        self._pad = pad_token_id
        self._pooled = pooled
        self._config = config or SchedulerConfig()
        self._on_pass = on_pass
        self._queue: list[_Queued] = []
        # Strong references to the running passes' tasks (the loop keeps only weak ones).
        self._tasks: set[asyncio.Task[None]] = set()
        self.passes = 0
        self._turn = 0  # rotates which tenant a pass starts with
        self._lanes = Lanes.of(self._config)
        self._lanes.attach(self._dispatch)
        self._shared = False  # lanes set by a host (`gate`), not this config's own

    @property
    def config(self) -> SchedulerConfig:
        """Pass budget, batching and lanes; a new one applies from the next pass (Serve user_config)."""
        return self._config

    @config.setter
    def config(self, config: SchedulerConfig) -> None:
        self._config = config
        if not self._shared:  # own lanes follow the config; a host's shared lanes are the host's
            self._lanes = Lanes.of(config)
            self._lanes.attach(self._dispatch)

    @property
    def gate(self) -> Lanes:
        """The lanes this scheduler's passes run on: its own, or a replica's shared by its models."""
        return self._lanes

    @gate.setter
    def gate(self, lanes: Lanes) -> None:
        # Set by the host before requests arrive (passes running on the old lanes finish there).
        self._lanes = lanes
        self._shared = True
        lanes.attach(self._dispatch)

    @property
    def queued_tokens(self) -> int:
        """Real tokens waiting for a pass (not yet handed to one)."""
        return sum(q.remaining_tokens() for q in self._queue if not q.future.done())

    async def submit(self, pack: TokenPack, tenant: str = "", weight: int = 1) -> np.ndarray:
        """Per-token vectors (total_tokens, d), or pooled (n, d) when the model pools, in pack order.

        `tenant` and `weight`: whose request it is, for the round-robin across tenants."""
        if pack.size == 0:
            return np.zeros((0, 0), np.float32)
        loop = asyncio.get_running_loop()
        item = _Queued(pack, loop.create_future(), tenant, max(1, int(weight)))
        self._queue.append(item)
        self._dispatch()
        try:
            return await item.future
        finally:
            if not item.future.done():  # caller cancelled: stop spending model time on it
                item.future.cancel()

    def _dispatch(self) -> None:
        """Start passes while a lane is free and some tenant under its cap has texts queued."""
        lanes = self._lanes
        while lanes.free > 0:
            # Requests fully claimed or given up leave the queue; their passes finish elsewhere.
            self._queue = [q for q in self._queue if not q.future.done() and q.claimed < q.pack.size]
            # While another lane stays free after this one, the pass is one tenant's: a newcomer's
            # pass holds its own texts, and the others' work takes the next lane.
            chosen = self._choose(single_tenant=lanes.free > 1)
            if not chosen:
                return
            tenants = {q.tenant for q, _ in chosen}
            lanes.take(tenants)
            task = asyncio.get_running_loop().create_task(self._lane(chosen, tenants))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _lane(self, chosen: Chosen, tenants: set[str]) -> None:
        try:
            await self._run_pass(chosen)
        finally:
            self._lanes.release(tenants)  # offers the lane to every scheduler sharing it

    def _choose(self, single_tenant: bool = False) -> Chosen:
        """Texts for one pass until its token budget is full: tenants under their lane cap in turn
        (`weight` texts each), and within a tenant one text of each of its requests in turn."""
        budget = self.config.pass_tokens
        pending: dict[str, list[int]] = {}  # tenant -> queue positions of its requests with texts left
        for i, q in enumerate(self._queue):
            if q.claimed < q.pack.size and self._lanes.allows(q.tenant):
                pending.setdefault(q.tenant, []).append(i)
        order = list(pending)
        if len(order) > 1:  # rotate the first tenant, so each starts a pass in turn
            self._turn += 1
            k = self._turn % len(order)
            order = order[k:] + order[:k]
            if single_tenant:
                order = order[:1]
        nxt = dict.fromkeys(order, 0)  # per tenant: which of its requests gives the next text
        taken: dict[int, list[int]] = {}
        used = 0
        while order:
            for tenant in list(order):
                members = pending[tenant]
                for _ in range(self._queue[members[0]].weight):
                    j = nxt[tenant] % len(members)
                    q = self._queue[members[j]]
                    n = int(q.pack.lengths[q.claimed])
                    if used and used + n > budget:
                        return self._taken(taken)
                    taken.setdefault(members[j], []).append(q.claimed)
                    q.claimed += 1
                    used += n
                    if q.claimed >= q.pack.size:
                        members.pop(j)  # the next request moves into position j
                    else:
                        nxt[tenant] = j + 1
                    if not members:
                        order.remove(tenant)
                        break
        return self._taken(taken)

    def _taken(self, taken: dict[int, list[int]]) -> Chosen:
        return [(self._queue[i], np.asarray(rows, np.int64)) for i, rows in taken.items()]

    async def _run_pass(self, chosen: Chosen) -> None:
        packs = [q.pack.select(rows) for q, rows in chosen]
        try:
            outs, calls = await asyncio.to_thread(self._run_packs, packs)
        except Exception as exc:
            if len(chosen) == 1:
                self._fail(chosen[0][0], exc)
                return
            # A merged pass failed: re-run each member alone so only the culprit fails.
            log.warning(
                "model pass over %d requests failed (%s); re-running them one by one", len(chosen), exc
            )
            for q, rows in chosen:
                await self._run_pass([(q, rows)])
            return
        self.passes += 1
        if self._on_pass is not None:
            self._on_pass(len(chosen), calls)
        for (q, rows), out in zip(chosen, outs, strict=True):
            q.parts[int(rows[0])] = out
            q.done += len(rows)
            if q.done == q.pack.size and not q.future.done():
                parts = [q.parts[k] for k in sorted(q.parts)]
                q.future.set_result(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def _run_packs(self, packs: list[TokenPack]) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
        return run_merged(packs, self._pad, self.config.batch, self._forward, self._pooled)

    def _fail(self, q: _Queued, exc: BaseException) -> None:
        q.claimed = q.pack.size  # nothing more of it is run
        if not q.future.done():
            q.future.set_exception(exc)
