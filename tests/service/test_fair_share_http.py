"""One key's flood cannot starve another key, over real HTTP against the in-process service.

Key a sends twelve slow requests at once; key b then sends single questions. a gets its share of
the in-flight slots and 429s with Retry-After for the rest; b is admitted every time and each of its
requests is served in a model pass of its own (on the lane a cannot take) while a's requests are
still running. Checked by what the model ran, not by wall-clock time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from embedder.batches import HiddenStates, TokenBatch
from service.auth import auth_config
from service.config import ServingConfig
from service.core import EmbedService
from testkit.dummy_backend import DummyBackend
from testkit.keys import bearer, key_entry, new_key
from testkit.live_server import live_server

FLOOD = 12
SLOTS = 16  # a's share alone: 16 * 1 / (1 + 1 kept for b) = 8
A_TEXTS = ["one two three four five six seven eight nine ten eleven twelve"] * 16  # 14 tokens each


class Widths(DummyBackend):
    """The dummy model, remembering each call's (texts, width): b's questions are 7 tokens wide,
    a's texts 14, so a call of width 7 held none of a's texts."""

    def __init__(self, delay_s: float) -> None:
        self.calls: list[tuple[int, int]] = []
        super().__init__(delay_s=delay_s)

    def _forward(self, batch: TokenBatch) -> HiddenStates:
        out = super()._forward(batch)
        self.calls.append(batch.input_ids.shape)
        return out


def test_a_flooding_key_gets_429s_while_another_keys_requests_are_admitted_and_served() -> None:
    a, a_hash = new_key()
    b, b_hash = new_key()
    auth = auth_config({"keys": [key_entry("a", a_hash), key_entry("b", b_hash)]})
    # Dummy passes of 64 tokens hold four of a's texts: a's eight admitted requests need 32 passes.
    backend = Widths(delay_s=0.05)
    service = EmbedService(backend, ServingConfig(max_in_flight=SLOTS), auth=auth)

    async def scenario(url: str) -> tuple[list[httpx.Response], list[tuple[int, int, int]]]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            body = {"input": A_TEXTS, "model": "dummy"}
            flood = [asyncio.create_task(client.post("/v1/embeddings", json=body, headers=bearer(a)))
                     for _ in range(FLOOD)]  # fmt: skip
            for _ in range(2000):  # until every a request was admitted or refused (bounded)
                refused = sum(t.done() for t in flood)
                if service.admission.slots_held.get("a", 0) + refused == FLOOD:
                    break
                await asyncio.sleep(0.005)
            # (status, model calls of b's text alone it added, a's requests still running).
            quiet: list[tuple[int, int, int]] = []
            for i in range(3):
                before = backend.calls.count((1, 7))
                r = await client.post(
                    "/v1/embeddings",
                    json={"input": f"where is my order {i}", "model": "dummy"},
                    headers=bearer(b),
                )
                quiet.append(
                    (
                        r.status_code,
                        backend.calls.count((1, 7)) - before,
                        service.admission.slots_held.get("a", 0),
                    )
                )
            return list(await asyncio.gather(*flood)), quiet

    with live_server(service) as url:
        flood, quiet = asyncio.run(scenario(url))
    codes = sorted(r.status_code for r in flood)
    assert codes == [200] * 8 + [429] * 4, codes
    for r in flood:
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error"
            assert "fair share" in r.json()["error"]["message"]
    for status, own_calls, a_running in quiet:
        assert status == 200
        assert own_calls == 1, quiet  # b's text ran in a call of its own, none of a's texts in it
        assert a_running > 0, quiet  # ... while a's flood was still being served
    counts: dict[str, Any] = service.usage.snapshot()
    assert counts["a"]["refusals"]["429"] == 4 and counts["b"]["refusals"]["429"] == 0
