"""The common tabular row, checked straight from its cells: one column plan per model.

A million-row CSV is almost always a million rows that are fine. Building a `RawJob` for
each and running the general checks costs about 40 µs a row; this path costs a few. A
plan is compiled once per (header, model) and accepts only what it can prove valid by the
general path's own rules (`catalog._validate.check_field`, the same required-field logic,
the same control-character refusal); anything else returns None and takes the general
path (`_build.JobBuilder.build`), which finds and locates the problems. The plan never
decides a problem: it only skips work for rows that have none, so both paths give the
same jobs (a property test holds them to it).
"""

from __future__ import annotations

import re
from collections import Counter
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from liangxin_batch.catalog._catalog import check_field, coerce_text, price_inputs
from liangxin_batch.manifest._guards import CONTROL, has_control
from liangxin_batch.manifest._read import TabularHeader

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog, FieldSpec, ModelSpec

__all__ = ["ID_PATTERN", "Block", "FastRows", "check_block"]

#: A usable job id (the general path's rule; `_build` reports what is wrong with others).
ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_SHORT = 64  # cells up to this long are checked once per distinct text
_MEMO_MAX = 50_000  # distinct texts remembered per column before starting afresh
_BAD = object()
_LIST_TYPES = ("url_list", "string_list", "object_list")


class _Column:
    """How one cell becomes an input value: a length check, or a memo of checked texts."""

    __slots__ = ("at", "high", "low", "memo", "name", "spec", "text_only")

    def __init__(self, at: int, name: str, spec: FieldSpec) -> None:
        self.at = at
        self.name = name
        self.spec = spec
        # Free text (prompts): the value is the cell; only its length can be wrong.
        self.text_only = spec.type == "string" and spec.enum is None
        self.low = spec.min_length or 0
        self.high = spec.max_length
        self.memo: dict[str, Any] = {}

    def value(self, cell: str) -> Any:
        """The field's value for a non-blank cell, or _BAD when the general path must look."""
        if self.text_only:
            n = len(cell)
            if n < self.low or (self.high is not None and n > self.high):
                return _BAD
            return cell
        hit = self.memo.get(cell, _BAD)
        if hit is not _BAD or len(cell) > _SHORT:
            return hit
        try:
            hit = coerce_text(self.spec, cell)
        except ValueError:
            hit = _BAD
        if hit is not _BAD and check_field(self.name, self.spec, hit):
            hit = _BAD
        if len(self.memo) >= _MEMO_MAX:
            self.memo.clear()
        self.memo[cell] = hit
        return hit


class _Plan:
    """The columns of one header as inputs of one model, and its required fields."""

    __slots__ = ("always", "blank_only", "columns", "conditional", "spec")

    def __init__(self, spec: ModelSpec, columns: list[_Column], blank_only: list[int]) -> None:
        self.spec = spec
        self.columns = columns
        # Columns this model does not take (or list cells): fine while empty, as in a
        # manifest that mixes models; a value there is the general path's to report.
        self.blank_only = blank_only
        self.always = [n for n, f in spec.fields.items() if f.required]
        self.conditional = [
            (n, f.required_if, f.required_unless)
            for n, f in spec.fields.items()
            if not f.required and (f.required_if or f.required_unless)
        ]

    def inputs(self, cells: list[str]) -> dict[str, Any] | None:
        for at in self.blank_only:
            cell = cells[at]
            if cell and not cell.isspace():
                return None
        data: dict[str, Any] = {}
        for col in self.columns:
            cell = cells[col.at]
            if not cell or cell.isspace():
                continue  # an empty cell means "not given"
            if col.text_only:  # inline: most cells of a big manifest are free text
                n = len(cell)
                if n < col.low or (col.high is not None and n > col.high):
                    return None
                data[col.name] = cell
                continue
            value = col.memo.get(cell, _BAD)
            if value is _BAD:
                value = col.value(cell)
                if value is _BAD:
                    return None
            data[col.name] = value
        for name in self.always:
            if name not in data:
                return None
        for name, if_true, unless_true in self.conditional:
            if name in data:
                continue
            if (if_true is not None and data.get(if_true) is True) or (
                unless_true is not None and data.get(unless_true) is not True
            ):
                return None
        return data


