"""The walk behind results.csv, the exports and report.html: every manifest job in
manifest order with its current files, and whether those are still on disk."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from liangxin_batch.core._states import REPORT_LABELS, REPORT_STATUSES, JobState
from liangxin_batch.errors import ConfigError
from liangxin_batch.state._store import ReportFile, ReportJob, StateStore

__all__ = ["Lost", "as_lost", "current_files", "report_jobs"]

_STATE_OF = {REPORT_LABELS[s]: s for s in JobState}


def _states(status: Collection[str] | None) -> list[JobState] | None:
    if not status:
        return None
    unknown = sorted(set(status) - set(_STATE_OF))
    if unknown:
        raise ConfigError(
            f"unknown status {', '.join(unknown)}; one of: {', '.join(REPORT_STATUSES)}"
        )
    return [_STATE_OF[s] for s in status]


#: Why a done job's file is not as recorded (None: it is), from `report_jobs`.
Lost = str | None


def report_jobs(
    store: StateStore,
    *,
    status: Collection[str] | None = None,
    model: Collection[str] | None = None,
    out_dir: Path | None = None,
    positions: tuple[int, int] | None = None,
    inputs: bool = True,
) -> Iterator[tuple[ReportJob, list[ReportFile], Lost]]:
    """Manifest jobs in manifest order, each with its current files (those of its current
    result URLs, by number); with `out_dir`, whether a done job's file is gone or has
    another size (`as_lost` shows the job as the report does). `positions`: only the
    jobs of lo <= idx < hi (a segment of results.csv); `inputs=False`: the jobs'
    `input_json` is not read (left '')."""
    with _folder(out_dir) as base:
        done = JobState.DONE
        for job in store.iter_report_jobs(_states(status), positions=positions, inputs=inputs):
            if model and job.model not in model:
                continue
            if not job.files:
                yield job, [], None
                continue
            kept = current_files(job, job.files)
            lost = _lost_file(base, kept) if base is not None and job.state is done else None
            yield job, kept, lost


@contextlib.contextmanager
def _folder(out_dir: Path | None) -> Iterator[int | str | None]:
    """What `_lost_file` looks files up from: a descriptor of `out_dir` where the
    platform offers `dir_fd`, else its path."""
    if out_dir is None or os.stat not in os.supports_dir_fd:
        yield None if out_dir is None else str(out_dir)
        return
    try:
        fd = os.open(out_dir, os.O_RDONLY)
    except OSError:  # the lookups fail alike: every file is missing
        yield str(out_dir)
        return
    try:
        yield fd
    finally:
        os.close(fd)


class _FileLike(Protocol):
    @property
    def n(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def path(self) -> str | None: ...


class _JobLike(Protocol):
    @property
    def result_urls(self) -> Sequence[str]: ...


_File = TypeVar("_File", bound=_FileLike)


def current_files(job: _JobLike, files: Iterable[_File]) -> list[_File]:
    """Files downloaded for the job's current result URLs, in order (drops leftovers of
    an earlier task)."""
    urls = job.result_urls
    kept = [f for f in files if f.path and f.n < len(urls) and urls[f.n] == f.url]
    if len(kept) > 1:  # one file is the usual case: nothing to order
        kept.sort(key=lambda f: f.n)
    return kept


def as_lost(job: ReportJob, lost: Lost) -> ReportJob:
    """The job as the report shows it: a done job whose file is lost is download_failed
    (the state is not changed: the next run fetches it)."""
    if lost is None:
        return job
    return job._replace(
        state=JobState.DOWNLOAD_FAILED,
        error_code="output_missing",
        error_message=f"{lost}; the next run fetches it again",
    )


def _lost_file(base: int | str, files: Sequence[ReportFile]) -> str | None:
    """Why the first of `files` that is not as recorded is not (None: all are)."""
    for f in files:
        lost = _file_lost(base, f.path or "", f.size)
        if lost is not None:
            return lost
    return None


def _file_lost(base: int | str, path: str, size: int | None) -> str | None:
    """Why the file at `path` is not as recorded: missing, or of another size than
    `size` (None: it is). `base`: what `_folder` yields, a descriptor of the folder
    (paths are looked up from it, as a join with it would: a pathlib join and stat cost
    3x more), or its path. `_lost_file` and outputs/_lost.py's check of every done job
    decide alike by it."""
    try:
        if isinstance(base, int):
            on_disk = os.stat(path, dir_fd=base).st_size
        else:
            on_disk = os.stat(os.path.join(base, path)).st_size
    except OSError:
        return f"{path} is missing on disk"
    if size is not None and on_disk != size:
        return f"{path} changed on disk ({on_disk:,} bytes, recorded {size:,})"
    return None
