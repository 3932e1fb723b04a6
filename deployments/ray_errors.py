"""Ray's exceptions end here: a handle call raises the project's own errors, never a Ray type.

A replica's domain error (InvalidInput, UnknownCollection, IndexUnavailable, ...) reaches the
caller as Ray's RayTaskError wrapped around it; the original is re-raised, so the service's error
map sees what the replica raised. Backpressure and dead or unreachable replicas become
engine.errors.BackendUnavailable (503 with Retry-After): the request may be retried.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from engine.errors import BackendUnavailable

# Ray's ways of saying "not now": a full queue, a deployment without healthy replicas, a replica
# that died or cannot be reached mid-call (RayActorError: ActorDiedError, ActorUnavailableError),
# its node gone, or a result lost with that node. Each is retryable: Serve starts a replacement.
UNAVAILABLE = (
    BackPressureError,
    DeploymentUnavailableError,
    RayActorError,
    NodeDiedError,
    ObjectLostError,
)


@contextmanager
def domain_errors(stage: str) -> Iterator[None]:
    """Around one handle call to `stage` (a deployment name): Ray's exceptions as the project's."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise BackendUnavailable(
            f"the {stage} stage cannot take requests now ({type(exc).__name__})"
        ) from None
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, Exception) and not isinstance(cause, RayError):
            raise cause from None
        # Ray could not carry the replica's exception itself: an unexpected failure (500), as before.
        raise RuntimeError(f"the {stage} stage failed ({type(cause).__name__})") from None