class FastRows:
    """Checks the rows of one tabular header; `check` gives (model, input, id) or None."""

    def __init__(self, header: TabularHeader, catalog: Catalog, default_model: str | None) -> None:
        self.header = header
        self.catalog = catalog
        self.default_model = default_model
        self.width = len(header.names)
        cols = dict((name, i) for i, name in header.value_cols)
        self.id_at = cols.pop("id", None)
        self.model_at = cols.pop("model", None)
        self.fields = cols
        # Rows of headers the general path has something to say about never come here.
        self.enabled = not (
            header.problems
            or header.input_col is not None
            or header.repeat_col is not None
            or any(CONTROL.search(name) for name in header.names)
        )
        self._plans: dict[str | None, Any] = {}  # model cell as written -> _Plan | None

    def plan(self, written: str | None) -> _Plan | None:
        """The plan for a model cell as written (None: the default model)."""
        plan = self._plans.get(written, _BAD)
        return self._plan(written) if plan is _BAD else plan

    def _plan(self, written: str | None) -> _Plan | None:
        name = written.strip() if written is not None else self.default_model
        spec = self.catalog.get(name) if name else None
        plan: _Plan | None = None
        if spec is not None:
            columns, blank_only = [], []
            for field, at in self.fields.items():
                fs = spec.fields.get(field)
                if fs is None or fs.type in _LIST_TYPES:
                    blank_only.append(at)
                else:
                    columns.append(_Column(at, field, fs))
            plan = _Plan(spec, columns, blank_only)
        if len(self._plans) < 1000:
            self._plans[written] = plan
        return plan

    def check(self, cells: list[str]) -> tuple[ModelSpec, dict[str, Any], str | None] | None:
        if not self.enabled or len(cells) != self.width:
            return None
        if CONTROL.search("\t".join(cells)) is not None:
            return None
        job_id: str | None = None
        if self.id_at is not None:
            cell = cells[self.id_at]
            if cell and not cell.isspace():
                job_id = cell.strip()
                if not ID_PATTERN.fullmatch(job_id):
                    return None
        written: str | None = None
        if self.model_at is not None:
            cell = cells[self.model_at]
            if cell and not cell.isspace():
                written = cell
        plan = self.plan(written)
        if plan is None:
            return None
        data = plan.inputs(cells)
        if data is None:
            return None
        return plan.spec, data, job_id


#: A block of usable ids, NUL-separated (a block has no control characters, so no id
#: holds the separator).
_ID_BLOCK = re.compile(
    r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}(?:\x00[A-Za-z0-9_-][A-Za-z0-9._-]{0,99})*"
)


class Block:
    """Rows that are all valid jobs of one model, each with a given id (ids not yet
    checked for duplicates): what `validate` counts without looking at rows one by one."""

    __slots__ = ("ids", "price_columns", "spec")

    def __init__(
        self,
        spec: ModelSpec,
        ids: list[str],
        price_columns: list[tuple[str, _Column, list[str]]],
    ) -> None:
        self.spec = spec
        self.ids = ids
        self.price_columns = price_columns

    def price_groups(self, start: int, stop: int) -> list[tuple[dict[str, Any], int]]:
        """Rows start..stop grouped by the inputs their price depends on."""
        if not self.price_columns:
            return [({}, stop - start)] if stop > start else []
        counts = Counter(
            zip(*(cells[start:stop] for _, _, cells in self.price_columns), strict=True)
        )
        groups = []
        for texts, n in counts.items():
            data = {}
            for (name, col, _), text in zip(self.price_columns, texts, strict=True):
                if text and not text.isspace():
                    data[name] = text if col.text_only else col.value(text)
            groups.append((data, n))
        return groups


def check_block(fast: FastRows, cells: list[list[str]]) -> Block | None:
    """Rows (as cells) as a Block when C-level checks over whole columns prove every row
    valid, or None (then each row is checked on its own, and the problems found)."""
    if not fast.enabled or fast.id_at is None:
        return None
    if set(map(len, cells)) != {fast.width}:
        return None
    if has_control("\n".join(map("\t".join, cells))):
        return None
    ids = list(map(itemgetter(fast.id_at), cells))
    if not _ID_BLOCK.fullmatch("\x00".join(ids)):
        return None  # a blank, padded or unusable id somewhere
    written: str | None = None
    if fast.model_at is not None:
        models = set(map(itemgetter(fast.model_at), cells))
        if len(models) != 1:
            return None
        written = models.pop()
        if not written or written.isspace():
            written = None
    plan = fast.plan(written)
    if plan is None or plan.conditional:
        return None
    for at in plan.blank_only:
        if "".join(map(itemgetter(at), cells)).strip():
            return None
    present: set[str] = set()
    by_name: dict[str, tuple[_Column, list[str]]] = {}
    for col in plan.columns:
        texts = list(map(itemgetter(col.at), cells))
        blank = texts.count("") + sum(map(str.isspace, texts))
        if blank == 0:
            present.add(col.name)
        if col.text_only:
            longest = max(map(len, texts))
            if col.high is not None and longest > col.high:
                return None
            if col.low and min(map(len, texts)) < col.low:
                return None
        else:
            for text in set(texts):
                if text and not text.isspace() and col.value(text) is _BAD:
                    return None
        by_name[col.name] = (col, texts)
    if any(name not in present for name in plan.always):
        return None
    prices = [(name, *by_name[name]) for name in price_inputs(plan.spec) if name in by_name]
    return Block(plan.spec, ids, prices)
