"""Typed dataclasses back from their stored forms: JSON markers, Ray Data result rows.

A shard or a shard's stats crosses process boundaries as JSON (lists for tuples) or as a Ray Data
row (numpy scalars). `from_record` turns either back into the dataclass with plain Python values,
field by field from the dataclass' own annotations, so a field added later needs no second list
here; a field missing from an older record takes its default.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")
PLAIN = (str, int, float, bool)


def from_record(cls: type[T], record: Mapping[str, Any]) -> T:
    """`cls` from a mapping of its fields (extra keys ignored, missing ones at their defaults)."""
    hints = typing.get_type_hints(cls)
    values = {
        f.name: _plain(record[f.name], hints[f.name])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in record
    }
    return cls(**values)


def _plain(value: Any, hint: Any) -> Any:
    if hint in PLAIN:
        return hint(value)
    if typing.get_origin(hint) is tuple:
        (item, *_rest) = typing.get_args(hint)
        return tuple(item(v) if item in PLAIN else v for v in value)
    return value
