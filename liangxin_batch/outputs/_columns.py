"""The results table's columns: their names, their types, and one job's cells.

A row is the manifest columns under the manifest's own names, then `RESULT_COLUMNS`. A
manifest column named like one of those (only a model field or a YAML variable can be:
the reserved manifest columns and the built-in catalog's fields are not) is kept as
`manifest_<name>`, so the tool's columns keep fixed names and no value is lost.

Two kinds of cells, from the same job: text (results.csv, the csv and xlsx exports: a
value as a spreadsheet shows it, "" for nothing) and typed (parquet, jsonl and
`results()`: int, float, epoch seconds for a timestamp, str, and None for nothing).
Pure functions, written for speed: they run once per job of a million.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from liangxin_batch.core._states import REPORT_LABELS
from liangxin_batch.state._store import JobRow, ReportJob

__all__ = [
    "MANIFEST_PREFIX",
    "RESULT_COLUMNS",
    "RESULT_TYPES",
    "ColumnType",
    "generation_seconds",
    "iso_precise",
    "plan_header",
    "result_cells",
    "text_cells",
    "typed_cells",
    "typed_columns",
]

#: How a column is typed in parquet, jsonl and `results()` (results.csv is all text).
ColumnType = Literal["string", "integer", "float", "timestamp"]

#: The columns the tool adds after the manifest's, with their types (the README's table
#: lists exactly these: a test reads it against a real results.csv).
RESULT_TYPES: dict[str, ColumnType] = {
    "job_id": "string",
    "model_id": "string",
    "status": "string",
    "task_id": "string",
    "attempts": "integer",
    "error_code": "string",
    "error_message": "string",
    "output_paths": "string",
    "output_sha256": "string",
    "result_urls": "string",
    "credits": "float",
    "credits_estimated": "float",
    "submitted_at": "timestamp",
    "completed_at": "timestamp",
    "generation_seconds": "float",
}
RESULT_COLUMNS = tuple(RESULT_TYPES)

#: What a manifest column named like a tool column is kept as.
MANIFEST_PREFIX = "manifest_"


class _FileLike(Protocol):
    @property
    def path(self) -> str | None: ...
    @property
    def sha256(self) -> str | None: ...


def plan_header(
    column_names: Iterable[str], *, reserved: Iterable[str] = ()
) -> tuple[list[str], dict[str, str]]:
    """(header, rename): manifest columns in first-seen order under their own names,
    then RESULT_COLUMNS; only a manifest column named like a tool column (or one of
    `reserved`: the dataset exports' own) is renamed (`manifest_<name>`, again while
    that is taken too)."""
    taken = {*RESULT_COLUMNS, *reserved}
    rename: dict[str, str] = {}
    for name in column_names:
        if name in rename:
            continue
        out = name
        while out in taken:
            out = f"{MANIFEST_PREFIX}{out}"
        rename[name] = out
        taken.add(out)
    return [*rename.values(), *RESULT_COLUMNS], rename


def generation_seconds(job: JobRow | ReportJob) -> float | None:
    """costTime (milliseconds, as recordInfo reports it), else completion - submission."""
    if job.cost_time is not None:
        return job.cost_time / 1000
    if job.completed_at is not None and job.submitted_at is not None:
        return max(0.0, job.completed_at - job.submitted_at)
    return None


# -- text cells --------------------------------------------------------------------

#: The text of each whole second seen (jobs finish many to a second), kept bounded.
_SECONDS: dict[int, str] = {}


def _iso(at: float | None) -> str:
    if at is None:
        return ""
    whole = int(at) if at >= 0 else -1
    # datetime rounds to the microsecond, then drops it: a fraction under 0.999 never
    # rounds up to the next second, so the whole second's text is the same (datetime's
    # formatting cost more than any other cell of a row).
    if whole >= 0 and at - whole < 0.999:
        text = _SECONDS.get(whole)
        if text is None:
            if len(_SECONDS) >= 10_000:
                _SECONDS.clear()
            text = _SECONDS[whole] = _iso_text(whole)
        return text
    return _iso_text(at)


def _iso_text(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_precise(at: float) -> str:
    """ISO-8601 in UTC to the microsecond (the fraction left out when it is 0), for the
    typed exports: the whole second's text comes from `_iso`'s cache."""
    whole, fraction = divmod(round(at * 1_000_000), 1_000_000)
    second = _iso(whole)[:-1]  # without its "Z"
    return f"{second}.{fraction:06d}Z" if fraction else f"{second}Z"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _joined(kept: Sequence[_FileLike]) -> tuple[str, str]:
    """(output_paths, output_sha256), ';'-joined; one file (the usual case) without a join."""
    if len(kept) == 1:
        return kept[0].path or "", kept[0].sha256 or ""
    return ";".join([f.path or "" for f in kept]), ";".join([f.sha256 or "" for f in kept])


def result_cells(job: ReportJob, kept: Sequence[_FileLike]) -> list[str]:
    """The RESULT_COLUMNS of one job as text, in order (`kept`: its current files)."""
    credits = job.credits
    estimated = job.credits_estimated if credits is None else None
    submitted, completed, cost = job.submitted_at, job.completed_at, job.cost_time
    if cost is not None:  # generation_seconds, inline
        seconds = _number(cost / 1000)
    elif completed is not None and submitted is not None:
        seconds = _number(max(0.0, completed - submitted))
    else:
        seconds = ""
    if len(kept) == 1:  # `_joined`, inline: one call less per row of results.csv
        paths, sums = kept[0].path or "", kept[0].sha256 or ""
    else:
        paths, sums = _joined(kept)
    return [
        job.job_id,
        job.model,
        REPORT_LABELS[job.state],
        job.task_id or "",
        str(job.sends),
        job.error_code or "",
        job.error_message or "",
        paths,
        sums,
        ";".join(job.result_urls),
        "" if credits is None else _number(credits),
        "" if estimated is None else _number(estimated),
        _iso(submitted),
        _iso(completed),
        seconds,
    ]


def text_cells(job: ReportJob, kept: Sequence[_FileLike], names: Sequence[str]) -> list[str]:
    """A whole row as text: the manifest columns `names` (header order), then the rest."""
    get = job.columns.get
    row = ["" if (v := get(name)) is None else str(v) for name in names]
    row += result_cells(job, kept)
    return row


# -- typed cells -------------------------------------------------------------------

#: A typed cell: what `RESULT_TYPES` says, a timestamp as epoch seconds, None for nothing.
Cell = str | int | float | None


def typed_cells(job: ReportJob, kept: Sequence[_FileLike], names: Sequence[str]) -> list[Cell]:
    """A whole row, typed: manifest columns as text (str(value), as results.csv writes
    them; None where the job has no such column), then RESULT_COLUMNS by RESULT_TYPES."""
    get = job.columns.get
    row: list[Cell] = [None if (v := get(name)) is None else str(v) for name in names]
    credits = job.credits
    seconds = generation_seconds(job)
    paths, sums = _joined(kept) if kept else (None, None)
    row += [
        job.job_id,
        job.model,
        REPORT_LABELS[job.state],
        job.task_id or None,
        job.sends,
        job.error_code or None,
        job.error_message or None,
        paths,
        sums,
        ";".join(job.result_urls) or None,
        credits,
        job.credits_estimated if credits is None else None,
        job.submitted_at,
        job.completed_at,
        None if seconds is None else round(seconds, 3),  # milliseconds, as results.csv
    ]
    return row


#: Where each ReportJob field is among a chunk's columns: `typed_columns` picks them by name.
_FIELD_AT = {name: at for at, name in enumerate(ReportJob._fields)}


def typed_columns(
    jobs: Sequence[ReportJob], kept: Sequence[Sequence[_FileLike]], names: Sequence[str]
) -> list[Sequence[Cell]]:
    """`typed_cells` of a chunk of jobs (`kept`: the files of each), column by column (the
    parquet export builds Arrow columns: no row is made, nor turned into columns)."""
    cols = [job.columns for job in jobs]
    table: list[Sequence[Cell]] = [
        [None if (v := c.get(name)) is None else str(v) for c in cols] for name in names
    ]
    fields = list(zip(*jobs, strict=True)) if jobs else [()] * len(ReportJob._fields)

    def values_of(name: str) -> Sequence[Any]:
        return fields[_FIELD_AT[name]]

    paths = [(_joined(k) if k else (None, None)) for k in kept]
    credits, estimated = values_of("credits"), values_of("credits_estimated")
    seconds = [generation_seconds(job) for job in jobs]
    labels = REPORT_LABELS
    table += [
        values_of("job_id"),
        values_of("model"),
        [labels[state] for state in values_of("state")],
        [v or None for v in values_of("task_id")],
        values_of("sends"),
        [v or None for v in values_of("error_code")],
        [v or None for v in values_of("error_message")],
        [p for p, _ in paths],
        [s for _, s in paths],
        [";".join(urls) or None for urls in values_of("result_urls")],
        credits,
        [e if c is None else None for c, e in zip(credits, estimated, strict=True)],
        values_of("submitted_at"),
        values_of("completed_at"),
        [None if s is None else round(s, 3) for s in seconds],
    ]
    return table
