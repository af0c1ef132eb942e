"""The model catalog: what each LiangXin model takes, what it costs, how long it runs.

The builtin catalog is `catalog.yaml` (package data). Users may add models or override
entries by id with their own YAML files of the same shape (`load_catalog(extra)`): an entry
replaces the builtin one of the same id, or, with `patch: true`, changes only the keys it
gives (its `fields` replace fields of the same name). Input validation, CSV-cell
coercion and price estimates live in `_validate.py` and are re-exported here.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from liangxin_batch.catalog._validate import (
    FieldProblem,
    coerce_text,
    describe_price,
    effective_values,
    estimate_credits,
    validate_input,
)
from liangxin_batch.catalog._yaml12 import load_yaml12
from liangxin_batch.errors import CatalogError

__all__ = [
    "Catalog",
    "ConditionalDefault",
    "FieldProblem",
    "FieldSpec",
    "FieldType",
    "ModelSpec",
    "PriceRule",
    "coerce_text",
    "default_catalog",
    "describe_price",
    "effective_values",
    "estimate_credits",
    "load_catalog",
    "render_model_table",
    "validate_input",
]

FieldType = Literal[
    "string", "integer", "number", "boolean", "url_list", "string_list", "object_list"
]


@dataclass(frozen=True, slots=True)
class ConditionalDefault:
    """A default that changes with another field (kling: sound is on with multi_shots)."""

    field: str
    value: Any
    default: Any


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One input field of a model.

    Stringly-typed numbers (kling `duration`, imagen4-fast `num_images`, imagen4-ultra
    `seed`) are `type: string`: the service wants "5", not 5.
    """

    name: str
    type: FieldType
    required: bool = False
    default: Any = None  # what the service assumes when omitted; documentation/plan only
    enum: tuple[Any, ...] | None = None
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_items: int | None = None
    max_items: int | None = None
    item_max_length: int | None = None
    description: str = ""
    doubt: str | None = None
    required_if: str | None = None  # required when this boolean field is true
    required_unless: str | None = None  # required unless this boolean field is true
    default_if: ConditionalDefault | None = None
    item_fields: Mapping[str, FieldSpec] | None = None  # object_list: the keys of each item


