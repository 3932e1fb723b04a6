"""Models added and removed in a running service (what a `serve deploy` of the Ingress's user_config does)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from engine.errors import UnknownModel
from service.config import ServingConfig
from service.core import EmbedService
from service.status import models_status
from testkit.dummy_backend import DummyBackend


class SlowRuntime(DummyBackend):
    """A dummy model under its own name whose runtime() waits for `gate`, as a Serve handle call does."""

    def __init__(self, name: str, gate: asyncio.Event) -> None:
        super().__init__()
        self.model = dataclasses.replace(self.model, name=name)
        self.gate = gate

    async def runtime(self) -> dict[str, Any]:
        await self.gate.wait()
        return await super().runtime()


def test_a_model_removed_while_info_awaits_the_backends_is_no_error() -> None:
    async def main() -> tuple[dict[str, Any], EmbedService]:
        gate = asyncio.Event()
        a, b, c = (SlowRuntime(n, gate) for n in "abc")
        service = EmbedService({"a": a, "b": b, "c": c}, ServingConfig())
        listing = asyncio.create_task(models_status(service))
        await asyncio.sleep(0)  # the listing now waits on a's runtime
        service.set_models({"a": a, "c": c})  # b removed meanwhile
        gate.set()
        return await listing, service

    status, service = asyncio.run(main())
    assert list(status) == ["a", "b", "c"]  # the models as they were when the request began
    assert service.models.names == ["a", "c"] and list(service.served) == ["a", "c"]
    with pytest.raises(UnknownModel):
        service.serving("b")


def test_an_added_model_serves_and_the_kept_one_keeps_its_state() -> None:
    gate = asyncio.Event()
    a, b = SlowRuntime("a", gate), SlowRuntime("b", gate)
    service = EmbedService({"a": a}, ServingConfig())
    kept = service.served["a"]
    kept.count(5)
    service.set_models({"a": a, "b": b})
    assert service.serving("b").backend is b and service.served["a"] is kept and kept.tokens == 5
    with pytest.raises(ValueError, match="default model 'a' cannot be removed"):
        service.set_models({"b": b})
