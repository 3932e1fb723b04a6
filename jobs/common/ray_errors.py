"""Our own error out of Ray's wrappers, so a job fails with the one line the error was written as.

A remote task or actor that raises, say, CorpusError reaches the driver as a RayTaskError (or a
user-code exception chain around it); the jobs print the project error inside, not Ray's traceback.
"""

from __future__ import annotations

import ray

from embedder.errors import EmbedderError


def embedder_cause(exc: BaseException) -> EmbedderError | None:
    """The project error a remote failure carries (Ray wraps it in task / user-code exceptions)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)  # ray.exceptions.RayTaskError keeps the original here
        if isinstance(current, EmbedderError) and not isinstance(current, ray.exceptions.RayError):
            return current
        stack.extend([cause, current.__cause__, current.__context__])
    return None
