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

import csv
import importlib
import json
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liangxin_batch.core._states import REPORT_LABELS, REPORT_STATUSES, JobState
from liangxin_batch.errors import ConfigError
from liangxin_batch.outputs._formats import EXPORT_FORMATS
from liangxin_batch.state._store import JobRow, StateStore

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EXPORT_FORMATS",
    "REPORT_STATUSES",
    "RESULTS_CSV",
    "RESULT_COLUMNS",
    "FileRecord",
    "current_files",
    "export",
    "generation_seconds",
    "iter_jobs_with_files",
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

_STATE_OF = {REPORT_LABELS[s]: s for s in JobState}
_CHUNK = 5000
_EXTRAS = {"parquet": ("pyarrow", "parquet"), "xlsx": ("openpyxl", "xlsx")}
_XLSX_MAX_ROWS = 1_048_575  # one row of the sheet is the header


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


def _iso(at: float | None) -> str:
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _number(value: float | None, places: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{places}f}".rstrip("0").rstrip(".")


def generation_seconds(job: JobRow) -> float | None:
    """costTime (milliseconds, as recordInfo reports it), else completion - submission."""
    if job.cost_time is not None:
        return job.cost_time / 1000
    if job.completed_at is not None and job.submitted_at is not None:
        return max(0.0, job.completed_at - job.submitted_at)
    return None


def current_files(job: JobRow, files: Sequence[FileRecord]) -> list[FileRecord]:
    """Files downloaded for the job's current result URLs, in order (drops leftovers of
    an earlier task)."""
    urls = job.result_urls
    return sorted(
        (f for f in files if f.path and f.n < len(urls) and urls[f.n] == f.url),
        key=lambda f: f.n,
    )


def report_row(job: JobRow, files: Sequence[FileRecord]) -> dict[str, str]:
    """The RESULT_COLUMNS of one job (manifest columns are added by `report_rows`)."""
    kept = current_files(job, files)
    return {
        "job_id": job.job_id,
        "model": job.model,
        "status": report_status(job.state),
        "task_id": job.task_id or "",
        "attempts": str(job.sends),
        "error_code": job.error_code or "",
        "error_message": job.error_message or "",
        "output_paths": ";".join(f.path or "" for f in kept),
        "output_sha256": ";".join(f.sha256 or "" for f in kept),
        "result_urls": ";".join(job.result_urls),
        "credits": _number(job.credits),
        "credits_estimated": _number(job.credits_estimated if job.credits is None else None),
        "submitted_at": _iso(job.submitted_at),
        "completed_at": _iso(job.completed_at),
        "generation_seconds": _number(generation_seconds(job)),
    }


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


def _full_row(
    job: JobRow, files: Sequence[FileRecord], rename: Mapping[str, str]
) -> dict[str, str]:
    row = {rename.get(k, k): "" if v is None else str(v) for k, v in job.columns.items()}
    row.update(report_row(job, files))
    return row


def report_rows(
    jobs: Iterable[JobRow], files: Mapping[str, Sequence[FileRecord]]
) -> list[dict[str, str]]:
    """One complete row per job, in the order given, every header column present."""
    job_list = list(jobs)
    header, rename = plan_header(k for j in job_list for k in j.columns)
    return [
        dict.fromkeys(header, "") | _full_row(j, files.get(j.job_id, ()), rename) for j in job_list
    ]


# -- reading the state ----------------------------------------------------------------


def _states(status: Collection[str] | None) -> list[JobState] | None:
    if not status:
        return None
    unknown = sorted(set(status) - set(_STATE_OF))
    if unknown:
        raise ConfigError(
            f"unknown status {', '.join(unknown)}; one of: {', '.join(REPORT_STATUSES)}"
        )
    return [_STATE_OF[s] for s in status]


def iter_jobs_with_files(
    store: StateStore,
    *,
    status: Collection[str] | None = None,
    model: Collection[str] | None = None,
    out_dir: Path | None = None,
) -> Iterator[tuple[JobRow, list[FileRecord]]]:
    """Manifest jobs in manifest order with their file rows, fetched page by page.

    With `out_dir`, a done job whose file is gone or has another size is shown as
    `download_failed` with the reason (the state is not changed: the next run fetches it).
    """
    page: list[JobRow] = []
    for job in store.iter_jobs(_states(status), in_manifest=True):
        if model and job.model not in model:
            continue
        page.append(job)
        if len(page) == 500:
            yield from _with_files(store, page, out_dir)
            page = []
    yield from _with_files(store, page, out_dir)


def _with_files(
    store: StateStore, jobs: list[JobRow], out_dir: Path | None
) -> Iterator[tuple[JobRow, list[FileRecord]]]:
    found = store.files_for([j.job_id for j in jobs]) if jobs else {}
    for job in jobs:
        files = [
            FileRecord(f.n, f.url, f.path, f.sha256, f.size) for f in found.get(job.job_id, [])
        ]
        if out_dir is not None and job.state is JobState.DONE:
            lost = _lost_file(out_dir, current_files(job, files))
            if lost:
                job = replace(
                    job,
                    state=JobState.DOWNLOAD_FAILED,
                    error_code="output_missing",
                    error_message=f"{lost}; the next run fetches it again",
                )
        yield job, files


