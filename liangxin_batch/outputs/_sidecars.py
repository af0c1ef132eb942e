"""Provenance sidecars: `NAME.json` beside each output `NAME.ext` (what it says:
outputs/_provenance.py).

Names. The layout's claims own an output's stem (outputs/_layout.py `PathClaims`), so
no two outputs share `NAME.json`, and an output never ends in `.json`. Files recorded
by an earlier version, before claims covered stems, may share one (`x.png` of one job,
`x.mp4` of another): each of those gets `NAME~ext.json` instead (`legacy_sidecar_path`,
a name no output's sidecar has), decided by one index search of the state per file
(`path_holders`). Each output has that one sidecar name, and only it is looked for.

Writing. A sidecar is written to a temporary name beside it and renamed into place, so
it is whole or absent; the downloader writes the sidecars of a job after every file of
the task is verified and before the job is recorded `done` (done means its sidecars
were written). It is not fsynced: a sidecar lost to a power cut is found missing (or
empty) by the next run's walk of the done files and written again (`without_sidecar`,
one stat per file in the walk that already stats each output; the state is asked which
name is a file's only for the few whose `NAME.json` is missing).

Reads of the state happen where the store lives (the event loop's thread): `read_job`
hands a `JobProvenance` to `write_sidecars`, which a worker thread runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liangxin_batch._version import package_version
from liangxin_batch.core._local_files import LocalFile, distinct_tokens, file_token
from liangxin_batch.core._provenance import legacy_sidecar_path, sidecar_path
from liangxin_batch.outputs._atomic import write_atomic
from liangxin_batch.outputs._provenance import provenance_record
from liangxin_batch.state._store import FileRow, JobRow, StateStore

__all__ = ["JobProvenance", "read_job", "sidecar_of", "without_sidecar", "write_sidecars"]


@dataclass(frozen=True, slots=True)
class JobProvenance:
    """A job's record and where each of its files' sidecars goes."""

    job_id: str
    record: dict[str, Any]
    #: (the file's number n, output path, its sidecar path), paths relative to DIR, in
    #: file order.
    targets: tuple[tuple[int, str, str], ...]


def sidecar_of(store: StateStore, rec: FileRow) -> str:
    """The sidecar path of a recorded output (`NAME.json`, or `NAME~ext.json` when an
    earlier version recorded another output of the same stem)."""
    assert rec.path is not None
    others = [h for h in store.path_holders(rec.path) if h != (rec.job_id, rec.n)]
    return legacy_sidecar_path(rec.path) if others else sidecar_path(rec.path)


def read_job(
    store: StateStore,
    job_id: str,
    *,
    known: tuple[JobRow, Sequence[FileRow]] | None = None,
) -> JobProvenance | None:
    """What the sidecars of a job say (None: no such job, or no file recorded).
    `known`: the job and its files as the caller has just read and recorded them (the
    downloader), not read again."""
    job = store.get(job_id) if known is None else known[0]
    if job is None:
        return None
    count = len(job.result_urls)
    recorded = store.files_of(job_id) if known is None else known[1]
    files = [f for f in recorded if f.n < count and f.path]
    if not files:
        return None
    local: dict[str, LocalFile | None] = {}
    shas = distinct_tokens(job.input)
    if shas:  # a job of URLs alone asks nothing more
        found = {f.sha256: f for f in store.local_files_of({"f": [file_token(s) for s in shas]})}
        local = {s: found.get(s) for s in shas}
    record = provenance_record(
        job,
        files,
        local_files=local,
        source=store.job_source(job_id),
        tool_version=package_version(),
    )
    targets = tuple((f.n, f.path, sidecar_of(store, f)) for f in files if f.path)
    return JobProvenance(job_id, record, targets)


def write_sidecars(out_dir: Path, job: JobProvenance) -> None:
    """Write each file's sidecar (in a worker thread). OSError as a file write's."""
    for n, path, side in job.targets:
        record = {**job.record, "file": {"n": n + 1, "path": path}}
        data = json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
        write_atomic(out_dir / side, data)


def without_sidecar(
    out_dir: Path,
    records: Iterable[FileRow],
    name: Callable[[str], str] = sidecar_path,
) -> list[FileRow]:
    """Those of `records` (verified outputs) with no sidecar at `name(path)` (by default
    `NAME.json`), or an empty one: a stat each, in the walk's worker thread."""
    out: list[FileRow] = []
    for rec in records:
        if not rec.path:
            continue
        try:
            if os.stat(out_dir / name(rec.path)).st_size > 0:
                continue
        except OSError:
            pass
        out.append(rec)
    return out
