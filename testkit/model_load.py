"""Closed-loop /v1/embeddings load over several models, each answer checked against its model's Encoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import requests

from testkit.closed_loop import ClosedLoop

TEXTS = ["where is my order", "how do i reset my password"]


def embed(url: str, model: str, texts: Sequence[str] = TEXTS) -> requests.Response:
    """One /v1/embeddings request for `model`."""
    return requests.post(url + "/v1/embeddings", json={"input": list(texts), "model": model}, timeout=60)


class ModelLoad(ClosedLoop):
    """A few threads cycling through `models`; each outcome is (model, status, max |vector - reference|).

    Status 0 is a connection failure; a non-200 answer records a deviation of 1.0.
    """

    def __init__(
        self,
        url: str,
        models: Sequence[str],
        encoders: Mapping[str, Any],
        threads: int = 4,
        limit: int = 2_000,
    ) -> None:
        super().__init__(threads=threads, limit=limit)
        self.url, self.models = url, list(models)
        self.want = {name: encoders[name].encode(TEXTS) for name in self.models}

    def request(self, thread: int, n: int) -> tuple[str, int, float]:
        model = self.models[(thread + n) % len(self.models)]
        try:
            r = embed(self.url, model)
        except requests.RequestException:
            return (model, 0, 1.0)
        if r.status_code != 200:
            return (model, r.status_code, 1.0)
        got = np.array([d["embedding"] for d in r.json()["data"]])
        return (model, 200, float(np.abs(got - self.want[model]).max()))


def matched_by(url: str, collection: str, encoder: Any, question: str = "where is my parcel") -> str:
    """/match over every FAQ row of `collection`; asserts each score is `encoder`'s exact one and
    returns the model the response names. For collections published by testkit.serve_index."""
    from testkit.serve_index import FAQ

    body = {"question": question, "top_k": len(FAQ), "collection": collection}
    got = requests.post(url + "/match", json=body, timeout=60).json()
    want = encoder.encode_document([q for q, _ in FAQ]) @ encoder.encode_query([question])[0]
    scores = {m["id"] - 1000: m["score"] for m in got["matches"]}
    assert np.abs(np.array([scores[i] for i in range(len(FAQ))]) - want).max() < 1e-5, got
    return str(got["model"])
