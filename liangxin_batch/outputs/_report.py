"""results.csv and exports: exactly one row per manifest job, in manifest order.

Each row holds every column of the manifest row as the user wrote it, under its own
name, then `RESULT_COLUMNS` (`_columns`: names, types, a clash's `manifest_` prefix).
results.csv, the csv and the xlsx export are text; parquet and jsonl are typed (numbers,
timestamps and nulls as such), from the same rows.

`status` is the job state in report terms: `succeeded` means generation succeeded AND
every output file is on disk and verified (state `done`); a job whose generation
succeeded but whose files are not all verified yet is `downloading` (the next run
fetches them). Every other state is reported under its own name.

Rows are plain data built by pure functions; the writers stream them in chunks, so
100k+ rows stay within bounded memory, and replace the target file atomically.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liangxin_batch.core._states import REPORT_LABELS, REPORT_STATUSES, JobState
from liangxin_batch.errors import ConfigError
from liangxin_batch.outputs._columns import (
    RESULT_COLUMNS,
    RESULT_TYPES,
    ColumnType,
    generation_seconds,
    plan_header,
    result_cells,
    text_cells,
    typed_cells,
    typed_columns,
)
from liangxin_batch.outputs._formats import EXPORT_FORMATS, TABLE_FORMATS
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
    "RESULT_TYPES",
    "FileRecord",
    "current_files",
    "export",
    "generation_seconds",
    "plan_header",
    "report_row",
    "report_rows",
    "report_status",
    "typed_table",
    "write_results_csv",
]

RESULTS_CSV = "results.csv"

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
        zip(RESULT_COLUMNS, result_cells(_light(job), current_files(job, files)), strict=True)
    )


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
                text_cells(_light(j), current_files(j, files.get(j.job_id, ())), list(rename)),
                strict=True,
            )
        )
        for j in job_list
    ]


# -- reading the state ----------------------------------------------------------------


class _Header:
    """The manifest columns of the table, and whether every job's are known to be in it."""

    def __init__(self, names: Iterable[str], *, complete: bool) -> None:
        self.row, rename = plan_header(names)
        self.names = list(rename)
        #: The type of each column of `row` (manifest columns are text).
        text: list[ColumnType] = ["string"] * len(rename)
        self.types = text + list(RESULT_TYPES.values())
        self.known = frozenset(rename)
        self.complete = complete
        self.missed = False  # a job had a column not in `names`: the rows are incomplete


#: One row's cells from a job, its current files and the manifest column names.
RowCells = Callable[[ReportJob, Sequence[ReportFile], Sequence[str]], list[Any]]
#: A chunk's columns from its jobs, the current files of each and the manifest columns.
ChunkColumns = Callable[
    [Sequence[ReportJob], Sequence[Sequence[ReportFile]], Sequence[str]], list[Sequence[Any]]
]


def _row_chunks(
    store: StateStore,
    header: _Header,
    cells: RowCells,
    *,
    check: Path | None,
    status: Collection[str] | None,
    model: Collection[str] | None,
    positions: tuple[int, int] | None = None,
    columns: ChunkColumns | None = None,
) -> Iterator[list[Any]]:
    """Chunks of rows by `cells`; with `columns`, each chunk as columns by it instead.
    With `check` (the output folder), a done job whose file is lost is shown as
    download_failed (`as_lost`)."""
    chunk: list[list[Any]] = []
    chunk_jobs: list[ReportJob] = []
    chunk_files: list[list[ReportFile]] = []
    names, known, complete = header.names, header.known, header.complete
    # The rows never show a job's input: it is not read.
    jobs = report_jobs(
        store, status=status, model=model, out_dir=check, positions=positions, inputs=False
    )
    for job, kept, lost in jobs:
        shown = as_lost(job, lost)
        if not complete and not job.columns.keys() <= known:
            header.missed = True  # the rows are written again, with the whole header
            return
        if columns is None:
            chunk.append(cells(shown, kept, names))
            if len(chunk) == _CHUNK:
                yield chunk
                chunk = []
            continue
        chunk_jobs.append(shown)
        chunk_files.append(kept)
        if len(chunk_jobs) == _CHUNK:
            yield columns(chunk_jobs, chunk_files, names)
            chunk_jobs, chunk_files = [], []
    if chunk:
        yield chunk
    if chunk_jobs and columns is not None:
        yield columns(chunk_jobs, chunk_files, names)


