"""The /match filter language: parse and validate against a schema, then evaluate to a row mask.

    {"category": "billing"}                                  equality
    {"language": {"in": ["de", "en"]}}                       one of
    {"updated": {"gte": "2024-01-01", "lt": "2025-01-01"}}   range (also gt, lte; eq)
    {"category": "billing", "language": "de"}                several columns: all must hold

Ray-free. Validation needs only the column kinds (index/filter_columns.py), so a request is
refused (InvalidInput naming `filter.<column>`, HTTP 422) before any model work. Evaluation is a
few vectorised numpy compares per condition over the compact columns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedder.errors import InvalidInput
from index.filter_columns import FilterColumn, FilterTable, Kind

OPERATORS = ("eq", "in", "gte", "gt", "lte", "lt")
RANGE_OPERATORS = ("gte", "gt", "lte", "lt")
# An `in` list longer than this is a sign the caller wants another filter column, not a filter.
MAX_IN_VALUES = 1024
_INT64 = np.iinfo(np.int64)


@dataclass(frozen=True)
class Condition:
    """One column's test: equality / membership (values) or a range (bounds), never both."""

    column: str
    kind: Kind
    values: tuple[Any, ...] = ()  # eq / in: str for string columns, int or ISO text otherwise
    bounds: tuple[tuple[str, Any], ...] = ()  # (operator, value) pairs of a range


@dataclass(frozen=True)
class Filter:
    """A validated filter: its conditions, all of which must hold (AND)."""

    conditions: tuple[Condition, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns the filter tests."""
        return tuple(c.column for c in self.conditions)


def parse_filter(spec: Any, schema: Mapping[str, Kind], where: str = "filter") -> Filter:
    """Validate a filter object against the collection's filter columns (raises InvalidInput)."""
    if not isinstance(spec, dict):
        raise InvalidInput(
            f"{where} must be an object of column conditions, got {type(spec).__name__}", field=where
        )
    if not spec:
        raise InvalidInput(f"{where} is empty; leave it out to search every row", field=where)
    conditions = []
    for column, test in spec.items():
        name = f"{where}.{column}"
        if column not in schema:
            have = sorted(schema) or "none: build the index with --filter-columns"
            raise InvalidInput(
                f"{name}: {column!r} is not a filter column of this collection (filter columns: {have})",
                field=name,
            )
        conditions.append(_condition(column, schema[column], test, name))
    return Filter(tuple(conditions))


def _condition(column: str, kind: Kind, test: Any, name: str) -> Condition:
    if not isinstance(test, dict):
        return Condition(column, kind, values=(_value(kind, test, name),))
    if not test:
        raise InvalidInput(f"{name}: an empty condition; use one of {list(OPERATORS)}", field=name)
    unknown = [op for op in test if op not in OPERATORS]
    if unknown:
        raise InvalidInput(
            f"{name}: unknown operator {unknown[0]!r} (use {', '.join(OPERATORS)})", field=name
        )
    ranges = [op for op in test if op in RANGE_OPERATORS]
    points = [op for op in test if op not in RANGE_OPERATORS]
    if points and (ranges or len(points) > 1):
        raise InvalidInput(f"{name}: {points[0]!r} cannot be combined with other operators", field=name)
    if points == ["eq"]:
        return Condition(column, kind, values=(_value(kind, test["eq"], f"{name}.eq"),))
    if points == ["in"]:
        items = test["in"]
        if not isinstance(items, list) or not items:
            raise InvalidInput(f"{name}.in must be a non-empty list of values", field=f"{name}.in")
        if len(items) > MAX_IN_VALUES:
            raise InvalidInput(
                f"{name}.in has {len(items)} values; at most {MAX_IN_VALUES}", field=f"{name}.in"
            )
        return Condition(
            column, kind, values=tuple(_value(kind, v, f"{name}.in[{i}]") for i, v in enumerate(items))
        )
    if kind == "string":
        raise InvalidInput(
            f"{name}: {ranges[0]!r} needs an integer or timestamp column; {column!r} holds strings (use eq or in)",
            field=name,
        )
    bounds = tuple((op, _value(kind, test[op], f"{name}.{op}")) for op in ranges)
    return Condition(column, kind, bounds=bounds)


def _value(kind: Kind, value: Any, name: str) -> Any:
    """A JSON value checked against the column kind (no silent conversions between types)."""
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidInput(f"{name}: expected a string, got {_json_type(value)}", field=name)
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{name}: expected an integer, got {_json_type(value)}", field=name)
        if not _INT64.min < value <= _INT64.max:
            raise InvalidInput(f"{name}: {value} is outside the 64-bit integer range", field=name)
        return value
    if not isinstance(value, str):
        raise InvalidInput(
            f'{name}: expected an ISO 8601 date or time string (e.g. "2024-05-01"), got {_json_type(value)}',
            field=name,
        )
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name}: {value!r} is not an ISO 8601 date or time", field=name) from None
    if parsed.tzinfo is not None:  # stored timestamps are UTC (naive ones are taken as UTC too)
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return np.datetime64(parsed, "ns")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return "a list" if isinstance(value, list) else "an object"


def evaluate(flt: Filter, table: FilterTable) -> np.ndarray:
    """Boolean row mask of the rows every condition holds for."""
    mask = np.ones(table.rows, dtype=bool)
    for cond in flt.conditions:
        column = table.columns[cond.column]
        mask &= _test(cond, column)
    return mask


def _test(cond: Condition, col: FilterColumn) -> np.ndarray:
    if cond.kind == "string":
        codes = [col.codes[v] for v in cond.values if v in col.codes]  # an absent value matches nothing
        if not codes:
            return np.zeros(len(col.values), dtype=bool)
        if len(codes) == 1:
            return col.values == codes[0]
        # One table lookup per row, whatever the list's length. The null code (uint16: 65535,
        # int32: -1, i.e. the table's last slot) always lands on False.
        size = 65_536 if col.values.dtype == np.uint16 else len(col.dictionary) + 1
        lut = np.zeros(size, dtype=bool)
        lut[codes] = True
        return lut[col.values]
    values = [_number(col, v) for v in cond.values]
    if values:
        out = np.isin(col.values, values) if len(values) > 1 else col.values == values[0]
    else:
        out = np.ones(len(col.values), dtype=bool)
        for op, raw in cond.bounds:
            v = _number(col, raw)
            out &= {"gte": np.greater_equal, "gt": np.greater, "lte": np.less_equal, "lt": np.less}[op](
                col.values, v
            )
    if col.nulls is not None:
        out &= ~col.nulls
    return out


def _number(col: FilterColumn, value: Any) -> int:
    """A filter value in the column's storage unit (timestamps: integer ticks of its unit)."""
    if isinstance(value, np.datetime64):
        return int(value.astype(f"datetime64[{col.unit}]").astype(np.int64))
    return int(value)
