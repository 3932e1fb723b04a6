"""The `auth` section is validated once: a bad entry fails build_app / `python -m service` with one line
naming it, and a valid one resolves to the key table requests are checked against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deployments.app_settings import AppArgsError, auth_user_config
from service.__main__ import build, parse_args
from service.auth import KeyTable, auth_config, load_auth_file
from service.config import ServingConfig
from testkit.keys import key_entry, new_key

H1, H2 = new_key()[1], new_key()[1]


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        (
            [key_entry("shop", H1[:40])],
            "auth.keys[0] ('shop'): sha256 must be 64 lower-case hex characters (got 40",
        ),
        ([key_entry("shop", "z" * 64)], "auth.keys[0] ('shop'): sha256 must be 64"),
        ([key_entry("a", H1), key_entry("a", H2)], "auth.keys[1] ('a'): name already used by keys[0]"),
        ([key_entry("a", H1), key_entry("b", H1)], "auth.keys[1] ('b'): the same sha256 as keys[0]"),
        (
            [key_entry("a", H1, routes=["/match", "/search"])],
            "auth.keys[0] ('a'): unknown route(s) ['/search']",
        ),
        ([key_entry("a", H1, [])], "auth.keys[0] ('a'): collections is empty"),
        ([key_entry("a b", H1)], "auth.keys[0] ('a b'): name must be"),
        ([key_entry("a", H1, weight=0)], "auth.keys[0] ('a'): weight:"),
        ([{**key_entry("a", H1), "key": "plain"}], "auth.keys[0] ('a'): key: Extra inputs"),
        ([{"name": "a", "sha256": H1}], "auth.keys[0] ('a'): collections: Field required"),
    ],
)
def test_a_bad_entry_is_one_line_naming_it(keys: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(ValueError) as exc:
        auth_config({"keys": keys})
    assert says in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(AppArgsError, match=r"^build_app: auth\.keys\["):  # what build_app answers
        auth_user_config({"keys": keys}, ServingConfig())


def test_upper_case_hex_is_accepted_and_the_callers_mapping_left_alone() -> None:
    entry = key_entry("a", H1.upper())
    config = auth_config({"keys": [entry]})
    assert config.keys[0].sha256 == H1 and entry["sha256"] == H1.upper()


def test_the_api_key_joins_the_table_as_default_and_a_clash_is_refused() -> None:
    key, digest = new_key()
    table = KeyTable("legacy", auth_config({"keys": [key_entry("shop", digest, ["shop"])]}))
    assert table.names == ["default", "shop"]
    assert table.identify("Bearer legacy").admin  # type: ignore[union-attr]
    assert table.identify(f"Bearer {key}").name == "shop"  # type: ignore[union-attr]
    with pytest.raises(AppArgsError, match="auth key 'default': that name is the api_key's"):
        auth_user_config({"keys": [key_entry("default", digest)]}, ServingConfig(api_key="legacy"))
    assert auth_user_config({"keys": [key_entry("default", digest)]}, ServingConfig()) is not None
    with pytest.raises(AppArgsError, match="auth key 'shop': its sha256 is the api_key's"):
        auth_user_config({"keys": [key_entry("shop", digest)]}, ServingConfig(api_key=key))


def test_no_key_at_all_is_an_open_service() -> None:
    assert KeyTable().identify("").name == "anonymous"  # type: ignore[union-attr]
    assert KeyTable("k").identify("") is None


def test_an_auth_file_of_yaml_or_json_and_a_bad_one_stops_startup_before_any_model(tmp_path: Path) -> None:
    good = tmp_path / "keys.json"
    good.write_text(json.dumps({"keys": [key_entry("shop", H1, ["shop"])]}), encoding="utf-8")
    yml = tmp_path / "keys.yaml"
    yml.write_text(f"keys:\n  - name: shop\n    sha256: {H1}\n    collections: '*'\n", encoding="utf-8")
    assert load_auth_file(good).keys[0].collections == ["shop"]
    assert load_auth_file(yml).keys[0].collections == "*"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"keys:\n  - name: shop\n    sha256: {H1[:10]}\n    collections: '*'\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        build(parse_args(["--artifact", str(tmp_path / "no-such-artifact"), "--auth-file", str(bad)]))
    message = str(exc.value)
    assert message.startswith("python -m service: error: --auth-file ") and "keys[0] ('shop')" in message
    assert "\n" not in message
