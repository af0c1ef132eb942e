"""What the store hands out: job and file rows, credits; and how a job row is read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from liangxin_batch.core._states import JobState

__all__ = [
    "EXPORT_JOB_SELECT",
    "FILE_COLUMNS",
    "JOB_COLUMNS",
    "REPORT_JOB_SELECT",
    "AttemptRow",
    "Credits",
    "EventRow",
    "FileRow",
    "JobRow",
    "ReportFile",
    "ReportJob",
    "row_to_job",
    "rows_to_report_jobs",
]


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    idx: int
    model: str
    input: Mapping[str, Any]
    state: JobState
    attempt: int
    task_id: str | None
    submitted_at: float | None
    completed_at: float | None
    result_urls: tuple[str, ...]
    error_code: str | None
    error_message: str | None
    credits: float | None
    polls: int
    content_hash: str
    columns: Mapping[str, str]
    cost_time: float | None = None
    finished_by: str | None = None
    #: Our estimate, kept only where the service did not say what it charged.
    credits_estimated: float | None = None
    #: createTask POSTs that may have reached the service (provably unsent tries excluded).
    sends: int = 0
    #: Still in the manifest (a removed job keeps its row and history).
    in_manifest: bool = True
    #: How long the generation took by the service's own clock (completeTime -
    #: createTime), seconds; what a resumed run learns its latencies from.
    generation_seconds: float | None = None
    #: The account whose key created the task (migration 013); None: `default`.
    account: str | None = None


@dataclass(frozen=True, slots=True)
class FileRow:
    job_id: str
    n: int
    url: str
    path: str | None
    sha256: str | None
    size: int | None
    mtime_ns: int | None = None
    #: An image's pixels (from the download check), and its preview relative to DIR:
    #: '' when none can be made, None when not tried yet (migration 010).
    width: int | None = None
    height: int | None = None
    thumb: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One createTask attempt of a job: its taskId (if any) and how it ended."""

    job_id: str
    attempt: int
    task_id: str | None
    outcome: str
    error_code: str | None
    error_message: str | None
    #: The account whose key sent it (migration 013); None: `default`, or older rows.
    account: str | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    """One line of a job's history (`kind`: the state it entered, or "note")."""

    at: float
    job_id: str | None
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Credits:
    """What the service said it charged, plus our estimates where it said nothing."""

    charged: float = 0.0
    estimated: float = 0.0

    @property
    def total(self) -> float:
        return self.charged + self.estimated


JOB_COLUMNS = (
    "job_id, idx, model, input_json, state, attempt, task_id, submitted_at, completed_at, "
    "result_urls, error_code, error_message, credits, polls, content_hash, columns_json, "
    "cost_time, finished_by, credits_estimated, sends, in_manifest, generation_seconds, account"
)
FILE_COLUMNS = "job_id, n, url, path, sha256, size, mtime_ns, width, height, thumb"


def row_to_job(row: Sequence[Any]) -> JobRow:
    return JobRow(
        job_id=row[0],
        idx=row[1],
        model=row[2],
        input=json.loads(row[3]),
        state=JobState(row[4]),
        attempt=row[5],
        task_id=row[6],
        submitted_at=row[7],
        completed_at=row[8],
        result_urls=tuple(json.loads(row[9])) if row[9] else (),
        error_code=row[10],
        error_message=row[11],
        credits=row[12],
        polls=row[13],
        content_hash=row[14],
        columns=json.loads(row[15]),
        cost_time=row[16],
        finished_by=row[17],
        credits_estimated=row[18],
        sends=row[19],
        in_manifest=bool(row[20]),
        generation_seconds=row[21],
        account=row[22],
    )


