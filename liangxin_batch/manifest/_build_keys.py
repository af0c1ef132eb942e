"""The job builder's located problems about a record's keys, and how problems collapse.

Apart from `_build` to keep it readable: which model (`model`, `--model`, a near miss),
whether a given id is usable, a key the model does not take, and the model-neutral
`images` key. Each problem names where it was written (`written_at`); identical problems from a
shared place (YAML defaults, a matrix, a column missing from every row) collapse into one
with a count (`ProblemSink`), reported after the jobs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from liangxin_batch.core._records import (
    Job,
    Problem,
    RawJob,
    SourceRef,
    close_match,
    got_text,
    slug_id,
)
from liangxin_batch.manifest._fast import ID_PATTERN

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog, ModelSpec

__all__ = ["IMAGES_KEY", "KeyChecks", "ProblemSink", "same_key", "written_at"]

#: The model-neutral key for a model's list of input images.
IMAGES_KEY = "images"
_ID_EXPECTED = "1-100 letters, digits, '.', '_' or '-', not starting with '.'"
_MAX_PENDING = 10_000  # distinct collapsed problems kept; beyond that they are reported one by one


def written_at(rec: RawJob, key: str) -> SourceRef:
    """Where a key's value was written: its own place (YAML) or the row."""
    if rec.origins is not None:
        found = rec.origins.get(key)
        if found is not None:
            return found
    return SourceRef(rec.source.file, rec.source.line, key)


def same_key(problem: Problem, rec: RawJob) -> tuple[Any, ...] | None:
    """Identical problems from shared places (defaults, matrix, one YAML job) collapse."""
    src = problem.source
    if rec.shared or src.line != rec.source.line or src.file != rec.source.file:
        return ("same", src.file, src.line, problem.field, problem.expected, problem.got)
    return None


class ProblemSink:
    """Problems that stand for many jobs collapse here (by key) until the end."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[tuple[Any, ...], list[Any]] = {}

    def emit(self, out: list[Job | Problem], problem: Problem, key: tuple[Any, ...] | None) -> None:
        """`problem` into `out` now (no key), or counted under `key` for the end; past
        _MAX_PENDING distinct keys, problems go out one by one (memory stays bounded)."""
        if key is None:
            out.append(problem)
            return
        slot = self.pending.get(key)
        if slot is not None:
            slot[1] += 1
        elif len(self.pending) < _MAX_PENDING:
            self.pending[key] = [problem, 1]
        else:
            out.append(problem)

    def collapsed(self) -> Iterator[Problem]:
        """Each collapsed problem once, with how many jobs it stands for."""
        for first, count in self.pending.values():
            yield replace(first, count=count) if count > 1 else first


class KeyChecks:
    """A record's model, id, unknown keys and `images`, each problem located."""

    __slots__ = ("_sink", "catalog", "default_model")

    def __init__(self, sink: ProblemSink, catalog: Catalog, default_model: str | None) -> None:
        self._sink = sink
        self.catalog = catalog
        self.default_model = default_model

    def images_field(
        self, spec: ModelSpec, values: Mapping[str, Any], rec: RawJob, out: list[Job | Problem]
    ) -> str | None:
        """The field the model-neutral `images` key stands for here (None: reported)."""
        target = spec.image_field()
        where = written_at(rec, IMAGES_KEY)
        if target is None:
            p = Problem(
                where,
                IMAGES_KEY,
                "a model that takes input images",
                f"{spec.id}, which takes none",
                "leave images empty for this model, or choose an image-editing model",
            )
            ckey = ("noimages", where.file, spec.id) if rec.keyed else same_key(p, rec)
            self._sink.emit(out, p, ckey)
            return None
        given = values.get(target)
        if given is not None and not (isinstance(given, str) and (not given or given.isspace())):
            p = Problem(
                where,
                IMAGES_KEY,
                f"the input images in one place: images or {target}",
                "both",
                f"keep one of them ({spec.id} calls its images {target})",
            )
            self._sink.emit(out, p, same_key(p, rec))
            return None
        return target

    def given_id(self, raw: Any, rec: RawJob, out: list[Job | Problem]) -> str | bool | None:
        """The given id, None when there is none, False when it is unusable (reported)."""
        if raw is None:
            return None
        text = (
            str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else None
        )
        if text is None or not ID_PATTERN.fullmatch(text):
            slug = (slug_id(str(raw))[:100] or "job") if text is not None else None
            p = Problem(
                written_at(rec, "id"),
                "id",
                f"an id of {_ID_EXPECTED}",
                got_text(raw),
                f"use {slug!r}" if slug else "give text, or leave it out for a derived id",
            )
            self._sink.emit(out, p, same_key(p, rec))
            return False
        return text

    def model(self, raw: Any, rec: RawJob, out: list[Job | Problem]) -> ModelSpec | None:
        given = raw is not None
        if not given:
            raw = self.default_model
        if isinstance(raw, str):
            spec = self.catalog.get(raw.strip())
            if spec is not None:  # the common case: nothing else to do
                return spec
        # Problems only from here: work out where the model was (or should be) written.
        src = rec.source
        where = written_at(rec, "model") if given else SourceRef(src.file, src.line, "model")
        if raw is None:
            p = Problem(
                where,
                "model",
                "a model: a 'model' column or key, defaults: model, or --model",
                "nothing",
                "see `liangxin-batch models` for the ids",
            )
            key = ("nomodel", src.file) if rec.keyed else same_key(p, rec)
        elif not isinstance(raw, str):
            p = Problem(where, "model", "a model id (text)", got_text(raw))
            key = same_key(p, rec)
        else:
            name = raw.strip()
            near = self.catalog.suggest(name)
            hint = (
                f"did you mean {near[0]!r}?" if near else "see `liangxin-batch models` for the ids"
            )
            p = Problem(where, "model", "a model in the catalog", got_text(raw), hint)
            key = ("badmodel", src.file, name) if rec.keyed else same_key(p, rec)
        self._sink.emit(out, p, key)
        return None

    def unknown_field(
        self, key: str, spec: ModelSpec, where: SourceRef, rec: RawJob, out: list[Job | Problem]
    ) -> None:
        takes = ", ".join(spec.fields)
        guess = close_match(key, spec.fields)
        column = rec.header is not None
        if key.startswith("(column "):
            hint = "give the column a header, or remove it"
        elif guess:
            hint = f"did you mean {got_text(guess)}?"
        else:
            hint = f"{spec.id} takes: {takes}"
            if column:
                hint += "; remove the column, or start its name with _ to keep it as a note"
        what = f"{'column' if column else 'key'} {got_text(key)}"
        p = Problem(where, key, f"a field of {spec.id}", what, hint)
        ckey = ("unknown", where.file, spec.id, key) if rec.keyed else same_key(p, rec)
        self._sink.emit(out, p, ckey)
