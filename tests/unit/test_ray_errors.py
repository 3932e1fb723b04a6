"""deployments.ray_errors: a replica or node lost mid-call is a retryable 503 with Retry-After
in both body shapes, with a message saying which stage; a replica's own error stays itself."""

from __future__ import annotations

import pytest
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    NodeDiedError,
    ObjectLostError,
    RayActorError,
)

from deployments.ray_errors import domain_errors
from embedder.errors import InvalidInput
from service.errors import error_payload

LOST = [
    ActorDiedError(),
    ActorUnavailableError("replica unreachable", b"0" * 16),
    RayActorError(),
    NodeDiedError("node gone"),
    ObjectLostError("00" * 28, "owner", "call site"),
]


def _raised(exc: BaseException) -> BaseException:
    with pytest.raises(Exception) as caught, domain_errors("FusedEncoder"):
        raise exc
    return caught.value


@pytest.mark.parametrize("exc", LOST, ids=lambda e: type(e).__name__)
def test_a_lost_replica_or_node_is_a_503_with_retry_after(exc: BaseException) -> None:
    mapped = _raised(exc)
    for style in ("openai", "tei"):
        status, body, headers = error_payload(mapped, style)  # type: ignore[arg-type]
        assert status == 503 and headers.get("Retry-After"), (style, body)
        assert "FusedEncoder" in str(body)


def test_a_replicas_own_error_is_not_turned_into_a_503() -> None:
    assert isinstance(_raised(InvalidInput("bad", field="input")), InvalidInput)