@dataclass(frozen=True, slots=True)
class PriceRule:
    """Credits per task. `by_field` keys are "field" or "a+b"; values "v" or "v+w" (booleans
    as true/false); a later matching entry overrides an earlier one and the base."""

    credits: float
    by_field: Mapping[str, Mapping[str, float]] = _field(default_factory=dict)
    per_second_field: str | None = None  # video: credits are multiplied by int(input[field])
    note: str = ""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model; `source` is "builtin" or the user catalog file that added or changed it."""

    id: str
    name: str
    kind: Literal["image", "video"]
    fields: Mapping[str, FieldSpec]
    price: PriceRule
    typical_seconds: float
    aliases: tuple[str, ...] = ()
    outputs_per_task: int = 1
    doubt: str | None = None
    source: str = "builtin"


class Catalog:
    """Models keyed by id; lookup by id or alias."""

    __slots__ = ("_by_name", "credit_usd", "models")

    def __init__(self, models: Mapping[str, ModelSpec], credit_usd: float | None = None) -> None:
        self.models: Mapping[str, ModelSpec] = MappingProxyType(dict(models))
        self.credit_usd = credit_usd
        by_name: dict[str, ModelSpec] = {}
        for spec in self.models.values():
            for name in (spec.id, *spec.aliases):
                other = by_name.get(name)
                if other is not None and other.id != spec.id:
                    raise CatalogError(
                        f"catalog ({spec.source}): model {spec.id!r}: name {name!r} "
                        f"is already used by model {other.id!r} ({other.source})"
                    )
                by_name[name] = spec
        self._by_name = by_name

    def get(self, name: str) -> ModelSpec | None:
        return self._by_name.get(name)

    def suggest(self, name: str) -> list[str]:
        """Near misses for an unknown model name: other case, close spelling, substring."""
        lowered = {n.lower(): n for n in self._by_name}
        key = name.strip().lower()
        found: list[str] = []
        if key in lowered:
            found.append(lowered[key])
        found += [
            lowered[m] for m in difflib.get_close_matches(key, list(lowered), n=5, cutoff=0.6)
        ]
        if len(key) >= 3:
            found += [n for low, n in lowered.items() if key in low]
        return list(dict.fromkeys(found))[:5]

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._by_name


# ---- file schema (pydantic): checks the shape of a catalog file --------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _CondDefaultDoc(_Strict):
    field: str
    value: Any
    default: Any


class _FieldDoc(_Strict):
    type: FieldType
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_items: int | None = None
    max_items: int | None = None
    item_max_length: int | None = None
    description: str = ""
    doubt: str | None = None
    required_if: str | None = None
    required_unless: str | None = None
    default_if: _CondDefaultDoc | None = None
    item_fields: dict[str, _FieldDoc] | None = None


class _PriceDoc(_Strict):
    credits: float
    by_field: dict[str, dict[str, float]] = {}
    per_second_field: str | None = None
    note: str = ""


class _ModelDoc(_Strict):
    id: str
    name: str
    kind: Literal["image", "video"]
    aliases: list[str] = []
    typical_seconds: float
    outputs_per_task: int = 1
    doubt: str | None = None
    price: _PriceDoc
    fields: dict[str, _FieldDoc]


class _FileDoc(_Strict):
    credit_usd: float | None = None
    models: list[dict[str, Any]] = []  # each entry checked separately, so errors can name its id


_TYPE_CHECK: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


def _field_from_doc(name: str, doc: _FieldDoc, where: str) -> FieldSpec:
    check = _TYPE_CHECK.get(doc.type)
    for value in doc.enum or ():
        if check is not None and not check(value):
            hint = " (quote it)" if doc.type == "string" else ""
            raise CatalogError(
                f"{where}: field {name!r}: enum value {value!r} is not a {doc.type}{hint}"
            )
    if doc.enum is not None and doc.default is not None and doc.default not in doc.enum:
        raise CatalogError(f"{where}: field {name!r}: default {doc.default!r} is not in its enum")
    if doc.item_fields is not None and doc.type != "object_list":
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
    return FieldSpec(
        name=name,
        type=doc.type,
        required=doc.required,
        default=doc.default,
        enum=tuple(doc.enum) if doc.enum is not None else None,
        min_length=doc.min_length,
        max_length=doc.max_length,
        minimum=doc.minimum,
        maximum=doc.maximum,
        min_items=doc.min_items,
        max_items=doc.max_items,
        item_max_length=doc.item_max_length,
        description=doc.description.strip(),
        doubt=doc.doubt.strip() if doc.doubt else None,
        required_if=doc.required_if,
        required_unless=doc.required_unless,
        default_if=ConditionalDefault(cond.field, cond.value, cond.default) if cond else None,
        item_fields=items,
    )


def _model_from_doc(doc: _ModelDoc, source: str, where: str) -> ModelSpec:
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
        ),
        typical_seconds=doc.typical_seconds,
        aliases=tuple(doc.aliases),
        outputs_per_task=doc.outputs_per_task,
        doubt=" ".join(doc.doubt.split()) if doc.doubt else None,
        source=source,
    )


def _pydantic_text(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


_Entry = tuple[ModelSpec, dict[str, Any]]


def _parse_file(
    text: str, source: str, base: Mapping[str, _Entry]
) -> tuple[float | None, list[_Entry]]:
    """Parse one catalog file; `base` holds earlier entries by id (for `patch: true`)."""
    try:
        # YAML 1.2 core schema: an unquoted 16:9 stays text, `no` is not false.
        data = load_yaml12(text)
    except yaml.YAMLError as err:
        raise CatalogError(f"catalog {source}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"catalog {source}: expected a mapping with 'models:' at the top")
    try:
        file_doc = _FileDoc.model_validate(data)
    except ValidationError as err:
        raise CatalogError(f"catalog {source}: {_pydantic_text(err)}") from None
    known = dict(base)
    out: list[_Entry] = []
    for i, raw in enumerate(file_doc.models):
        ident = raw.get("id")
        where = f"catalog {source}: model {ident!r}" if ident else f"catalog {source}: models[{i}]"
        if not isinstance(ident, str):
            raise CatalogError(f"{where}: each model needs a string 'id'")
        entry = dict(raw)
        label = source
        if entry.pop("patch", False) is True:
            # A patch changes only the keys it gives; its fields replace fields of that name.
            if ident not in known:
                raise CatalogError(f"{where}: 'patch: true' but no earlier catalog has this id")
            prev_spec, prev = known[ident]
            fields = entry.pop("fields", {})
            if not isinstance(fields, dict):
                raise CatalogError(f"{where}: fields: expected a mapping of field name -> spec")
            entry = {**prev, **entry, "fields": {**prev.get("fields", {}), **fields}}
            label = f"{source} (patch of {prev_spec.source})"
        try:
            doc = _ModelDoc.model_validate(entry)
        except ValidationError as err:
            raise CatalogError(f"{where}: {_pydantic_text(err)}") from None
        item = (_model_from_doc(doc, label, where), entry)
        known[ident] = item
        out.append(item)
    return file_doc.credit_usd, out


def _builtin_text() -> str:
    return (
        importlib.resources.files(__package__).joinpath("catalog.yaml").read_text(encoding="utf-8")
    )


def load_catalog(extra: Sequence[Path] = ()) -> Catalog:
    """The builtin catalog plus user files; a later entry replaces (or patches) one of its id."""
    entries: dict[str, _Entry] = {}
    credit_usd, parsed = _parse_file(_builtin_text(), "builtin", entries)
    entries.update((spec.id, (spec, raw)) for spec, raw in parsed)
    for path in extra:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise CatalogError(f"catalog {path}: cannot read it: {err.strerror or err}") from None
        usd, parsed = _parse_file(text, str(path), entries)
        credit_usd = usd if usd is not None else credit_usd
        entries.update((spec.id, (spec, raw)) for spec, raw in parsed)
    return Catalog({ident: spec for ident, (spec, _raw) in entries.items()}, credit_usd)


@functools.cache
def default_catalog() -> Catalog:
    """The builtin catalog, loaded once."""
    return load_catalog()


def _credit_range(spec: ModelSpec) -> str:
    rule = spec.price
    values = [c for table in rule.by_field.values() for c in table.values()] or [rule.credits]
    low, high = min(values), max(values)
    unit = "/s" if rule.per_second_field else ""
    return f"{low:g}{unit}" if low == high else f"{low:g}–{high:g}{unit}"


def render_model_table(catalog: Catalog) -> str:
    """A Markdown table of the catalog for the README (required fields marked *)."""
    usd = catalog.credit_usd
    head = "| model id | name | kind | fields (* required) | credits (defaults) | range |"
    if usd:
        head += " USD (defaults) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for spec in catalog:
        names = ", ".join(
            f"`{f.name}`*" if f.required or f.required_unless or f.required_if else f"`{f.name}`"
            for f in spec.fields.values()
        )
        credits = estimate_credits(spec, {})
        flag = " [!]" if spec.doubt else ""
        row = (
            f"| `{spec.id}`{flag} | {spec.name} | {spec.kind} | {names} | {credits:g} "
            f"| {_credit_range(spec)} |"
        )
        if usd:
            row += f" ${credits * usd:.4g} |"
        lines.append(row)
    return "\n".join(lines) + "\n"