def _lost_file(out_dir: Path, files: Sequence[FileRecord]) -> str | None:
    for f in files:
        try:
            size = (out_dir / (f.path or "")).stat().st_size
        except OSError:
            return f"{f.path} is missing on disk"
        if f.size is not None and size != f.size:
            return f"{f.path} changed on disk ({size:,} bytes, recorded {f.size:,})"
    return None


def _row_chunks(
    store: StateStore,
    rename: Mapping[str, str],
    out_dir: Path | None,
    **filters: Collection[str] | None,
) -> Iterator[list[dict[str, str]]]:
    chunk: list[dict[str, str]] = []
    for job, files in iter_jobs_with_files(store, out_dir=out_dir, **filters):
        chunk.append(_full_row(job, files, rename))
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- writers -----------------------------------------------------------------------


def write_results_csv(
    out_dir: Path, store: StateStore, *, check_files: bool = False, csv_safe: bool = False
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
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; one of: {', '.join(EXPORT_FORMATS)}")
    module = _extra(fmt)
    target = path or out_dir / f"export.{fmt}"
    header, rename = plan_header(store.column_names())
    chunks = _row_chunks(
        store, rename, out_dir if check_files else None, status=status, model=model
    )
    tmp = target.with_name(f".{target.name}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "csv":
            count = _write_csv(tmp, header, _defused(chunks) if csv_safe else chunks)
        elif fmt == "jsonl":
            count = _write_jsonl(tmp, header, chunks)
        elif fmt == "parquet":
            count = _write_parquet(module, tmp, header, chunks)
        else:
            count = _write_xlsx(module, tmp, header, chunks)
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


def _frame(header: list[str], chunk: list[dict[str, str]]) -> pd.DataFrame:
    import pandas as pd  # imported when writing: it is 100 MB that validate/plan/status never need

    rows = [[row.get(c, "") for c in header] for row in chunk]
    return pd.DataFrame(rows, columns=header, dtype=str)


#: What makes a spreadsheet read a cell as a formula (OWASP: CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defused(chunks: Iterable[list[dict[str, str]]]) -> Iterator[list[dict[str, str]]]:
    for chunk in chunks:
        yield [{k: _defuse(v) for k, v in row.items()} for row in chunk]


def _defuse(value: str) -> str:
    if not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)  # -2.5 is a number, not a formula: keep it a number
        return value
    except ValueError:
        return "'" + value


def _write_csv(tmp: Path, header: list[str], chunks: Iterable[list[dict[str, str]]]) -> int:
    # The stdlib writer, in pandas' dialect (minimal quoting, "\n" line ends): the file
    # is written at the end of every run, and importing pandas for it cost more than
    # writing it.
    count = 0
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for chunk in chunks:
            writer.writerows([row.get(c, "") for c in header] for row in chunk)
            count += len(chunk)
    return count


def _write_jsonl(tmp: Path, header: list[str], chunks: Iterable[list[dict[str, str]]]) -> int:
    count = 0
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for chunk in chunks:
            for row in chunk:
                record = {c: row.get(c, "") for c in header}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += len(chunk)
    return count


def _write_parquet(
    pa: Any, tmp: Path, header: list[str], chunks: Iterable[list[dict[str, str]]]
) -> int:
    parquet = importlib.import_module("pyarrow.parquet")
    schema = pa.schema([(c, pa.string()) for c in header])
    count = 0
    with parquet.ParquetWriter(str(tmp), schema) as writer:
        for chunk in chunks:
            frame = _frame(header, chunk)
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            count += len(chunk)
        if count == 0:
            writer.write_table(schema.empty_table())
    return count


def _write_xlsx(
    openpyxl: Any, tmp: Path, header: list[str], chunks: Iterable[list[dict[str, str]]]
) -> int:
    cell_module = importlib.import_module("openpyxl.cell.cell")
    cell_type, illegal = cell_module.WriteOnlyCell, cell_module.ILLEGAL_CHARACTERS_RE
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("results")
    sheet.append(header)
    count = 0
    for chunk in chunks:
        count += len(chunk)
        if count > _XLSX_MAX_ROWS:
            raise ConfigError(
                f"more than {_XLSX_MAX_ROWS:,} rows do not fit an Excel sheet; "
                "export csv or parquet, or filter with --status/--model"
            )
        for row in chunk:
            cells = []
            for c in header:
                # Control characters are not allowed in the XML inside an xlsx.
                cell = cell_type(sheet, value=illegal.sub("", row.get(c, "")))
                cell.data_type = "s"  # text, always: a prompt "=1+1" is not a formula
                cells.append(cell)
            sheet.append(cells)
    book.save(str(tmp))
    return count
