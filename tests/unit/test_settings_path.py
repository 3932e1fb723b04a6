"""One settings path everywhere: flag > environment > config mapping > default, resolved once.

`python -m service` and `python -m embedder` let a flag given beat its QM_* variable; build_app
resolves the app's serving / session / batching sections on the driver, refuses a typo or a bad
value at once in one line naming it, and what replicas rebuild from a user_config ignores their
own environment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from deployments.app import build_app
from deployments.app_settings import (
    AppArgsError,
    batching_user_config,
    resolve_settings,
    serving_from_user_config,
    serving_user_config,
)
from embedder.__main__ import main as embedder_main
from embedder.cli_flags import session_from_flags
from engine.scheduler import SchedulerConfig
from service.__main__ import parse_args, settings
from settings.loader import ConfigError, from_mapping


def test_service_flags_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_SESSION_THREADS", "1")
    monkeypatch.setenv("QM_SERVE_API_KEY", "from-env")
    session, serving = settings(parse_args(["--artifact", "a", "--threads", "3", "--api-key", "from-flag"]))
    assert session.threads == 3 and serving.api_key == "from-flag"
    # No flag: the variable beats the default.
    session, serving = settings(parse_args(["--artifact", "a"]))
    assert session.threads == 1 and serving.api_key == "from-env"


def test_a_refused_service_flag_is_named_as_typed() -> None:
    with pytest.raises(ConfigError, match=r"^--threads -1: must be >= 0"):
        settings(parse_args(["--artifact", "a", "--threads", "-1"]))


def test_embedder_flags_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_SESSION_THREADS", "2")
    monkeypatch.setenv("QM_SESSION_BACKEND", "onnxruntime")
    flags = argparse.Namespace(threads=1, backend=None, precision="fp32")
    session = session_from_flags(flags)
    assert (session.threads, session.backend, session.precision) == (1, "onnxruntime", "fp32")
    # --threads left out: QM_SESSION_THREADS applies (it used to be hidden by a default of 0).
    assert session_from_flags(argparse.Namespace(threads=None, backend=None, precision=None)).threads == 2


def test_python_m_embedder_names_a_bad_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = tmp_path / "in.txt"
    lines.write_text("hello\n", encoding="utf-8")
    argv = [
        "encode",
        str(tmp_path / "no-artifact"),
        "--input",
        str(lines),
        "--output",
        str(tmp_path / "o.npy"),
    ]
    assert embedder_main([*argv, "--threads", "-1"]) == 2
    assert "--threads -1: must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"session": {"thraeds": 1}}, "session: SessionConfig: unknown setting(s) ['thraeds']"),
        ({"session": {"threads": -1}}, "session: SessionConfig.threads=-1"),
        ({"batching": {"pass_tokens": 0}}, "batching: SchedulerConfig.pass_tokens must be >= 1"),
        (
            {"batching": {"batch": {"batch_tokenz": 1}}},
            "batching: BatchConfig: unknown setting(s) ['batch_tokenz']",
        ),
        ({"serving": {"max_inputs": 0}}, "serving: ServingConfig.max_inputs must be > 0"),
        ({"serving": {"max_input": 5}}, "serving: ServingConfig: unknown setting(s) ['max_input']"),
        ({"topolgy": "graph"}, "topolgy: Extra inputs are not permitted"),
        ({"topology": "graf"}, "topology: Input should be 'auto', 'inline', 'graph' or 'fused'"),
    ],
)
def test_build_app_refuses_a_bad_section_at_once_in_one_line(args: dict[str, object], named: str) -> None:
    # The artifact does not exist: the refusal comes first, before any file is read or Ray started.
    with pytest.raises(AppArgsError) as err:
        build_app({"artifact": "no-such-artifact", "topology": "graph", **args})
    message = str(err.value)
    assert message.startswith("build_app: ") and "\n" not in message
    assert named in message, message


def test_build_app_names_a_bad_variable_of_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_SCHED_WORKERS", "two")
    with pytest.raises(
        AppArgsError, match=r"^build_app: batching: environment variable QM_SCHED_WORKERS='two'"
    ):
        build_app({"artifact": "no-such-artifact"})


def test_replicas_rebuild_what_the_driver_resolved_whatever_their_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QM_SERVE_MAX_INPUTS", "7")
    monkeypatch.setenv("QM_SERVE_API_KEY", "secret")
    monkeypatch.setenv("QM_SCHED_PASS_TOKENS", "512")
    resolved = resolve_settings({"max_body_bytes": 5000}, None, {"workers": 2})
    assert resolved.serving.max_inputs == 7 and resolved.serving.max_body_bytes == 5000
    assert resolved.batching.pass_tokens == 512 and resolved.batching.workers == 2
    # A replica's environment says otherwise: what it rebuilds from its user_config does not listen.
    monkeypatch.setenv("QM_SERVE_MAX_INPUTS", "9")
    monkeypatch.setenv("QM_SERVE_API_KEY", "other")
    monkeypatch.setenv("QM_SCHED_PASS_TOKENS", "64")
    ingress = serving_user_config(resolved.serving)
    assert "api_key" not in ingress  # a key from the environment never lands in a user_config
    assert serving_from_user_config(ingress, resolved.serving.api_key) == resolved.serving
    assert from_mapping(SchedulerConfig, batching_user_config(resolved.batching)) == resolved.batching
