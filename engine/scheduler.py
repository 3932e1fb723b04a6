"""Fair, token-budgeted model scheduling: many requests' texts share each model pass.

One worker runs passes back to back. Each pass takes texts round-robin from the queued
requests (one text of each request in turn) until the pass's real-token budget is full, then
the core planner sorts them by length and cuts padded onnxruntime calls. So:
- at concurrency 1 a request runs at once (no batching window);
- under load, passes fill with many requests' texts (one model call serves many requests);
- a one-text request waits for at most the pass in progress, however many large requests are
  queued (TEI-style token budget instead of first-come-first-served);
- a request whose caller gave up (timeout, disconnect) is dropped before its next pass;
- a pass that raises is re-run request by request, so only the culprit gets the error;
- requests carry a tenant (the API key's name, a plain string) and its weight: a pass goes
  round-robin across tenants with queued work first (`weight` texts of each tenant in turn, the
  first tenant rotating from pass to pass), then across that tenant's requests as above, so one
  key's flood of large requests cannot keep another key's one-text request out of the next pass.
The model call runs in a worker thread (onnxruntime releases the GIL), so the event loop keeps
reading requests while the model computes. With `workers` > 1, that many passes run at once,
each on its own thread (one onnxruntime session accepts concurrent runs): on a small CPU node,
two single-threaded passes side by side beat one two-threaded pass once other work (HTTP,
tokenizing) shares the cores, because no op waits for a straggler thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedder.config import BatchConfig
from embedder.handoff import TokenPack, run_merged
from settings.loader import from_mapping

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    """How requests are merged into model passes."""

    # Real tokens per pass, across requests. The pass is then cut into onnxruntime calls of
    # `batch` (the core's measured best on CPU: 1,024 padded tokens, 16 texts). 2,048 keeps a
    # pass under ~0.4 s on 2 CPU cores, which bounds how long a newly arrived request waits.
    # On a GPU raise both (e.g. pass_tokens 32768, batch_tokens 16384, max_batch_size 256).
    pass_tokens: int = 2048
    batch: BatchConfig = field(default_factory=BatchConfig)
    # Passes run at once. 1 with a multi-threaded session; on CPU nodes shared with the HTTP
    # path, `workers` = cores with a 1-thread session was faster (bench/results/serve-haproxy.json).
    workers: int = 1

    def __post_init__(self) -> None:
        if self.pass_tokens < 1:
            raise ValueError(f"SchedulerConfig.pass_tokens must be >= 1, got {self.pass_tokens}")
        if self.workers < 1:
            raise ValueError(f"SchedulerConfig.workers must be >= 1, got {self.workers}")


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
        self.config = config or SchedulerConfig()
        self._on_pass = on_pass
        self._queue: list[_Queued] = []
        # Strong references to the worker tasks (the loop keeps only weak ones) and, separately,
        # how many are still looping. The count drops inside `_work` itself, in the same step
        # that decides to stop: a done-callback would run a loop iteration later, and a request
        # submitted in between would find a "worker" that has already left and wait forever.
        self._workers: set[asyncio.Task[None]] = set()
        self._running = 0
        self.passes = 0
        self._turn = 0  # rotates which tenant a pass starts with
        # Shared by every model of one replica (set by its host): at most that many passes at once
        # across the models, so two models' passes do not split the cores between them while
        # each runs a session sized for all of them. None: this scheduler's own `workers` only.
        self.gate: asyncio.Semaphore | None = None

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
        while self._running < self.config.workers:
            self._running += 1
            task = loop.create_task(self._work())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        try:
            return await item.future
        finally:
            if not item.future.done():  # caller cancelled: stop spending model time on it
                item.future.cancel()

    async def _work(self) -> None:
        try:
            while True:
                # Requests fully claimed or given up leave the queue; their passes finish elsewhere.
                self._queue = [q for q in self._queue if not q.future.done() and q.claimed < q.pack.size]
                if not self._queue:
                    return
                if self.gate is None:
                    await self._run_pass(self._choose())
                    continue
                async with self.gate:  # the pass is chosen once the cores are ours: it takes all that waited
                    self._queue = [q for q in self._queue if not q.future.done() and q.claimed < q.pack.size]
                    if self._queue:
                        await self._run_pass(self._choose())
        finally:
            self._running -= 1

    def _choose(self) -> list[tuple[_Queued, np.ndarray]]:
        """Texts for one pass until its token budget is full: tenants in turn (`weight` texts each),
        and within a tenant one text of each of its requests in turn."""
        budget = self.config.pass_tokens
        pending: dict[str, list[int]] = {}  # tenant -> queue positions of its requests with texts left
        for i, q in enumerate(self._queue):
            if q.claimed < q.pack.size:
                pending.setdefault(q.tenant, []).append(i)
        order = list(pending)
        if len(order) > 1:  # rotate the first tenant, so each starts a pass in turn
            self._turn += 1
            k = self._turn % len(order)
            order = order[k:] + order[:k]
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

    def _taken(self, taken: dict[int, list[int]]) -> list[tuple[_Queued, np.ndarray]]:
        return [(self._queue[i], np.asarray(rows, np.int64)) for i, rows in taken.items()]

    async def _run_pass(self, chosen: list[tuple[_Queued, np.ndarray]]) -> None:
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
