"""The model catalog: what each LiangXin model takes, what it costs, how long it runs.

The builtin catalog is `catalog.yaml` (package data). Users may add models or override
entries by id with their own YAML files of the same shape (`load_catalog(extra)`): an entry
replaces the builtin one of the same id, or, with `patch: true`, changes only the keys it
gives (its `fields` replace fields of the same name). Input validation, CSV-cell
coercion and price estimates live in `_validate.py` and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from liangxin_batch.catalog._from_doc import model_from_doc
from liangxin_batch.catalog._specs import (
    ConditionalDefault,
    FieldSpec,
    FieldType,
    ModelSpec,
    PriceRule,
)
from liangxin_batch.catalog._validate import (
    FieldProblem,
    check_field,
    coerce_text,
    describe_price,
    effective_values,
    estimate_credits,
    price_inputs,
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
    "check_field",
    "coerce_text",
    "default_catalog",
    "describe_price",
    "effective_values",
    "estimate_credits",
    "load_catalog",
    "price_inputs",
    "render_model_table",
    "validate_input",
]


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


_Entry = tuple[ModelSpec, dict[str, Any]]


def _parse_file(
    text: str, source: str, base: Mapping[str, _Entry], *, trusted: bool = False
) -> tuple[tuple[float | None, bool | None], list[_Entry]]:
    """Parse one catalog file; `base` holds earlier entries by id (for `patch: true`).
    `trusted`: the builtin file, read without the schema (`_trusted`)."""
    try:
        # YAML 1.2 core schema: an unquoted 16:9 stays text, `no` is not false.
        data = load_yaml12(text)
    except yaml.YAMLError as err:
        raise CatalogError(f"catalog {source}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"catalog {source}: expected a mapping with 'models:' at the top")
    file_values, model_doc = _readers(source, trusted)
    credit_usd, round_up, entries = file_values(data)
    known = dict(base)
    out: list[_Entry] = []
    for i, raw in enumerate(entries):
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
        item = (model_from_doc(model_doc(entry, where), label, where), entry)
        known[ident] = item
        out.append(item)
    return (credit_usd, round_up), out


_FileValues = Callable[[dict[str, Any]], tuple[float | None, bool | None, list[Any]]]
_ModelDoc = Callable[[dict[str, Any], str], Any]


def _readers(source: str, trusted: bool) -> tuple[_FileValues, _ModelDoc]:
    """How a file's top level and its model entries become documents: checked by the
    schema (pydantic, imported only here), or trusted as the builtin file is."""
    if trusted:
        from liangxin_batch.catalog import _trusted

        return _trusted.file_values, lambda entry, _where: _trusted.model_doc(entry)

    from pydantic import ValidationError

    from liangxin_batch.catalog._schema import FileDoc, ModelDoc, pydantic_text

    def file_values(data: dict[str, Any]) -> tuple[float | None, bool | None, list[Any]]:
        try:
            doc = FileDoc.model_validate(data)
        except ValidationError as err:
            raise CatalogError(f"catalog {source}: {pydantic_text(err)}") from None
        return doc.credit_usd, doc.credits_round_up, doc.models

    def model_doc(entry: dict[str, Any], where: str) -> Any:
        try:
            return ModelDoc.model_validate(entry)
        except ValidationError as err:
            raise CatalogError(f"{where}: {pydantic_text(err)}") from None

    return file_values, model_doc


def _builtin_text() -> str:
    return (
        importlib.resources.files(__package__).joinpath("catalog.yaml").read_text(encoding="utf-8")
    )


def load_catalog(extra: Sequence[Path] = ()) -> Catalog:
    """The builtin catalog plus user files; a later entry replaces (or patches) one of its id."""
    entries: dict[str, _Entry] = {}
    (credit_usd, round_up), parsed = _parse_file(_builtin_text(), "builtin", entries, trusted=True)
    entries.update((spec.id, (spec, raw)) for spec, raw in parsed)
    for path in extra:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise CatalogError(f"catalog {path}: cannot read it: {err.strerror or err}") from None
        (usd, rounding), parsed = _parse_file(text, str(path), entries)
        credit_usd = usd if usd is not None else credit_usd
        round_up = rounding if rounding is not None else round_up
        entries.update((spec.id, (spec, raw)) for spec, raw in parsed)
    # Billing is the service's, not one file's: the last word on it applies to every model
    # whose own price does not say.
    models = {
        ident: spec
        if spec.price.round_up is not None
        else dataclasses.replace(
            spec, price=dataclasses.replace(spec.price, round_up=bool(round_up))
        )
        for ident, (spec, _raw) in entries.items()
    }
    return Catalog(models, credit_usd)


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
