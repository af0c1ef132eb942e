"""How a YAML manifest's jobs expand: defaults, matrix, list vars, templates and repeat.

`Expander` holds the parts the reader found (`defaults:`, `vars:`, `matrix:`) and turns
one written job into one `RawJob` per combination. The rules are in `_manifest_yaml`'s
docstring; in short: a job's own keys beat matrix beats defaults, a default applies only
where the job's model takes it, and a matrix/vars list expands only jobs that use it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from liangxin_batch.core._records import (
    Problem,
    RawJob,
    SourceRef,
    close_match,
    slug_id,
    value_text,
)
from liangxin_batch.manifest._read import RESERVED, parse_repeat

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog

__all__ = ["MAX_EXPANSION", "Expander", "Located"]

MAX_EXPANSION = 10_000_000  # jobs from one manifest entry; more is a typo, not a plan
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")

Located = tuple[Any, SourceRef]  # a value and where it was written


def _fill(template: str, ctx: Mapping[str, Any], *, for_id: bool) -> str:
    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        text = value_text(ctx[m.group(1)])
        return slug_id(text) if for_id else text

    return _PLACEHOLDER.sub(one, template)


def refs_in(value: Any) -> list[str]:
    if isinstance(value, str) and "{" in value:
        return [m.group(1) for m in _PLACEHOLDER.finditer(value) if m.group(1)]
    return []


class Expander:
    """The manifest-wide parts, and the expansion of one job against them."""

    def __init__(self, catalog: Catalog, default_model: str | None) -> None:
        self.catalog = catalog
        self.default_model = default_model
        self.defaults: dict[str, Any] = {}
        self.default_at: dict[str, SourceRef] = {}
        self.vars: dict[str, list[Located]] = {}  # every var as a list; scalars have one item
        self.var_lists: set[str] = set()
        self.matrix: dict[str, list[Located]] = {}
        self.matrix_at: dict[str, SourceRef] = {}
        self.used: set[str] = set()  # defaults and matrix keys some job used
        self.fields_seen: set[str] = set()  # fields of the models jobs used (for suggestions)

    def expand(
        self,
        values: dict[str, Any],
        where: dict[str, SourceRef],
        notes: dict[str, str],
        at: SourceRef,
        problems: list[Problem] | None,
        *,
        row: RawJob | None = None,
    ) -> Iterator[RawJob | Problem]:
        """Defaults + this job (+ matrix and list vars it uses) -> one RawJob per combination."""
        explicit = set(values)
        merged: dict[str, Any] = {}
        origin: dict[str, SourceRef] = {}
        for key, value in self.defaults.items():
            if key not in explicit:
                merged[key] = value
                origin[key] = self.default_at[key]
        merged.update(values)
        origin.update(where)
        for key in [k for k, v in merged.items() if v is None]:  # `key: null` unsets a default
            del merged[key]
        refs: dict[str, str] = {}  # placeholder -> the key whose template uses it
        for key, value in merged.items():
            for name in refs_in(value):
                refs.setdefault(name, key)
        bad = [name for name in refs if name not in self.vars and name not in self.matrix]
        if bad:
            known = [*self.vars, *self.matrix]
            for name in bad:
                key = refs[name]
                guess = close_match(name, known) if known else None
                hint = (
                    f"did you mean {{{guess}}}?"
                    if guess
                    else (
                        f"define {name} under vars: or matrix:, "
                        f"or write {{{{{name}}}}} for literal braces"
                    )
                )
                yield Problem(
                    origin.get(key, at),
                    key,
                    "a {name} defined under vars: or matrix:",
                    f"{{{name}}}",
                    hint,
                )
            return
        if "model" in self.matrix and "model" not in explicit:
            self.used.add("model")
            models: list[tuple[Any, SourceRef | None]] = list(self.matrix["model"])
        else:
            models = [(merged.get("model"), origin.get("model"))]
        for model, model_at in models:
            yield from self._combinations(
                merged, origin, explicit, refs, model, model_at, notes, at, problems, row
            )

    def _combinations(
        self,
        merged: dict[str, Any],
        origin: dict[str, SourceRef],
        explicit: set[str],
        refs: Mapping[str, str],
        model: Any,
        model_at: SourceRef | None,
        notes: dict[str, str],
        at: SourceRef,
        problems: list[Problem] | None,
        row: RawJob | None,
    ) -> Iterator[RawJob | Problem]:
        name = model if isinstance(model, str) else None
        spec = (
            self.catalog.get(name.strip())
            if name
            else (
                self.catalog.get(self.default_model)
                if self.default_model and model is None
                else None
            )
        )
        known_model = spec is not None
        fields = spec.fields if spec is not None else {}
        self.fields_seen.update(fields)
        base = dict(merged)
        if model_at is not None:
            base["model"] = model
        base_origin = dict(origin)
        if model_at is not None:
            base_origin["model"] = model_at
        # Defaults the model does not take are left out for this job (one defaults: block
        # may serve several models); an unknown model keeps them all (its problem is enough).
        # A default or matrix key counts as used when some job's model takes it, even if
        # that job overrides it: the check is for keys no model takes (typos).
        for key in self.default_at:
            if key in RESERVED or not known_model or key in fields:
                self.used.add(key)
            elif key in base and key not in explicit:
                del base[key]
        dims: list[tuple[str, list[Located], bool]] = []
        for key, located in self.matrix.items():
            if key == "model":
                continue
            is_field = key in fields or (not known_model and key not in refs)
            if key in refs or is_field:
                self.used.add(key)
                if key not in explicit:
                    dims.append((key, located, is_field))
        ctx: dict[str, Any] = {}
        for key, located in self.vars.items():
            if key in self.var_lists:
                if key in refs:
                    dims.append((key, located, False))
            else:
                ctx[key] = located[0][0]
        for key in self.matrix:
            if key in explicit and key in refs:
                ctx[key] = merged.get(key)  # the job's own value stands in for the matrix
        size = math.prod(len(d[1]) for d in dims)
        if size > MAX_EXPANSION:
            yield Problem(
                at,
                None,
                f"at most {MAX_EXPANSION:,} jobs from one entry",
                f"{size:,} combinations of " + ", ".join(d[0] for d in dims),
            )
            return
        for combo in itertools.product(*(d[1] for d in dims)):
            values = dict(base)
            where = dict(base_origin)
            local = dict(ctx)
            for (key, _located, is_field), (value, vat) in zip(dims, combo, strict=True):
                local[key] = value
                if is_field:
                    values[key] = value
                    where[key] = vat
            for key, value in values.items():
                if isinstance(value, str) and ("{" in value or "}}" in value):
                    values[key] = _fill(value, local, for_id=key == "id")
            repeat = 1
            rep_problems = list(problems or ())
            if "repeat" in values:
                if row is not None and row.repeat != 1:
                    repeat = row.repeat
                else:
                    repeat, rbad = parse_repeat(values["repeat"], where.get("repeat", at))
                    if rbad is not None:
                        rep_problems.append(rbad)
                del values["repeat"]
            elif row is not None:
                repeat = row.repeat
            if row is not None:
                columns = dict(row.columns or {})
            else:
                columns = {k: value_text(v) for k, v in values.items()}
                columns.update(notes)
            yield RawJob(
                at,
                values,
                columns,
                origins=where,
                repeat=repeat,
                header=row.header if row is not None else None,
                keyed=row is not None,
                shared=row is None,
                problems=rep_problems or None,
            )

    def unused(self) -> Iterator[Problem]:
        """Defaults and matrix keys that no job took: almost always a misspelt field."""
        for part, keys, at in (
            ("defaults", self.defaults, self.default_at),
            ("matrix", self.matrix, self.matrix_at),
        ):
            for key in keys:
                if key in self.used or key in RESERVED or key == "prompt":
                    continue
                guess = close_match(key, self.fields_seen)
                hint = (
                    f"did you mean {guess!r}?"
                    if guess
                    else (
                        "no job's model takes it"
                        + ("; nor does any job use {" + key + "}" if part == "matrix" else "")
                    )
                )
                yield Problem(
                    at[key],
                    f"{part}.{key}",
                    "a field of a job's model"
                    + (" or a {placeholder} a job uses" if part == "matrix" else ""),
                    f"{key!r}, which no job uses",
                    hint,
                )
