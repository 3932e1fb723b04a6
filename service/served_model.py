"""One served model and its readiness: the probe loop, its state, and the refusal of a failed model.

Each model of a service has its own probe (service.core.EmbedService holds one ServedModel per
model), so one model failing its probe is refused for its own requests (503 naming it) while the
others serve. A model is refused only when its vectors disagree with its artifact's stored probe
(ModelMismatch from the model part): its answers would be wrong. A probe that cannot run yet (a
stage restarting, no index version) only keeps /ready at 503, as it always has.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from embedder.errors import ModelMismatch
from embedder.probe import PROBE_TEXTS, probe_floor, probe_plan
from engine.backend import Backend, EmbedOptions
from index.errors import IndexUnavailable
from index.groups import GroupBy
from service.errors import NotReady, public_message


class ServedModel:
    """A model's backend and whether its probe has passed (and why not)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.model = backend.model
        self.ready = False
        self.not_ready_reason = "readiness probe has not run yet"
        # Set when the model's own vectors failed the probe: its requests are refused meanwhile.
        self.refused: str | None = None
        # Model passes this replica ran for requests (the probe's not counted) and their tokens.
        self.requests = 0
        self.tokens = 0
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """The model's name (what requests give as `model`)."""
        return self.model.name

    def check_serving(self, retry_after: int) -> None:
        """503 naming the model while its vectors fail the probe; nothing otherwise."""
        if self.refused is not None:
            raise NotReady(
                f"model {self.name!r} is not serving: {self.refused}", param="model", retry_after=retry_after
            )

    def status(self) -> dict[str, object]:
        """Readiness as /ready and /info show it."""
        return {"ready": self.ready, "not_ready_reason": None if self.ready else self.not_ready_reason}

    def count(self, tokens: int) -> None:
        """One request's model work done (/info's per-model `requests` and `tokens`)."""
        self.requests += 1
        self.tokens += tokens

    def start_probe(self, interval_s: float) -> None:
        """Start the probe loop (idempotent; needs a running event loop)."""
        if self._probe_task is None or (self._probe_task.done() and not self.ready):
            with contextlib.suppress(RuntimeError):
                self._probe_task = asyncio.get_running_loop().create_task(self._probe_until_ready(interval_s))

    def stop_probe(self) -> None:
        """Stop the probe loop (the model is no longer served)."""
        if self._probe_task is not None:
            self._probe_task.cancel()

    async def _probe_until_ready(self, interval_s: float) -> None:
        while not self.ready:
            try:
                await self.probe()
                self.ready, self.not_ready_reason, self.refused = True, "", None
            except Exception as exc:  # any failure just means "not ready yet"; keep the reason
                # Shown by /ready and /info: never a server path.
                self.not_ready_reason = f"{type(exc).__name__}: {public_message(exc, 503)}"
                await asyncio.sleep(interval_s)

    async def probe(self) -> None:
        """Embed the probe set through the backend, compare with the artifact; search once if indexed.

        Every group of the artifact's probe (embedder.probe.probe_plan: all texts with the default
        prompt, then a few per named prompt) goes through the backend's own prompt path, so a prompt
        lost or changed on the way fails the probe.
        """
        served = await self._probe_vectors()
        if await self.backend.index_status() is not None:
            try:
                # Ungrouped whatever the collection's default: the probe checks the path, not a column.
                result = await self.backend.search(served[:1], 1, group=GroupBy(inherit=False))
            except IndexUnavailable as exc:
                raise NotReady(str(exc)) from None
            if result.fingerprint != self.model.fingerprint:
                raise ModelMismatch(
                    f"index fingerprint {result.fingerprint} != model {self.model.fingerprint}"
                )

    async def _probe_vectors(self) -> np.ndarray:
        """The probe's vectors through the backend; ModelMismatch (and the model refused) if they disagree."""
        prompts = self.model.prompt_set()
        rows = []
        for name, texts in probe_plan(prompts.names, PROBE_TEXTS):
            pack = await self.backend.tokenize(list(texts), prompts.resolve(name))
            rows.append(await self.backend.encode(pack, EmbedOptions()))
        served = np.concatenate(rows)
        runtime = await self.backend.runtime()
        floor = probe_floor(str(runtime.get("tolerance_key", "fp32")))
        try:
            agreement = probe_agreement(self.model.probe_vectors, served)
            if agreement < floor:
                raise ModelMismatch(
                    f"probe vectors through the stages agree to cosine {agreement:.6f} < {floor} "
                    f"({runtime.get('precision')} on {runtime.get('backend')})"
                )
        except ModelMismatch as exc:
            self.refused = public_message(exc, 503)
            raise
        self.refused = None
        return served


def probe_agreement(stored: np.ndarray, served: np.ndarray) -> float:
    """Lowest row-wise cosine between the artifact's probe vectors and the ones the backend returned."""
    if stored.shape != served.shape:
        raise ModelMismatch(f"probe vectors have shape {stored.shape}, the stages gave {served.shape}")
    a = stored / np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
    b = served / np.maximum(np.linalg.norm(served, axis=1, keepdims=True), 1e-12)
    return float(np.einsum("ij,ij->i", a, b).min()) if len(a) else 1.0