def typed_table(
    out_dir: Path, store: StateStore
) -> tuple[list[str], list[ColumnType], Iterator[list[list[Any]]]]:
    """(header, column types, chunks of typed rows): the rows results.csv is made from,
    typed as the parquet export is, every job's files checked on disk (as `report`
    does: a lost file shows its job as download_failed). For `results()`."""
    header = _Header(store.column_names(), complete=True)  # one frame: no second walk
    chunks = _row_chunks(
        store,
        header,
        typed_cells,
        check=out_dir,
        status=None,
        model=None,
    )
    return header.row, header.types, chunks


# -- writers -----------------------------------------------------------------------


def write_results_csv(
    out_dir: Path,
    store: StateStore,
    *,
    check_files: bool = False,
    csv_safe: bool = False,
) -> Path:
    """`DIR/results.csv`, every manifest job; call at the end of every run.

    `check_files`: a done job whose file is gone is shown as download_failed (`report`).
    `csv_safe`: see `export`.
    """
    path = out_dir / RESULTS_CSV
    export(out_dir, store, "csv", path, check_files=check_files, csv_safe=csv_safe)
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
) -> int:
    """Write the results table as csv/jsonl/parquet/xlsx (default `DIR/export.<fmt>`);
    returns the number of rows written. `check_files`: see `write_results_csv`.

    `csv_safe` (csv only): a cell that a spreadsheet would run as a formula (it starts with
    = + - @, a tab or a carriage return) gets a leading `'` (OWASP's advice), for people
    who open the CSV in Excel. Without it the CSV keeps the values as written: it is data.
    xlsx needs no such care: every cell is stored as text."""
    if fmt not in TABLE_FORMATS:  # hf and webdataset are folders: _datasets.export_dataset
        raise ConfigError(f"unknown export format {fmt!r}; one of: {', '.join(TABLE_FORMATS)}")
    _extra(fmt)  # a missing package fails before any walk
    target = path or out_dir / f"export.{fmt}"
    # The header is known only after a walk of every job's columns: a second walk as
    # long as the one that writes the rows. A table of every job (no filter) guesses it
    # from the first jobs instead, checks each job against it while writing, and walks
    # again with the whole header only if a later job had a column the first did not.
    whole = bool(status or model)
    header = _Header(store.column_names(None if whole else _GUESS), complete=whole)
    with _no_cyclic_gc():
        count = _write(out_dir, store, fmt, target, header, check_files, csv_safe, status, model)
        if header.missed:
            header = _Header(store.column_names(), complete=True)
            count = _write(out_dir, store, fmt, target, header, check_files, csv_safe, None, None)
    return count


def _write(
    out_dir: Path,
    store: StateStore,
    fmt: str,
    target: Path,
    header: _Header,
    check_files: bool,
    csv_safe: bool,
    status: Collection[str] | None,
    model: Collection[str] | None,
) -> int:
    module = _extra(fmt)
    # parquet and jsonl carry types (numbers, timestamps, nulls); csv and xlsx are text.
    typed = fmt in ("parquet", "jsonl")
    chunks = _row_chunks(
        store,
        header,
        typed_cells if typed else text_cells,
        check=out_dir if check_files else None,
        status=status,
        model=model,
        columns=typed_columns if fmt == "parquet" else None,
    )
    tmp = target.with_name(f".{target.name}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "csv":
            count = _write_csv(tmp, header.row, _defused(chunks) if csv_safe else chunks)
        elif fmt == "jsonl":
            count = _write_jsonl(tmp, header.row, header.types, chunks)
        elif fmt == "parquet":
            count = _write_parquet(module, tmp, header.row, header.types, chunks)
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


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: a walk makes millions of tuples (none in a
    cycle: reference counts free them all, chunk by chunk), and its collections, set
    off by those allocations, cost a third of an export's time."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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
