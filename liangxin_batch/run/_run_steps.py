"""What `run_batch_async` does around the runner: the output folder made, the checks
that can refuse a run before anything is sent (the credit cap, local files without an
upload host), the sync's notes, files of changed jobs set aside, where the bars start,
and results.csv and report.html written at the end unless nothing they show changed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from liangxin_batch.catalog._catalog import Catalog, estimate_credits
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import JobState, refetch_only, retry_states
from liangxin_batch.errors import ConfigError, LiangXinBatchError
from liangxin_batch.outputs._gallery import CREDITS_ROUND_UP_KEY, REPORT_HTML, write_reports
from liangxin_batch.outputs._report import RESULTS_CSV
from liangxin_batch.outputs._thumbs import ensure_previews
from liangxin_batch.run._manifest_jobs import ManifestSource
from liangxin_batch.run._progress import Observer
from liangxin_batch.run._provenance import set_aside_provenance
from liangxin_batch.run._upload_client import ENV_UPLOAD_BASE_URL
from liangxin_batch.state._backends import peek_state_meta
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import COLUMNS_KEY, SyncReport

__all__ = [
    "SUPERSEDED_DIR",
    "check_credit_cap",
    "make_folder",
    "progress_counts",
    "refuse_local_files_without_host",
    "remember_billing",
    "remember_manifest",
    "set_aside_superseded",
    "stored_columns",
    "write_reports_if_changed",
]


#: Where --allow-changed moves the files of finished jobs that start over.
SUPERSEDED_DIR = "superseded"


def make_folder(out: Path) -> None:
    """The output folder, made before any network wait; ConfigError saying why not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = err.strerror or str(err)
        if isinstance(err, (FileExistsError, NotADirectoryError)):
            why += ": a file is in the way"
        raise ConfigError(
            f"cannot create the output folder {out} ({why}); choose another place"
        ) from None


def set_aside_superseded(out: Path, sync: SyncReport, observer: Observer) -> None:
    """--allow-changed starts finished jobs over: keep their old files, out of the way."""
    moved = 0
    for job_id, attempt, paths in sync.superseded:
        kept = out / SUPERSEDED_DIR / job_id / f"attempt-{attempt}"
        for rel in paths:
            source = out / rel
            target = kept / Path(rel).name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
                moved += 1
            except OSError as err:
                observer.message(f"{job_id}: could not set aside {rel} ({err}); it may be replaced")
            set_aside_provenance(out, rel, kept)
    if moved:
        observer.message(
            f"{moved} file(s) of jobs whose content changed kept under {SUPERSEDED_DIR}/"
        )


def remember_billing(store: StateStore, catalog: Catalog) -> None:
    """Whether the report must say that credits are whole per task, rounded up."""
    specs = (catalog.get(model) for model in store.counts_by_model())
    rounds = any(spec is not None and spec.price.round_up for spec in specs)
    store.set_meta({CREDITS_ROUND_UP_KEY: "1" if rounds else "0"})


def remember_manifest(
    store: StateStore, manifest: ManifestSource, observer: Observer, sync: SyncReport
) -> None:
    """Record which manifest the state runs now, and tell what its sync changed."""
    name = str(Path(manifest).resolve()) if isinstance(manifest, str | Path) else "<records>"
    before = store.get_meta("manifest")
    if before is not None and before != name:
        observer.message(f"note: this state was made from {before}; now running {name}")
    store.set_meta({"manifest": name, "last_run_at": str(time.time())})
    if sync.added and before is not None:
        observer.message(f"{sync.added} new job(s) added from the manifest")
    started_over = len(sync.changed) - len(sync.deferred)
    if started_over:
        observer.message(
            f"{started_over} job(s) changed content (--allow-changed): they start over"
        )
    if sync.deferred:
        observer.message(
            f"{len(sync.deferred)} changed job(s) still have a task of the old content in "
            f"flight ({', '.join(sync.deferred[:5])}); it finishes first: run again with "
            "--allow-changed afterwards to start the new content"
        )
    if sync.removed:
        observer.message(
            f"{sync.removed} job(s) in the state are no longer in the manifest; kept, not run"
        )


#: State meta: what the state was when the reports were last written (`change_stamp`)
#: and the options they were written with.
_REPORTS_KEY = "reports_stamp"


