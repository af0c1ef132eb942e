"""The shape of a catalog file, derived from the spec dataclasses, and the specs built from it.

Each pydantic model here is made from the dataclass it stands for (`_derive`): the same
field names, types and defaults, strict, unknown keys refused. Only what a file writes
differently is said here: a model's field names are keys, not a `name:` entry; lists
where the spec holds tuples; nested entries as their own documents. A field added to a
spec is therefore a key a catalog file may write, with nothing else to keep in step.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from liangxin_batch.catalog._specs import (
    REQUIRED,
    ConditionalDefault,
    FieldSpec,
    ModelSpec,
    PriceRule,
    default_of,
)

__all__ = ["FileDoc", "ModelDoc", "model_document", "pydantic_text"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _derive(
    spec: type[Any], name: str, *, skip: frozenset[str] = frozenset(), **shapes: Any
) -> type[_Strict]:
    """A strict pydantic model with `spec`'s fields and defaults; `shapes` gives the
    in-file type of the fields a file writes differently, `skip` those it never writes."""
    hints = typing.get_type_hints(spec)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        if f.name in skip:
            continue
        default = default_of(f)
        if default is REQUIRED:
            default = ...  # pydantic's "required"
        fields[f.name] = (shapes.get(f.name, hints[f.name]), default)
    unknown = set(shapes) - set(fields)
    if unknown:  # a shape for a field the spec no longer has: say so at import
        raise TypeError(f"{name}: no such field(s) in {spec.__name__}: {sorted(unknown)}")
    return create_model(name, __base__=_Strict, **fields)


def _optional_dict_of(name: str) -> Any:
    """`dict[str, <name>] | None` for a model not made yet (a forward reference)."""
    return typing.Optional[typing.cast(Any, dict)[str, typing.ForwardRef(name)]]  # noqa: UP045


CondDefaultDoc = _derive(ConditionalDefault, "CondDefaultDoc")
FieldDoc = _derive(
    FieldSpec,
    "FieldDoc",
    skip=frozenset({"name"}),  # the key it is written under
    enum=list[Any] | None,
    file_types=list[str] | None,
    default_if=CondDefaultDoc | None,
    item_fields=_optional_dict_of("FieldDoc"),  # recursive: resolved just below
)
FieldDoc.model_rebuild(_types_namespace={"FieldDoc": FieldDoc})
PriceDoc = _derive(PriceRule, "PriceDoc", by_field=dict[str, dict[str, float]])
ModelDoc = _derive(
    ModelSpec,
    "ModelDoc",
    skip=frozenset({"source"}),  # where it was read from, not something a file says
    fields=dict[str, FieldDoc],  # type: ignore[valid-type]
    price=PriceDoc,
    aliases=list[str],
)


class FileDoc(_Strict):
    credit_usd: float | None = None
    credits_round_up: bool | None = None
    models: list[dict[str, Any]] = []  # each entry checked separately, so errors can name its id


def _keys() -> list[str]:
    """Every key a catalog file may use, for "did you mean" on a misspelt one."""
    docs = (FileDoc, ModelDoc, FieldDoc, PriceDoc)
    return sorted({name for doc in docs for name in doc.model_fields})


def _error_text(e: Any) -> str:
    """One pydantic error in the words the rest of the tool uses."""
    kind, given = e["type"], e.get("input")
    got = f"; got {given!r}" if not isinstance(given, dict | list) else ""
    if kind == "extra_forbidden":
        key = str(e["loc"][-1]) if e["loc"] else ""
        near = difflib.get_close_matches(key, _keys(), n=1, cutoff=0.7)
        return "unknown key" + (f"; did you mean {near[0]!r}?" if near else "")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(e.get("ctx", {}).get("expected", "")))
        near = difflib.get_close_matches(str(given), choices, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"expected one of {', '.join(choices)}{got}{hint}"
    if kind in ("missing",):
        return "missing (required)"
    words = {
        "float_parsing": "a number",
        "float_type": "a number",
        "int_parsing": "a whole number",
        "int_type": "a whole number",
        "int_from_float": "a whole number",
        "bool_parsing": "true or false",
        "bool_type": "true or false",
        "string_type": "text",
        "dict_type": "a mapping of keys to values",
        "list_type": "a list",
    }
    if kind in words:
        return f"expected {words[kind]}{got}"
    return f"{e['msg']}{got}"


def pydantic_text(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        text = _error_text(e)
        parts.append(f"{loc}: {text}" if loc else text)
    return "; ".join(parts)


#: Fields a file does not write: a field's name is the key it is written under, and a
#: model's source is where it was read from.
_UNWRITTEN = {FieldSpec: {"name"}, ModelSpec: {"source"}}


def _written(value: Any) -> Any:
    """A spec's value as a catalog file writes it: dataclasses as mappings (defaults
    left out), tuples as lists, read-only mappings as plain ones."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skip = _UNWRITTEN.get(type(value), set())
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.name in skip:
                continue
            if item != default_of(f):
                out[f.name] = _written(item)
        return out
    if isinstance(value, tuple | list):
        return [_written(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _written(v) for k, v in value.items()}
    return value


def model_document(spec: ModelSpec) -> dict[str, Any]:
    """`spec` as an entry of a catalog file (`models show NAME --yaml`): loading it back
    gives the same spec."""
    doc = _written(spec)
    return {"id": doc.pop("id"), **doc}
