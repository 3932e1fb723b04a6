"""Config: mapping + environment overrides, unknown keys refused."""

from __future__ import annotations

import pytest

from embedder.config import EncoderConfig, SessionConfig, from_mapping


def test_mapping_then_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_BATCH_BATCH_TOKENS", "1024")
    monkeypatch.setenv("QM_SESSION_PROVIDERS", "cuda,cpu")
    cfg = from_mapping(EncoderConfig, {"batch": {"max_batch_size": 16}, "session": {"threads": 2}}, "QM_")
    assert cfg.batch.batch_tokens == 1024
    assert cfg.batch.max_batch_size == 16
    assert cfg.session.threads == 2
    assert cfg.session.providers == ("cuda", "cpu")


def test_unknown_setting_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown setting.*'thread'.*known"):
        from_mapping(SessionConfig, {"thread": 2})
