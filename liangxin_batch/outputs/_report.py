"""results.csv and exports: exactly one row per manifest job, in manifest order.

Each row holds every column of the manifest row as the user wrote it, then
`RESULT_COLUMNS`. A manifest column whose name is one of those (typically `model`,
which may be an alias) is kept as `input_<name>` so neither value is lost.

`status` is the job state in report terms: `succeeded` means generation succeeded AND
every output file is on disk and verified (state `done`); a job whose generation
succeeded but whose files are not all verified yet is `downloading` (the next run
fetches them). Every other state is reported under its own name.

Rows are plain data built by pure functions; the writers stream them in chunks, so
100k+ rows stay within bounded memory, and replace the target file atomically.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from liangxin_batch.core._states import REPORT_LABELS, REPORT_STATUSES, JobState
from liangxin_batch.errors import ConfigError
from liangxin_batch.outputs._formats import EXPORT_FORMATS
from liangxin_batch.outputs._jobs import as_lost, current_files, report_jobs
from liangxin_batch.outputs._tables import defused as _defused
from liangxin_batch.outputs._tables import write_csv as _write_csv
from liangxin_batch.outputs._tables import write_jsonl as _write_jsonl
from liangxin_batch.outputs._tables import write_parquet as _write_parquet
from liangxin_batch.outputs._tables import write_xlsx as _write_xlsx
from liangxin_batch.state._store import JobRow, ReportFile, ReportJob, StateStore

__all__ = [
    "EXPORT_FORMATS",
    "REPORT_STATUSES",
    "RESULTS_CSV",
    "RESULT_COLUMNS",
    "FileRecord",
    "current_files",
    "export",
    "generation_seconds",
    "plan_header",
    "report_row",
    "report_rows",
    "report_status",
    "write_results_csv",
]

RESULTS_CSV = "results.csv"
RESULT_COLUMNS = (
    "job_id",
    "model",
    "status",
    "task_id",
    "attempts",
    "error_code",
    "error_message",
    "output_paths",
    "output_sha256",
    "result_urls",
    "credits",
    "credits_estimated",
    "submitted_at",
    "completed_at",
    "generation_seconds",
)

_CHUNK = 5000
_GUESS = 1000  # jobs whose columns make the first guess of the header
_EXTRAS = {"parquet": ("pyarrow", "parquet"), "xlsx": ("openpyxl", "xlsx")}


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One row of the `files` table: output `n` (0-based) of a job, as downloaded."""

    n: int
    url: str
    path: str | None
    sha256: str | None
    size: int | None


# -- pure --------------------------------------------------------------------------


def report_status(state: JobState) -> str:
    return REPORT_LABELS[state]


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


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def generation_seconds(job: JobRow | ReportJob) -> float | None:
    """costTime (milliseconds, as recordInfo reports it), else completion - submission."""
    if job.cost_time is not None:
        return job.cost_time / 1000
    if job.completed_at is not None and job.submitted_at is not None:
        return max(0.0, job.completed_at - job.submitted_at)
    return None


def _result_cells(job: ReportJob, kept: Sequence[FileRecord | ReportFile]) -> list[str]:
    """The RESULT_COLUMNS of one job, in order (`kept`: its current files).

    Written for speed (once per job of a million): `generation_seconds` inline, one
    file (the usual case) without a join."""
    credits = job.credits
    estimated = job.credits_estimated if credits is None else None
    submitted, completed, cost = job.submitted_at, job.completed_at, job.cost_time
    if cost is not None:
        seconds = _number(cost / 1000)
    elif completed is not None and submitted is not None:
        seconds = _number(max(0.0, completed - submitted))
    else:
        seconds = ""
    if len(kept) == 1:
        paths, sums = kept[0].path or "", kept[0].sha256 or ""
    else:
        paths = ";".join([f.path or "" for f in kept])
        sums = ";".join([f.sha256 or "" for f in kept])
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


def _cells(
    job: ReportJob, kept: Sequence[FileRecord | ReportFile], names: Sequence[str]
) -> list[str]:
    """A whole row: the manifest columns `names` (header order), then RESULT_COLUMNS."""
    get = job.columns.get
    row = ["" if (v := get(name)) is None else str(v) for name in names]
    row += _result_cells(job, kept)
    return row


def _light(job: JobRow) -> ReportJob:
    return ReportJob(
        job.job_id,
        job.idx,
        job.model,
        job.state,
        job.task_id,
        job.sends,
        job.error_code,
        job.error_message,
        job.result_urls,
        job.credits,
        job.credits_estimated,
        job.cost_time,
        job.submitted_at,
        job.completed_at,
        job.columns,
        json.dumps(job.input, ensure_ascii=False),
    )


def report_row(job: JobRow, files: Sequence[FileRecord]) -> dict[str, str]:
    """The RESULT_COLUMNS of one job (manifest columns are added by `report_rows`)."""
    return dict(
        zip(RESULT_COLUMNS, _result_cells(_light(job), current_files(job, files)), strict=True)
    )


