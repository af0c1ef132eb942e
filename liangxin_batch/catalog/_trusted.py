"""The builtin catalog's entries made into documents without pydantic.

The builtin file ships with the package and tests/test_catalog.py holds it to the schema
(both readings give the same specs, reprs included), so it need not be checked on every
start: importing pydantic and building the schema's models cost about 0.2 s of CPU that
`validate`, `plan` and `run` paid before reading a row. A user's catalog file still goes
through the schema (`_schema.py`), which says what is wrong with it.

A document here is what `_from_doc.model_from_doc` reads: the spec's fields by name, the
spec's defaults for keys not written, numbers as pydantic leaves them (ints written for
a float field become floats).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from liangxin_batch.catalog._specs import (
    ConditionalDefault,
    FieldSpec,
    ModelSpec,
    PriceRule,
    default_of,
)

__all__ = ["file_values", "model_doc"]

_FLOAT_HINTS = (float, float | None)


_FLOATS: dict[type[Any], frozenset[str]] = {}


def _float_fields(spec: type[Any]) -> frozenset[str]:
    found = _FLOATS.get(spec)
    if found is None:
        hints = typing.get_type_hints(spec)
        found = _FLOATS[spec] = frozenset(n for n, h in hints.items() if h in _FLOAT_HINTS)
    return found


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _doc(
    spec: type[Any], data: Mapping[str, Any], skip: str, **nested: Callable[[Any], Any]
) -> SimpleNamespace:
    floats = _float_fields(spec)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        if f.name == skip:
            continue
        if f.name not in data:
            values[f.name] = default_of(f)
            continue
        value = data[f.name]
        if f.name in nested and value is not None:
            value = nested[f.name](value)
        elif f.name in floats:
            value = _as_float(value)
        values[f.name] = value
    return SimpleNamespace(**values)


def _field_doc(data: Mapping[str, Any]) -> SimpleNamespace:
    return _doc(
        FieldSpec,
        data,
        "name",  # the key it is written under
        default_if=lambda d: _doc(ConditionalDefault, d, ""),
        item_fields=lambda m: {k: _field_doc(v) for k, v in m.items()},
    )


def _price_doc(data: Mapping[str, Any]) -> SimpleNamespace:
    return _doc(
        PriceRule,
        data,
        "",
        by_field=lambda m: {k: {w: _as_float(c) for w, c in v.items()} for k, v in m.items()},
    )


def model_doc(data: Mapping[str, Any]) -> SimpleNamespace:
    """One model entry of the builtin file as `model_from_doc` reads it."""
    return _doc(
        ModelSpec,
        data,
        "source",  # where it was read from, not something a file says
        fields=lambda m: {k: _field_doc(v) for k, v in m.items()},
        price=_price_doc,
    )


def file_values(data: Mapping[str, Any]) -> tuple[float | None, bool | None, list[Any]]:
    """The builtin file's credit_usd, credits_round_up and model entries."""
    usd = data.get("credit_usd")
    return _as_float(usd), data.get("credits_round_up"), list(data.get("models", []))
