"""Checked documents -> specs: what the schema cannot say (references between fields,
price keys naming fields, enum values of the field's type) and the frozen specs.

Free of pydantic: a document is anything with the spec's fields as attributes, a
pydantic model of `_schema` for a user's file or a `_trusted` one for the builtin file.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

from liangxin_batch.catalog._specs import (
    ConditionalDefault,
    FieldSpec,
    FieldType,
    ModelSpec,
    PriceRule,
)
from liangxin_batch.errors import CatalogError

__all__ = ["model_from_doc"]


_TYPE_CHECK: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def _field_from_doc(name: str, doc: Any, where: str) -> FieldSpec:
    kind: FieldType = doc.type
    check = _TYPE_CHECK.get(kind)
    for value in doc.enum or ():
        if check is not None and not check(value):
            hint = " (quote it)" if kind == "string" else ""
            raise CatalogError(
                f"{where}: field {name!r}: enum value {value!r} is not a {kind}{hint}"
            )
    if doc.enum is not None and doc.default is not None and doc.default not in doc.enum:
        raise CatalogError(f"{where}: field {name!r}: default {doc.default!r} is not in its enum")
    if doc.item_fields is not None and kind != "object_list":
        raise CatalogError(f"{where}: field {name!r}: item_fields only fit type object_list")
    cond = doc.default_if
    items = None
    if doc.item_fields is not None:
        items = MappingProxyType(
            {
                k: _field_from_doc(k, v, f"{where}: field {name!r}")
                for k, v in doc.item_fields.items()
            }
        )
    values = {
        f.name: getattr(doc, f.name) for f in dataclasses.fields(FieldSpec) if f.name != "name"
    }
    values.update(
        enum=tuple(doc.enum) if doc.enum is not None else None,
        file_types=tuple(doc.file_types) if doc.file_types is not None else None,
        description=doc.description.strip(),
        doubt=doc.doubt.strip() if doc.doubt else None,
        default_if=ConditionalDefault(cond.field, cond.value, cond.default) if cond else None,
        item_fields=items,
    )
    return FieldSpec(name=name, **values)


def model_from_doc(doc: Any, source: str, where: str) -> ModelSpec:
    """The spec of one checked model entry, or CatalogError for what the schema cannot
    say (references between fields, price keys naming unknown fields)."""
    fields = {name: _field_from_doc(name, f, where) for name, f in doc.fields.items()}
    for f in fields.values():
        for ref in (f.required_if, f.required_unless, f.default_if.field if f.default_if else None):
            if ref is not None and (ref not in fields or fields[ref].type != "boolean"):
                raise CatalogError(
                    f"{where}: field {f.name!r} refers to {ref!r}, not a boolean field"
                )
    price = doc.price
    for key in price.by_field:
        missing = [part for part in key.split("+") if part not in fields]
        if missing:
            raise CatalogError(
                f"{where}: price.by_field names unknown field(s) {', '.join(missing)}"
            )
    if price.per_second_field is not None and price.per_second_field not in fields:
        raise CatalogError(
            f"{where}: price.per_second_field {price.per_second_field!r} is not a field"
        )
    if doc.typical_seconds <= 0 or doc.outputs_per_task < 1:
        raise CatalogError(f"{where}: typical_seconds must be > 0 and outputs_per_task >= 1")
    return ModelSpec(
        id=doc.id,
        name=doc.name,
        kind=doc.kind,
        fields=MappingProxyType(fields),
        price=PriceRule(
            credits=price.credits,
            by_field=MappingProxyType({k: MappingProxyType(v) for k, v in price.by_field.items()}),
            per_second_field=price.per_second_field,
            note=" ".join(price.note.split()),
            round_up=price.round_up,
        ),
        typical_seconds=doc.typical_seconds,
        aliases=tuple(doc.aliases),
        outputs_per_task=doc.outputs_per_task,
        doubt=" ".join(doc.doubt.split()) if doc.doubt else None,
        source=source,
    )
