"""MultiplexedEncoder: the fused model stage for several models, at most N resident per replica.

Ray Serve's model multiplexing (`serve.multiplexed`, `serve.get_multiplexed_model_id`): the Ingress
calls `handle.options(multiplexed_model_id=name)`, Serve routes the request to a replica that
already holds that model if there is one, and otherwise the model loads on the chosen replica
(the request waits for the load, it is not failed) after the least recently used one is evicted
when the replica already holds N. Each loaded model is a whole ModelReplica: its own session,
its own ModelScheduler (fairness and fault isolation per model, as in every topology) and the
probe check that ModelReplica runs on every load, so a model that fails it fails its own
requests only. Loads and evictions are counted per model for /info and as Ray metrics
(qm_model_loads, qm_model_evictions).

The replica learns each model's plan from its requests (the Ingress sends the plan with every
call): the Ingress's user_config is the one list of models, so a `serve deploy` that adds a model
there restarts no model replica, and the first request for it loads it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from ray import serve

from deployments.app_models import ModelPlan
from deployments.model_replica import ModelReplica
from deployments.serve_metrics import ray_meter
from embedder.handoff import HiddenPack, TokenPack, pool_pack
from embedder.pooling import Pooler
from engine.errors import BackendUnavailable
from engine.model_memory import ModelMemory
from engine.scheduler import Lanes


class ResidentModel(ModelReplica):
    """One loaded model of a multiplexed replica (the FusedEncoder's work, for one model)."""

    def __init__(self, plan: ModelPlan, on_evict: Callable[[str], None]) -> None:
        super().__init__(plan.artifact_dir, plan.session)
        self.scheduler.config = plan.batching  # this model's resolved batching
        self.pooler = Pooler.from_artifact(self.artifact)
        self.name, self._on_evict, self._evicted = plan.name, on_evict, False

    async def encode(self, pack: TokenPack, tenant: str = "", weight: int = 1) -> np.ndarray:
        """Pooled vectors (not normalised unless the graph normalises), as FusedEncoder returns them."""
        out = await self.run_pack(pack, tenant, weight)
        if self.pooled:
            return out
        return pool_pack(self.pooler, HiddenPack(out, pack.lengths), normalize=False, dimensions=None)

    def __del__(self) -> None:
        # Serve calls __del__ when it evicts the model (the LRU one); garbage collection may call it
        # again later, so the eviction is counted once. The session is left to the collector:
        # a request already running on this model finishes on it.
        if not self._evicted:
            self._evicted = True
            self._on_evict(self.name)


@serve.deployment
class MultiplexedEncoder:
    """Several models' fused stage, each loaded on demand, at most `max_models` per replica."""

    def __init__(self, max_models: int, memory_budget_bytes: int = 0) -> None:
        """`max_models`: the most models one replica holds (-1: no limit); `memory_budget_bytes`:
        the RSS a load may take the replica to (0 = no budget; engine/model_memory.py)."""
        self.plans: dict[str, ModelPlan] = {}
        self.memory = ModelMemory(memory_budget_bytes)
        # At most `workers` passes at once across the resident models (each session is sized for
        # the replica's cores); made at the first load, from that plan's batching.
        self.gate: Lanes | None = None
        self.loads: Counter[str] = Counter()
        # Each model's session runtime as of its last load (a small dict, not the model: holding
        # the model would keep an evicted session's memory).
        self.runtimes: dict[str, dict[str, Any]] = {}
        self.evictions: Counter[str] = Counter()
        self._lock = threading.Lock()  # evictions are counted from Serve's executor thread

        # The decorator is applied here so N comes from the app's args. It wraps a plain function:
        # Serve keeps its model cache as an attribute of the function (a bound method takes none).
        async def load(name: str) -> ResidentModel:
            return await self._load(name)

        self._get = serve.multiplexed(max_num_models_per_replica=max_models)(load)
        self.max_models = max_models

    async def _load(self, name: str) -> ResidentModel:
        plan = self.plans.get(name)
        if plan is None:  # every call brings its plan; this is the last guard
            raise BackendUnavailable(f"model {name!r} has no plan on this replica yet")
        # Loading builds a session and runs the probe: off the event loop, so requests on the
        # models already resident keep being served meanwhile.
        model = await asyncio.to_thread(self._build, plan)
        with self._lock:
            self.loads[name] += 1
            self.runtimes[name] = model.runtime()
        ray_meter().model_loaded(name)
        return model

    def _build(self, plan: ModelPlan) -> ResidentModel:
        # Refused (503 with the numbers) when the load would pass the budget; its RSS growth kept.
        with self.memory.loading(plan.name, plan.artifact_dir):
            model = ResidentModel(plan, self._evicted)
        with self._lock:
            if self.gate is None:
                self.gate = Lanes.of(plan.batching)
            model.scheduler.gate = self.gate
        return model

    def _evicted(self, name: str) -> None:
        self.memory.forget(name)
        with self._lock:
            self.evictions[name] += 1
        ray_meter().model_evicted(name)

    async def __call__(
        self, pack: TokenPack, plan: ModelPlan, tenant: str = "", weight: int = 1
    ) -> tuple[np.ndarray, float]:
        """Pooled vectors of one request's pack by the model the request was routed for, and the
        milliseconds the request waited for that model to load (0 when it was resident)."""
        name = serve.get_multiplexed_model_id()
        if plan.name != name:
            raise BackendUnavailable(f"request routed for model {name!r} carries the plan of {plan.name!r}")
        # A plan changed under the same name applies from the model's next load (use a new name
        # to switch an artifact at once).
        self.plans[name] = plan
        started = time.perf_counter()
        model = await self._get(name)
        waited_ms = (time.perf_counter() - started) * 1000.0
        # A resident model comes back in microseconds; anything longer was this request's share
        # of a load (its own, or one another request started), reported as Server-Timing.
        return await model.encode(pack, tenant, weight), waited_ms if waited_ms >= 1.0 else 0.0

    def runtime(self) -> dict[str, Any]:
        """This replica's multiplexing state (it loads nothing): resident models, loads, evictions."""
        with self._lock:
            loads, evictions = dict(self.loads), dict(self.evictions)
        resident = {n: loads.get(n, 0) - evictions.get(n, 0) > 0 for n in self.plans}
        name = serve.get_multiplexed_model_id()
        return {
            **self.runtimes.get(name, {}),
            "multiplexed": True,
            "max_models_per_replica": self.max_models,
            "model": name,
            "resident": resident.get(name, False),
            "resident_models": sorted(n for n, r in resident.items() if r),
            "loads": loads.get(name, 0),
            "evictions": evictions.get(name, 0),
            "memory": self.memory.status(),
        }
