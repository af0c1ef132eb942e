"""What an output's provenance sidecar says (the record; outputs/_sidecars.py writes it).
Pure: it reads rows handed to it, no I/O.

One record per job, the same in the sidecar of each of its files (plus which file that
sidecar is beside): which job, model and task made the file, what was sent, when, for
how many credits, every file of the task with its sha256 and size, and the manifest file
and line the job was written on. The original files are never rewritten (a generated
file may carry C2PA credentials that rewriting would break): provenance goes beside them.

"The input sent" is the job's input as createTask received it, except local files: the
input holds a file token (`file:sha256:<hex>`) where the manifest named a file, and the
task was given a temporary upload URL for those bytes. The record shows the path as the
manifest wrote it, and lists each such file with its sha256, size and type
(`local_inputs`). The upload URL is left out: it stops serving within a day and an
upload of the same bytes may have replaced it since; the sha256 is what names the bytes.
Nothing here can hold the API key: the input, the ids and the file host's URLs are all
the record reads (the createTask callback URL, which carries the run's callback token,
is not part of it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from liangxin_batch.core._local_files import LocalFile, replace_tokens
from liangxin_batch.core._provenance import parameters_text
from liangxin_batch.state._store import FileRow, JobRow

__all__ = ["SCHEMA", "provenance_record", "record_parameters", "sent_input"]

#: Named in every sidecar: a reader can tell which fields to expect.
SCHEMA = "liangxin-batch/provenance/1"


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sent_input(value: Any, files: Mapping[str, LocalFile | None]) -> Any:
    """A job's input with each file token as the path the manifest wrote (a token no
    sync recorded stays a token: it still names the bytes by their sha256)."""

    def written(sha: str, token: str) -> Any:
        known = files.get(sha)
        return known.written if known is not None else token

    return replace_tokens(value, written)


def _credits(job: JobRow) -> dict[str, Any]:
    if job.credits is not None:
        return {"amount": job.credits, "basis": "charged"}  # what the service said
    if job.credits_estimated is not None:
        return {"amount": job.credits_estimated, "basis": "estimated"}  # our price table
    return {"amount": None, "basis": None}


def provenance_record(
    job: JobRow,
    files: Sequence[FileRow],
    *,
    local_files: Mapping[str, LocalFile | None],
    source: tuple[str, int] | None,
    tool_version: str,
) -> dict[str, Any]:
    """The record of a done (or about to be done) job; `files` are the task's files (n
    below its number of result URLs), `local_files` what each of its file tokens names
    (None: no sync recorded it), in the order the input first names them."""
    local = [
        {
            "sha256": sha,
            "path": known.written if known is not None else None,
            "size": known.size if known is not None else None,
            "media_type": known.media_type if known is not None else None,
        }
        for sha, known in local_files.items()
    ]
    submitted, completed = job.submitted_at, job.completed_at
    return {
        "schema": SCHEMA,
        "job_id": job.job_id,
        "model": job.model,
        "task_id": job.task_id,
        "attempt": job.attempt,
        "input": sent_input(dict(job.input), local_files),
        "local_inputs": local,
        "timings": {
            "submitted_at": _iso(submitted),
            "completed_at": _iso(completed),
            # completion - submission by our clock; the service's own below.
            "wall_seconds": (
                round(max(0.0, completed - submitted), 3)
                if submitted is not None and completed is not None
                else None
            ),
            "generation_seconds": job.generation_seconds,  # completeTime - createTime
            "cost_time_ms": job.cost_time,  # recordInfo's costTime
        },
        "credits": _credits(job),
        "files": [
            {"n": f.n + 1, "path": f.path, "sha256": f.sha256, "size": f.size, "url": f.url}
            for f in files
        ],
        "manifest": {
            "file": source[0] if source is not None else None,
            "line": source[1] if source is not None else None,
            "index": job.idx,  # 0-based position of the job in the manifest
            "columns": dict(job.columns),
        },
        "tool": {"name": "liangxin-batch", "version": tool_version},
    }


def record_parameters(record: Mapping[str, Any]) -> str:
    """The A1111 "parameters" text of a record (what `--embed-metadata` writes)."""
    return parameters_text(
        record["model"],
        record["input"],
        {"Job id": record["job_id"], "Task id": record["task_id"]},
    )
