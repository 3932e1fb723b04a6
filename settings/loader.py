"""The settings loader: one path from defaults, a config mapping, the environment and flags to a
frozen config dataclass.

Every config class of the project (model session and batching in embedder.config, storage, jobs,
index build, serving, scheduling) is a frozen dataclass with a default and the reason beside each
field; `from_mapping` builds it in one order everywhere: default < config mapping (a YAML file, the
Serve app args) < environment (`QM_<SECTION>_<FIELD>`) < explicit overrides (command-line flags).
A refused value is a ConfigError naming the key, variable or flag it came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

# Accepted spellings of a boolean (compared lower-cased, stripped); anything else is an error.
BOOL_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}
# Environment values that mean "unset" for an optional (`X | None`) setting.
NONE_WORDS = ("", "none", "null")
# The `overrides_from` label of command-line flags: errors then name the flag (`--max-actors 0`).
COMMAND_LINE = "command line"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from (environment variable or key)."""


class FieldValueError(ValueError):
    """A config dataclass refused the value of one field (raised from __post_init__ via `check_field`)."""

    def __init__(self, owner: str, name: str, value: Any, reason: str) -> None:
        super().__init__(f"{owner}.{name}={value!r}: {reason}")
        self.owner, self.name, self.value, self.reason = owner, name, value, reason


def check_field(cfg: Any, name: str, ok: bool, reason: str) -> None:
    """For __post_init__: raise FieldValueError naming `cfg`'s field `name` unless `ok`."""
    if not ok:
        raise FieldValueError(type(cfg).__name__, name, getattr(cfg, name), reason)


def _optional_inner(target: Any) -> Any | None:
    """X for `X | None` / Optional[X], else None."""
    if typing.get_origin(target) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(target) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(target)) == 2:
            return args[0]
    return None


def _coerce(value: Any, target: Any, from_env: bool = False) -> Any:
    """`value` as type `target`; ValueError with a short reason ("expected an integer") when it is not one.

    Environment values are always strings; mapping values may already be typed (YAML, JSON).
    """
    inner = _optional_inner(target)
    if inner is not None:
        if value is None or (from_env and isinstance(value, str) and value.strip().lower() in NONE_WORDS):
            return None
        return _coerce(value, inner, from_env)
    if typing.get_origin(target) is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a comma-separated string or a list of strings, got {_kind(value)}")
        return tuple(value)
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[value.strip().lower()]
        raise ValueError(f"expected a boolean (one of {', '.join(BOOL_WORDS)}; case-insensitive)")
    if target is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError("expected an integer") from None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ValueError(
            "expected an integer" + ("" if isinstance(value, float) else f", got {_kind(value)}")
        )
    if target is float:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError("expected a number") from None
        if not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise ValueError("expected a finite number")
        return float(value)
    if target is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_kind(value)} (quote it in YAML)")
        return value
    return value


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


@dataclass
class _Given:
    """One setting that was supplied (not left at its default), for error messages."""

    owner: str  # the dataclass holding the field
    path: str  # field path from the config being built, e.g. "batch.batch_tokens"
    value: Any
    source: str  # "mapping", "env" or the overrides label
    env_var: str = ""

    def describe(self) -> str:
        if self.source == "env":
            return f"environment variable {self.env_var}={self.value!r}"
        if self.source == COMMAND_LINE:  # spelled as the user typed it
            return f"--{self.path.rsplit('.', 1)[-1].replace('_', '-')} {self.value}"
        return f"{self.owner}.{self.path.rsplit('.', 1)[-1]}={self.value!r} (from {self.source})"


def from_mapping(
    cls: type[T],
    data: Mapping[str, Any] | None,
    env_prefix: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    overrides_from: str = "overrides",
) -> T:
    """Build a config dataclass: defaults < `data` < `env_prefix`+FIELD environment variables < `overrides`.

    Nested dataclass fields read a sub-mapping and the prefix `env_prefix`+FIELD+"_" (e.g.
    SchedulerConfig.batch.batch_tokens <- QM_SCHED_BATCH_BATCH_TOKENS). `overrides` (e.g. command-line
    flags given explicitly) win over everything; `overrides_from` names them in error messages.
    Every refusal is a ConfigError naming the environment variable or key it came from.
    """
    return _build(cls, data, env_prefix, overrides, overrides_from, [])


