"""from_mapping: strict types, range checks, and errors that name the variable or key at fault."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from embedder.config import BatchConfig, EncoderConfig, SessionConfig
from engine.scheduler import SchedulerConfig
from index.faiss_index import IndexConfig
from service.config import ServingConfig
from settings.loader import ConfigError, from_mapping


@dataclass(frozen=True)
class _Optionals:
    name: str | None = "x"
    count: int | None = 3
    ratio: float | None = 0.5


def test_bad_int_in_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_SESSION_THREADS", "abc")
    with pytest.raises(ConfigError) as err:
        from_mapping(SessionConfig, None, "QM_SESSION_")
    assert str(err.value) == "environment variable QM_SESSION_THREADS='abc': expected an integer"
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("value", ["2.5", "", "true"])
def test_other_non_integers_in_environment_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("QM_BATCH_BATCH_TOKENS", value)
    with pytest.raises(
        ConfigError, match=r"^environment variable QM_BATCH_BATCH_TOKENS=.*expected an integer"
    ):
        from_mapping(BatchConfig, None, "QM_BATCH_")


def test_bad_mapping_value_names_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"^SessionConfig\.threads='abc' \(from mapping\): expected an integer"
    ):
        from_mapping(SessionConfig, {"threads": "abc"})
    with pytest.raises(
        ConfigError, match=r"BatchConfig\.batch_tokens=2\.5 \(from mapping\): expected an integer"
    ):
        from_mapping(BatchConfig, {"batch_tokens": 2.5})
    with pytest.raises(ConfigError, match=r"BatchConfig\.batch_tokens=True .*got a boolean"):
        from_mapping(BatchConfig, {"batch_tokens": True})
    with pytest.raises(ConfigError, match=r"ServingConfig\.api_key=123 \(from mapping\): expected a string"):
        from_mapping(ServingConfig, {"api_key": 123})
    with pytest.raises(ConfigError, match=r"ServingConfig\.body_timeout_s=inf .*finite"):
        from_mapping(ServingConfig, {"body_timeout_s": float("inf")})


def test_integral_floats_and_numeric_strings_are_integers() -> None:
    assert from_mapping(BatchConfig, {"batch_tokens": 2048.0, "max_batch_size": "8"}) == BatchConfig(2048, 8)


def test_misspelt_boolean_in_environment_is_refused_with_the_accepted_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QM_SESSION_CUDA_TF32", "ture")
    with pytest.raises(ConfigError) as err:
        from_mapping(SessionConfig, None, "QM_SESSION_")
    message = str(err.value)
    assert message.startswith("environment variable QM_SESSION_CUDA_TF32='ture': expected a boolean")
    for word in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        assert word in message


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" Yes ", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("OFF", False),
        ("0", False),
    ],
)
def test_boolean_words_are_accepted_case_insensitively(
    monkeypatch: pytest.MonkeyPatch, word: str, expected: bool
) -> None:
    monkeypatch.setenv("QM_SESSION_ALLOW_SPINNING", word)
    assert from_mapping(SessionConfig, None, "QM_SESSION_").allow_spinning is expected


def test_non_boolean_mapping_value_for_a_boolean_is_refused() -> None:
    assert from_mapping(SessionConfig, {"cuda_tf32": False}).cuda_tf32 is False
    assert from_mapping(SessionConfig, {"cuda_tf32": "off"}).cuda_tf32 is False
    with pytest.raises(ConfigError, match=r"SessionConfig\.cuda_tf32=3 \(from mapping\): expected a boolean"):
        from_mapping(SessionConfig, {"cuda_tf32": 3})


def test_out_of_range_mapping_value_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(BatchConfig, {"batch_tokens": 0})
    assert str(err.value) == "BatchConfig.batch_tokens=0 (from mapping): must be >= 1"
    with pytest.raises(ConfigError, match=r"^SessionConfig\.threads=-1 \(from mapping\): must be >= 0"):
        from_mapping(EncoderConfig, {"session": {"threads": -1}})
    with pytest.raises(ConfigError, match=r"SessionConfig\.graph_optimization='max' .*one of"):
        from_mapping(SessionConfig, {"graph_optimization": "max"})
    with pytest.raises(ConfigError, match=r"SessionConfig\.providers=.*unknown execution provider 'rocm'"):
        from_mapping(SessionConfig, {"providers": ["cuda", "rocm"]})


def test_out_of_range_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_SESSION_DEVICE_ID", "-1")
    with pytest.raises(ConfigError) as err:
        from_mapping(SessionConfig, None, "QM_SESSION_")
    assert (
        str(err.value)
        == "environment variable QM_SESSION_DEVICE_ID='-1' (SessionConfig.device_id): must be >= 0"
    )


def test_direct_construction_is_range_checked_too() -> None:
    with pytest.raises(ValueError, match=r"BatchConfig\.max_batch_size=0: must be >= 1"):
        BatchConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="unknown execution provider 'rocm'"):
        SessionConfig(providers=("rocm",))


def test_post_init_errors_of_other_configs_are_wrapped_with_their_sources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QM_SERVE_MAX_REQUEST_TOKENS", "100")
    with pytest.raises(ConfigError) as err:
        from_mapping(ServingConfig, {"max_queued_tokens": 10, "api_key": "k"}, "QM_SERVE_")
    message = str(err.value)
    assert "max_queued_tokens must be >= max_request_tokens" in message
    assert "ServingConfig.max_queued_tokens=10 (from mapping)" in message
    assert "environment variable QM_SERVE_MAX_REQUEST_TOKENS='100'" in message
    assert "api_key" not in message  # not involved
    monkeypatch.setenv("QM_SCHED_PASS_TOKENS", "0")
    with pytest.raises(ConfigError, match=r"pass_tokens must be >= 1.*QM_SCHED_PASS_TOKENS='0'"):
        from_mapping(SchedulerConfig, None, "QM_SCHED_")


def test_nested_prefix_reaches_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_ENC_BATCH_BATCH_TOKENS", "4096")
    monkeypatch.setenv("QM_ENC_SESSION_PROVIDERS", "cuda, cpu")
    monkeypatch.setenv("QM_ENC_VERIFY_FINGERPRINT", "no")
    cfg = from_mapping(EncoderConfig, None, "QM_ENC_")
    assert cfg.batch == BatchConfig(batch_tokens=4096, max_batch_size=16)
    assert cfg.session.providers == ("cuda", "cpu")
    assert cfg.verify_fingerprint is False
    monkeypatch.setenv("QM_SCHED_BATCH_MAX_BATCH_SIZE", "0")
    with pytest.raises(ConfigError, match=r"^environment variable QM_SCHED_BATCH_MAX_BATCH_SIZE='0'"):
        from_mapping(SchedulerConfig, {"batch": {"batch_tokens": 64}}, "QM_SCHED_")


def test_nested_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"EncoderConfig\.batch=3 \(from mapping\): expected a mapping"):
        from_mapping(EncoderConfig, {"batch": 3})


def test_optionals_take_none_from_mapping_and_none_words_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert from_mapping(_Optionals, {"name": None, "count": None, "ratio": None}) == _Optionals(
        None, None, None
    )
    monkeypatch.setenv("QM_OPT_NAME", "")
    monkeypatch.setenv("QM_OPT_COUNT", "None")
    monkeypatch.setenv("QM_OPT_RATIO", "null")
    assert from_mapping(_Optionals, None, "QM_OPT_") == _Optionals(None, None, None)
    monkeypatch.setenv("QM_OPT_NAME", "abc")
    monkeypatch.setenv("QM_OPT_COUNT", "7")
    monkeypatch.setenv("QM_OPT_RATIO", "0.25")
    assert from_mapping(_Optionals, None, "QM_OPT_") == _Optionals("abc", 7, 0.25)
    monkeypatch.setenv("QM_OPT_COUNT", "seven")
    with pytest.raises(ConfigError, match=r"^environment variable QM_OPT_COUNT='seven': expected an integer"):
        from_mapping(_Optionals, None, "QM_OPT_")


def test_unknown_key_is_still_refused() -> None:
    with pytest.raises(ConfigError, match=r"SessionConfig: unknown setting.*'thread'.*known"):
        from_mapping(SessionConfig, {"thread": 2})
    with pytest.raises(ConfigError, match=r"BatchConfig: unknown setting.*'tokens'"):
        from_mapping(EncoderConfig, {"batch": {"tokens": 2}})


def test_index_config_from_mapping_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_INDEX_NPROBE", "16")
    cfg = from_mapping(IndexConfig, {"target_recall": 0.98, "nprobe": 4}, "QM_INDEX_")
    assert (cfg.nprobe, cfg.target_recall, cfg.seed) == (16, 0.98, IndexConfig.seed)
    monkeypatch.setenv("QM_INDEX_TARGET_RECALL", "high")
    with pytest.raises(ConfigError, match="QM_INDEX_TARGET_RECALL='high': expected a number"):
        from_mapping(IndexConfig, None, "QM_INDEX_")


def test_storage_retries_and_the_job_lease_come_from_the_environment_through_the_config_system(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Read when used, not at import, and a bad value names its variable (was a bare ValueError at import)."""
    import storage
    from jobs.embed_corpus.cli import parse_args

    storage.retry_config.cache_clear()
    monkeypatch.setenv("QM_STORAGE_RETRIES", "5")
    assert storage.retry_config().retries == 5
    storage.retry_config.cache_clear()
    monkeypatch.setenv("QM_STORAGE_RETRIES", "many")
    with pytest.raises(ConfigError, match="QM_STORAGE_RETRIES='many': expected an integer"):
        storage.retry_config()
    storage.retry_config.cache_clear()
    monkeypatch.delenv("QM_STORAGE_RETRIES")
    monkeypatch.setenv("QM_JOB_LEASE_TTL_SECONDS", "120")
    assert parse_args(["--artifact", "a", "--input", "i", "--output", "o"]).lease_ttl_seconds == 120.0
