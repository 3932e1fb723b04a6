"""Serving limits: every HTTP-facing tunable, with its default and the arithmetic behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from settings.loader import COMMAND_LINE, from_mapping

# Measured on the smallest supported node (2 cores, AVX2, no GPU): the fp32 MiniLM-L6 encoder
# computes about 5,500 real tokens/s. Every limit below is chosen against that figure so that
# the largest request the limits allow still finishes inside the request timeout.
SMALLEST_NODE_TOKENS_PER_S = 5_500


# ServingConfig fields a client needs to know to stay inside the limits (listed by /info).
CLIENT_LIMITS = ("max_inputs", "max_request_tokens", "max_body_bytes", "max_top_k", "request_timeout_s")


@dataclass(frozen=True)
class ServingConfig:
    """HTTP-facing limits; settable from build_app args, YAML and QM_SERVE_* environment variables."""

    # Texts per request. OpenAI's own cap; LangChain's OpenAIEmbeddings sends 1,000 by default.
    max_inputs: int = 2048
    # Real tokens per request (after truncation). 65,536 tokens take ~12 s alone at 5,500
    # tokens/s: finishes well inside request_timeout_s even while sharing the model.
    max_request_tokens: int = 65_536
    # Real tokens admitted into the model queue at once (per service replica); beyond it a
    # request gets 429 at once instead of waiting. 131,072 tokens are ~24 s of work at 5,500
    # tokens/s; the model scheduler serves queued requests round-robin, so even the last
    # admitted one finishes in <= ~24 s < request_timeout_s (30 s), and a one-text request
    # waits for at most one model pass, whatever large requests are queued.
    max_queued_tokens: int = 131_072
    # Requests one replica works on at once (body already read) before answering 429.
    max_in_flight: int = 256
    # Request body bytes: 2,048 texts of ~1.5 KB, or 2,048 token-id lists of 256 ids, fit.
    max_body_bytes: int = 4_000_000
    # Seconds to receive the whole body; a client trickling bytes gets 408 and holds nothing
    # meanwhile (the in-flight slot is taken only after the body is complete). 4 MB in 10 s
    # needs 3.2 Mbit/s.
    body_timeout_s: float = 10.0
    # End-to-end deadline per request after the body is read (408 after it); a client may ask
    # for less with X-Timeout-Seconds.
    request_timeout_s: float = 30.0
    # Seconds a client is told to wait (Retry-After) after 429/503.
    retry_after_s: int = 1
    # Bearer key required on the API routes when non-empty (probes and the page stay open).
    api_key: str = ""
    # /match bounds.
    max_top_k: int = 100
    # Seconds between readiness probe attempts until the first one passes.
    probe_interval_s: float = 1.0

    def client_limits(self) -> dict[str, Any]:
        """The limits a client must respect (/info shows these, straight from this object)."""
        return {name: getattr(self, name) for name in CLIENT_LIMITS}

    def __post_init__(self) -> None:
        positive = (
            "max_inputs",
            "max_request_tokens",
            "max_queued_tokens",
            "max_in_flight",
            "max_body_bytes",
            "body_timeout_s",
            "request_timeout_s",
            "max_top_k",
            "probe_interval_s",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"ServingConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.retry_after_s < 0:
            raise ValueError(f"ServingConfig.retry_after_s must be >= 0, got {self.retry_after_s!r}")
        if self.max_queued_tokens < self.max_request_tokens:
            raise ValueError(
                "ServingConfig.max_queued_tokens must be >= max_request_tokens "
                f"({self.max_queued_tokens} < {self.max_request_tokens}): the largest request could never run"
            )


# Environment prefix of ServingConfig fields (QM_SERVE_API_KEY, QM_SERVE_MAX_INPUTS, ...).
SERVING_ENV_PREFIX = "QM_SERVE_"


def serving_config(data: dict[str, Any] | None, flags: dict[str, Any] | None = None) -> ServingConfig:
    """ServingConfig: defaults < `data` (YAML, Serve args) < QM_SERVE_<FIELD> < `flags` (command line)."""
    return from_mapping(
        ServingConfig, data, env_prefix=SERVING_ENV_PREFIX, overrides=flags, overrides_from=COMMAND_LINE
    )
