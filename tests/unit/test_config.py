"""Config: mapping + environment overrides, unknown keys refused."""

from __future__ import annotations

import pytest

from embedder.config import BatchConfig, EncoderConfig, SessionConfig
from settings.loader import from_mapping


def test_mapping_then_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    # Values that differ from every default, so each assertion can only pass if its layer applied.
    defaults = EncoderConfig()
    monkeypatch.setenv("QM_BATCH_BATCH_TOKENS", "3000")
    monkeypatch.setenv("QM_SESSION_PROVIDERS", "cuda,cpu")
    cfg = from_mapping(
        EncoderConfig, {"batch": {"max_batch_size": 7, "batch_tokens": 99}, "session": {"threads": 3}}, "QM_"
    )
    assert cfg.batch.batch_tokens == 3000 != BatchConfig.batch_tokens  # environment beats mapping
    assert cfg.batch.max_batch_size == 7 != defaults.batch.max_batch_size
    assert cfg.session.threads == 3 != defaults.session.threads
    assert cfg.session.providers == ("cuda", "cpu") != defaults.session.providers


def test_unknown_setting_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown setting.*'thread'.*known"):
        from_mapping(SessionConfig, {"thread": 2})