def plan_header(column_names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """(header, rename): manifest columns in first-seen order, then RESULT_COLUMNS; a
    manifest column named like a result column is renamed `input_<name>`."""
    taken = set(RESULT_COLUMNS)
    rename: dict[str, str] = {}
    for name in column_names:
        if name in rename:
            continue
        out = name
        while out in taken:
            out = f"input_{out}"
        rename[name] = out
        taken.add(out)
    return [*rename.values(), *RESULT_COLUMNS], rename


def report_rows(
    jobs: Iterable[JobRow], files: Mapping[str, Sequence[FileRecord]]
) -> list[dict[str, str]]:
    """One complete row per job, in the order given, every header column present."""
    job_list = list(jobs)
    header, rename = plan_header(k for j in job_list for k in j.columns)
    return [
        dict(
            zip(
                header,
                _cells(_light(j), current_files(j, files.get(j.job_id, ())), list(rename)),
                strict=True,
            )
        )
        for j in job_list
    ]


# -- reading the state ----------------------------------------------------------------


#: Called with every job as the report shows it (files checked) and its current files:
#: report.html is gathered in the walk that writes results.csv.
EachJob = Callable[[ReportJob, list[ReportFile]], None]


class _Header:
    """The manifest columns of the table, and whether every job's are known to be in it."""

    def __init__(self, names: Iterable[str], *, complete: bool) -> None:
        self.row, rename = plan_header(names)
        self.names = list(rename)
        self.known = frozenset(rename)
        self.complete = complete
        self.missed = False  # a job had a column not in `names`: the rows are incomplete


def _row_chunks(
    store: StateStore,
    header: _Header,
    *,
    check: Path | None,
    check_files: bool,
    each: EachJob | None,
    status: Collection[str] | None,
    model: Collection[str] | None,
    positions: tuple[int, int] | None = None,
) -> Iterator[list[list[str]]]:
    chunk: list[list[str]] = []
    names, known, complete = header.names, header.known, header.complete
    jobs = report_jobs(store, status=status, model=model, out_dir=check, positions=positions)
    for job, kept, lost in jobs:
        shown = as_lost(job, lost)
        if each is not None:
            each(shown, kept)
        if not complete and not job.columns.keys() <= known:
            header.missed = True  # the rows are written again: only `each` wants the rest
            if each is not None:
                for later, files, gone in jobs:
                    each(as_lost(later, gone), files)
            return
        chunk.append(_cells(shown if check_files else job, kept, names))
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- writers -----------------------------------------------------------------------


def write_results_csv(
    out_dir: Path,
    store: StateStore,
    *,
    check_files: bool = False,
    csv_safe: bool = False,
    each: EachJob | None = None,
) -> Path:
    """`DIR/results.csv`, every manifest job; call at the end of every run.

    `check_files`: a done job whose file is gone is shown as download_failed (`report`).
    `csv_safe`, `each`: see `export`.
    """
    path = out_dir / RESULTS_CSV
    export(out_dir, store, "csv", path, check_files=check_files, csv_safe=csv_safe, each=each)
    return path


def export(
    out_dir: Path,
    store: StateStore,
    fmt: str,
    path: Path | None = None,
    *,
    status: Collection[str] | None = None,
    model: Collection[str] | None = None,
    check_files: bool = False,
    csv_safe: bool = False,
    each: EachJob | None = None,
) -> int:
    """Write the results table as csv/jsonl/parquet/xlsx (default `DIR/export.<fmt>`);
    returns the number of rows written. `check_files`: see `write_results_csv`.

    `csv_safe` (csv only): a cell that a spreadsheet would run as a formula (it starts with
    = + - @, a tab or a carriage return) gets a leading `'` (OWASP's advice), for people
    who open the CSV in Excel. Without it the CSV keeps the values as written: it is data.
    xlsx needs no such care: every cell is stored as text.

    `each`: called with every job written, as the report shows it (its files checked
    whatever `check_files` says), so report.html is made in the same walk."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; one of: {', '.join(EXPORT_FORMATS)}")
    _extra(fmt)  # a missing package fails before any walk
    target = path or out_dir / f"export.{fmt}"
    # The header is known only after a walk of every job's columns: a second walk as
    # long as the one that writes the rows. A table of every job (no filter) guesses it
    # from the first jobs instead, checks each job against it while writing, and walks
    # again with the whole header only if a later job had a column the first did not.
    whole = bool(status or model)
    header = _Header(store.column_names(None if whole else _GUESS), complete=whole)
    count = _write(out_dir, store, fmt, target, header, check_files, csv_safe, each, status, model)
    if header.missed:
        header = _Header(store.column_names(), complete=True)
        count = _write(out_dir, store, fmt, target, header, check_files, csv_safe, None, None, None)
    return count


def _write(
    out_dir: Path,
    store: StateStore,
    fmt: str,
    target: Path,
    header: _Header,
    check_files: bool,
    csv_safe: bool,
    each: EachJob | None,
    status: Collection[str] | None,
    model: Collection[str] | None,
) -> int:
    module = _extra(fmt)
    chunks = _row_chunks(
        store,
        header,
        check=out_dir if check_files or each is not None else None,
        check_files=check_files,
        each=each,
        status=status,
        model=model,
    )
    tmp = target.with_name(f".{target.name}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "csv":
            count = _write_csv(tmp, header.row, _defused(chunks) if csv_safe else chunks)
        elif fmt == "jsonl":
            count = _write_jsonl(tmp, header.row, chunks)
        elif fmt == "parquet":
            count = _write_parquet(module, tmp, header.row, chunks)
        else:
            count = _write_xlsx(module, tmp, header.row, chunks)
        if header.missed:  # written again with the whole header
            tmp.unlink()
        else:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def _extra(fmt: str) -> Any:
    if fmt not in _EXTRAS:
        return None
    name, extra = _EXTRAS[fmt]
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(
            f"--format {fmt} needs the {name} package: pip install 'liangxin-batch[{extra}]'"
        ) from None
