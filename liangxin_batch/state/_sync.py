"""Bring a state file in line with the manifest it runs (pure decisions, store writes).

New jobs are added as pending, and the local files their inputs name (by file token)
are recorded with the path the manifest gives them now; a known id whose content changed
is an error unless the user allows it; jobs that left the manifest stay in the state and
are reported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from liangxin_batch.core._local_files import LocalFile
from liangxin_batch.errors import StateError
from liangxin_batch.state._store import StateStore

__all__ = ["COLUMNS_KEY", "FINGERPRINT_KEY", "JobLike", "SyncReport", "sync_jobs"]

_BATCH = 2000

#: State meta, written by the sync in its own transaction: the fingerprint of the
#: manifest it read (`manifest._fingerprint`; absent: the next run reads the manifest
#: again) and its column names (the output layout's check, without the manifest).
FINGERPRINT_KEY = "manifest_fingerprint"
COLUMNS_KEY = "manifest_columns"


class JobLike(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def model(self) -> str: ...
    @property
    def input(self) -> Mapping[str, Any]: ...
    @property
    def columns(self) -> Mapping[str, str]: ...
    @property
    def content_hash(self) -> str: ...

    # A `Job` also has `local_files` (the files its file tokens name); a JobLike without
    # it has none.


@dataclass
class SyncReport:
    total: int = 0
    added: int = 0
    changed: list[str] = field(default_factory=list)
    #: Changed, allowed, but a task of the old content is still in flight: next run.
    deferred: list[str] = field(default_factory=list)
    #: Changed and started over: (job_id, its last attempt, the files it had).
    superseded: list[tuple[str, int, list[str]]] = field(default_factory=list)
    removed: int = 0
    #: The manifest is the one the last sync read (its fingerprint): nothing was read.
    unchanged: bool = False


def sync_jobs(
    store: StateStore,
    jobs: Iterable[JobLike],
    *,
    allow_changed: bool,
    check: Callable[[], None] | None = None,
    fingerprint: str | None = None,
    column_names: Callable[[], Iterable[str]] | None = None,
) -> SyncReport:
    """Add new jobs, mark membership; StateError (and the state untouched) on changed content.

    One transaction: a refusal rolls every write back, so a refused run leaves the state
    exactly as the last run left it. `check` runs last, inside it (the budget): whatever
    it raises rolls the sync back too.
    """
    report = SyncReport()
    with store.transaction():
        # Whatever is synced now, the fingerprint of an earlier manifest no longer says
        # what the state holds; the new one goes in with the sync, or none does.
        store.delete_meta(FINGERPRINT_KEY)
        store.start_membership()
        batch: list[JobLike] = []
        sources: dict[str, int] = {}
        for job in jobs:
            batch.append(job)
            if len(batch) >= _BATCH:
                _apply(store, batch, allow_changed, report, sources)
                batch = []
        _apply(store, batch, allow_changed, report, sources)
        report.removed = store.end_membership()
        _refuse_changed(store, report, allow_changed)
        if check is not None:
            check()
        remembered = {}
        if column_names is not None:
            remembered[COLUMNS_KEY] = json.dumps(sorted(column_names()))
        if fingerprint is not None and not report.deferred:
            # Deferred content changes must be looked at again next run.
            remembered[FINGERPRINT_KEY] = fingerprint
        if remembered:
            store.set_meta(remembered)
    return report


def _refuse_changed(store: StateStore, report: SyncReport, allow_changed: bool) -> None:
    if report.changed and not allow_changed:
        shown = ", ".join(report.changed[:20])
        more = f" and {len(report.changed) - 20} more" if len(report.changed) > 20 else ""
        raise StateError(
            f"{len(report.changed)} job(s) have the same id as in {store.where} but different "
            f"content: {shown}{more}. Give them new ids, use another --out folder, or pass "
            "--allow-changed to run the new content (earlier files are kept under superseded/). "
            "Nothing was sent."
        )


def _source_of(job: JobLike) -> tuple[str, int] | None:
    """The manifest file (absolute where it is a path) and line that wrote the job."""
    src = getattr(job, "source", None)
    if src is None:
        return None
    name = src.file
    if not (name.startswith("<") and name.endswith(">")):  # "<records>": not a file
        name = os.path.abspath(name)
    return name, src.line


def _apply(
    store: StateStore,
    batch: list[JobLike],
    allow_changed: bool,
    report: SyncReport,
    source_ids: dict[str, int],
) -> None:
    if not batch:
        return
    ids = [j.job_id for j in batch]
    store.mark_seen(ids)
    known = store.existing_hashes(ids)
    places = [_source_of(job) for job in batch]
    new_names = {p[0] for p in places if p is not None and p[0] not in source_ids}
    if new_names:
        source_ids.update(store.source_ids(new_names))
    rows = []
    sources: list[tuple[int | None, int | None]] = []
    files: dict[str, LocalFile] = {}
    for job, place in zip(batch, places, strict=True):
        report.total += 1
        source = (source_ids[place[0]], place[1]) if place is not None else (None, None)
        local: tuple[LocalFile, ...] = getattr(job, "local_files", ())
        for f in local:  # every job, unchanged ones too: a file may have moved
            files.setdefault(f.sha256, f)
        input_json = json.dumps(dict(job.input), sort_keys=True, ensure_ascii=False)
        columns_json = json.dumps(dict(job.columns), ensure_ascii=False)
        previous = known.get(job.job_id)
        if previous is None:
            report.added += 1
        elif previous[0] == job.content_hash and previous[1:] == (
            job.index,
            columns_json,
            1,
            *source,
        ):
            continue  # nothing to write: the same job at the same place
        elif previous[0] != job.content_hash:
            report.changed.append(job.job_id)
            if allow_changed:
                replaced = store.replace_content(
                    job.job_id, job.model, input_json, job.content_hash
                )
                if replaced is None:
                    report.deferred.append(job.job_id)
                elif replaced[1]:
                    report.superseded.append((job.job_id, *replaced))
        rows.append(
            (
                job.job_id,
                job.index,
                job.model,
                input_json,
                columns_json,
                job.content_hash,
            )
        )
        sources.append(source)
    if rows:
        store.upsert_jobs(rows, sources=sources)
    store.record_local_files(files.values())