def _build(
    cls: type[T],
    data: Any,
    env_prefix: str | None,
    overrides: Any,
    overrides_from: str,
    given: list[_Given],
    path: str = "",
) -> T:
    name = cls.__name__
    layers: list[tuple[str, dict[str, Any]]] = []
    for source, raw in (("mapping", data), (overrides_from, overrides)):
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"{name}={raw!r} (from {source}): expected a mapping, got {_kind(raw)}")
        layers.append((source, dict(raw or {})))
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    known = {f.name for f in fields}
    for source, layer in layers:
        unknown = set(layer) - known
        if unknown:
            raise ConfigError(
                f"{name}: unknown setting(s) {sorted(unknown)} (from {source}); known: {sorted(known)}"
            )
    mine: list[_Given] = []
    kwargs: dict[str, Any] = {}
    for f in fields:
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            for source, layer in layers:
                if layer.get(f.name) is not None and not isinstance(layer[f.name], Mapping):
                    raise ConfigError(
                        f"{name}.{f.name}={layer[f.name]!r} (from {source}): expected a mapping of "
                        f"{getattr(hint, '__name__', hint)} settings, got {_kind(layer[f.name])}"
                    )
            sub_prefix = f"{env_prefix}{f.name.upper()}_" if env_prefix else None
            kwargs[f.name] = _build(
                hint,  # type: ignore[arg-type]
                layers[0][1].get(f.name),
                sub_prefix,
                layers[1][1].get(f.name),
                overrides_from,
                mine,
                f"{path}{f.name}.",
            )
            continue
        candidates: list[_Given] = []
        if f.name in layers[0][1]:
            candidates.append(_Given(name, path + f.name, layers[0][1][f.name], "mapping"))
        if env_prefix and (env := os.environ.get(var := f"{env_prefix}{f.name.upper()}")) is not None:
            candidates.append(_Given(name, path + f.name, env, "env", var))
        if f.name in layers[1][1]:
            candidates.append(_Given(name, path + f.name, layers[1][1][f.name], overrides_from))
        for g in candidates:  # every layer must be valid, even one a later layer replaces
            try:
                kwargs[f.name] = _coerce(g.value, hint, from_env=g.source == "env")
            except ValueError as exc:
                raise ConfigError(f"{g.describe()}: {exc}") from None
        if candidates:
            mine.append(candidates[-1])
    missing = [
        f.name
        for f in fields
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        hint_env = (
            f" (nor environment variable(s) {[f'{env_prefix}{m.upper()}' for m in missing]})"
            if env_prefix
            else ""
        )
        raise ConfigError(f"{name}: required setting(s) {missing} not given{hint_env}")
    try:
        result = cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise _refusal(name, path, exc, mine) from None
    given.extend(mine)
    return result


def _refusal(name: str, path: str, exc: ValueError, given: list[_Given]) -> ConfigError:
    """ConfigError for a ValueError from `name`'s __post_init__, naming the settings involved."""
    if isinstance(exc, FieldValueError):
        g = next((g for g in given if g.path == path + exc.name), None)
        if g is not None and g.source == "env":
            return ConfigError(f"{g.describe()} ({exc.owner}.{exc.name}): {exc.reason}")
        if g is not None and g.source == COMMAND_LINE:
            return ConfigError(f"{g.describe()}: {exc.reason}")
        if g is not None:
            return ConfigError(f"{exc.owner}.{exc.name}={exc.value!r} (from {g.source}): {exc.reason}")
    message = str(exc)
    # The settings the message mentions; all that were given when it mentions none of them.
    named = [g for g in given if _mentions(message, g.path)] or given
    involved = ", ".join(g.describe() for g in named) or "none, all defaults"
    prefix = "" if message.startswith(name) else f"{name}: "
    return ConfigError(f"{prefix}{message} (settings given: {involved})")


def _mentions(message: str, path: str) -> bool:
    return any(re.search(rf"\b{re.escape(part)}\b", message) for part in path.split("."))


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file into a dict (empty file -> {})."""
    with open(path, encoding="utf-8") as fh:
        loaded = yaml.safe_load(fh) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return loaded


def as_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config, for recording in outputs that depend on it."""
    return dataclasses.asdict(cfg)