def write_reports_if_changed(
    out: Path,
    store: StateStore,
    observer: Observer,
    wall: float,
    settings: RunSettings,
    *,
    previews: bool = True,
) -> bool:
    """results.csv and report.html, unless nothing they show changed since they were
    written (a resume of a finished batch: minutes at a million jobs, for nothing);
    whether they were written.

    `previews`: first make the previews the downloader did not (a state from before
    they were recorded, whose thumbnails are found made; a preview that failed to be
    written): an empty index search when there are none. Not after a Ctrl-C, which
    must not wait for thumbnails (the next report makes them)."""
    try:
        if previews:
            ensure_previews(store, out, max_pixels=settings.max_image_pixels)
    except (OSError, LiangXinBatchError) as err:
        observer.message(f"previews not made ({err}); the report shows placeholders")
    stamp = json.dumps([store.change_stamp(), settings.csv_safe, settings.max_image_pixels])
    current = (out / RESULTS_CSV).exists() and (out / REPORT_HTML).exists()
    if current and store.get_meta(_REPORTS_KEY) == stamp:
        return False
    try:
        write_reports(
            out,
            store,
            csv_safe=settings.csv_safe,
            wall_seconds=wall,
            max_pixels=settings.max_image_pixels,
        )
    except (OSError, LiangXinBatchError) as err:
        observer.message(
            f"could not write the reports ({err}); rebuild: liangxin-batch report {out}"
        )
        return False
    try:
        store.set_meta({_REPORTS_KEY: stamp})
    except (OSError, LiangXinBatchError) as err:  # the next run writes them again
        observer.message(f"the reports are written, but not recorded as such ({err})")
    return True


def check_credit_cap(store: StateStore, catalog: Catalog, settings: RunSettings) -> None:
    """ConfigError when the jobs still to send are estimated above --max-credits."""
    if settings.max_credits is None:
        return
    # Checked inside the sync's transaction, before --retry-failed/--resubmit-unknown
    # change any state and before --allow-changed moves any file, so a refusal leaves the
    # state and the folder exactly as they were; the jobs those flags would send count.
    again = retry_states(
        retry_failed=settings.retry_failed, resubmit_unknown=settings.resubmit_unknown
    )
    if settings.resubmit_unknown:  # a kill's `submitting` jobs become unknown, then go again
        again.append(JobState.SUBMITTING)
    todo = 0.0
    for job in store.iter_jobs([JobState.PENDING, *again], in_manifest=True):
        if refetch_only(job.state):
            continue  # only fetched again: no new task
        spec = catalog.get(job.model)
        if spec is not None:
            todo += estimate_credits(spec, job.input)
    if todo > settings.max_credits:
        raise ConfigError(
            f"the jobs still to submit are estimated at {todo:,.1f} credits, more than "
            f"--max-credits {settings.max_credits:,.1f}; nothing was sent. Raise the cap or "
            "run a smaller manifest."
        )


def refuse_local_files_without_host(store: StateStore, settings: RunSettings) -> None:
    """Jobs to send name local files, and no upload host is set: say what to set before
    anything is sent (a batch whose local-file jobs are all finished needs no host)."""
    states = [
        JobState.PENDING,
        *retry_states(
            retry_failed=settings.retry_failed, resubmit_unknown=settings.resubmit_unknown
        ),
    ]
    waiting = store.local_inputs_to_send(states)
    if waiting:
        raise ConfigError(
            f"{waiting:,} job(s) to send name local files, which are uploaded first, but no "
            f"upload host is configured: set {ENV_UPLOAD_BASE_URL}=https://<your LiangXin "
            "upload host> (from the LiangXin docs or console) or pass --upload-base-url; "
            "nothing was sent"
        )


def stored_columns(out: Path, url: str | None) -> set[str]:
    """The manifest's column names, as the last sync of this manifest recorded them."""
    return set(json.loads(peek_state_meta(out, COLUMNS_KEY, url=url) or "[]"))


def progress_counts(store: StateStore) -> dict[str, int]:
    """Where the bars start: what the state says is already submitted, finished (the
    generation is over, whatever became of it) and downloaded."""
    counts = store.counts()
    total = sum(counts.values())
    waiting = counts.get(JobState.PENDING.value, 0) + counts.get(JobState.SUBMITTING.value, 0)
    in_flight = counts.get(JobState.SUBMITTED.value, 0)
    return {
        "total": total,
        "submitted": total - waiting,
        "finished": total - waiting - in_flight,
        "downloaded": counts.get(JobState.DONE.value, 0),
    }