class ReportJob(NamedTuple):
    """A job as results.csv, the exports and report.html show it: only what they read.

    A tuple, not a `JobRow`: these walks read every job of a million-job state, and
    building this costs a third of a `JobRow` (no input JSON decoded: only the report's
    first cards show it)."""

    job_id: str
    idx: int
    model: str
    state: JobState
    task_id: str | None
    sends: int
    error_code: str | None
    error_message: str | None
    result_urls: tuple[str, ...]
    credits: float | None
    credits_estimated: float | None
    cost_time: float | None
    submitted_at: float | None
    completed_at: float | None
    columns: Mapping[str, Any]
    input_json: str
    #: Its files that may be current (`n` below the number of result URLs): of a job
    #: with one result URL, file 0 alone, read in the same query as the job.
    files: tuple[ReportFile, ...] = ()


class ReportFile(NamedTuple):
    """A `FileRow` as the report walks read it (a tuple: a frozen dataclass costs 3x
    more to build, once per file of a million)."""

    job_id: str
    n: int
    url: str
    path: str | None
    sha256: str | None
    size: int | None
    width: int | None = None  # an image's pixels, when the download check saw them
    height: int | None = None
    thumb: str | None = None  # its preview, relative to DIR; '' none can be made


#: A page of report rows: each job with its file 0 (a job of several result URLs has its
#: files read apart, `ReportJob.files`), by the files' key: one index search per job.
REPORT_JOB_SELECT = (
    "SELECT jobs.job_id, jobs.idx, model, state, task_id, sends, error_code, error_message,"
    " result_urls, credits, credits_estimated, cost_time, submitted_at, completed_at,"
    " columns_json, input_json, f.url, f.path, f.sha256, f.size, f.width, f.height, f.thumb"
    " FROM jobs LEFT JOIN files f ON f.job_id = jobs.job_id AND f.n = 0"
)
#: `REPORT_JOB_SELECT` less the input JSON (read as ''), for the walks that show no job's
#: input (the exports): a million prompts not copied out of SQLite.
EXPORT_JOB_SELECT = REPORT_JOB_SELECT.replace(" input_json,", " '',")
_STATE_OF = {s.value: s for s in JobState}  # a dict lookup: JobState(value) costs 5x more
_raw_decode = json.JSONDecoder().raw_decode
_new = tuple.__new__


def _loads(text: str) -> Any:
    """json.loads less its two whitespace scans (the store writes json.dumps text)."""
    try:
        return _raw_decode(text)[0]
    except ValueError:
        return json.loads(text)  # leading blanks: as json.loads reads them


def _loads_all(texts: list[str]) -> list[Any]:
    """Each JSON text decoded, in one decoder call for the lot (a call per text cost as
    much as the decoding); text by text where the lot does not read as one array."""
    try:
        values = _raw_decode(f"[{','.join(texts)}]")[0]
    except ValueError:
        values = None
    if type(values) is not list or len(values) != len(texts):
        return [_loads(t) for t in texts]
    return values


def _urls(text: str | None) -> tuple[str, ...]:
    """result_urls: one URL without escapes (the usual case) as is, else decoded."""
    if not text:
        return ()
    one = text[2:-2]
    if (
        len(text) > 3
        and text[:2] == '["'
        and text[-2:] == '"]'
        and '"' not in one
        and "\\" not in one
    ):
        return (one,)
    return tuple(_loads(text))


def rows_to_report_jobs(rows: Sequence[Sequence[Any]]) -> list[ReportJob]:
    """The ReportJobs of a page of `REPORT_JOB_SELECT` rows, the columns JSON decoded at
    once; `files` is left empty for a job of several result URLs (the caller reads them)."""
    columns = _loads_all([row[14] for row in rows])
    jobs: list[ReportJob] = []
    append = jobs.append
    for row, cols in zip(rows, columns, strict=True):
        urls = _urls(row[8])
        file_0 = row[16] is not None and len(urls) == 1
        append(
            _new(
                ReportJob,
                (
                    row[0],
                    row[1],
                    row[2],
                    _STATE_OF[row[3]],
                    row[4],
                    row[5],
                    row[6],
                    row[7],
                    urls,
                    row[9],
                    row[10],
                    row[11],
                    row[12],
                    row[13],
                    cols,
                    row[15],
                    (_new(ReportFile, (row[0], 0, *row[16:23])),) if file_0 else (),
                ),
            )
        )
    return jobs
