"""What the store hands out: job and file rows, credits; and how a job row is read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from liangxin_batch.core._states import JobState

__all__ = [
    "FILE_COLUMNS",
    "JOB_COLUMNS",
    "AttemptRow",
    "Credits",
    "EventRow",
    "FileRow",
    "JobRow",
    "row_to_job",
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


@dataclass(frozen=True, slots=True)
class FileRow:
    job_id: str
    n: int
    url: str
    path: str | None
    sha256: str | None
    size: int | None
    mtime_ns: int | None = None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One createTask attempt of a job: its taskId (if any) and how it ended."""

    job_id: str
    attempt: int
    task_id: str | None
    outcome: str
    error_code: str | None
    error_message: str | None


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
    "cost_time, finished_by, credits_estimated, sends, in_manifest, generation_seconds"
)
FILE_COLUMNS = "job_id, n, url, path, sha256, size, mtime_ns"


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
    )
