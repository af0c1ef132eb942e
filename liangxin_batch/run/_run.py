"""`run_batch_async`: the library call behind `liangxin-batch run` (and `run_batch`).

Validate everything, sync the state file, then run. The CLI adds signals, bars and
the summary text; everything else a user can do from Python too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from liangxin_batch._version import package_version
from liangxin_batch.catalog._catalog import Catalog, default_catalog, estimate_credits
from liangxin_batch.core._records import Job
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import JobState, refetch_only, retry_states
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import ConfigError, LiangXinBatchError, ManifestError
from liangxin_batch.manifest._fingerprint import (
    manifest_fingerprint,
    same_manifest,
    stored_models,
    with_models,
)
from liangxin_batch.manifest._spool import JobSpool
from liangxin_batch.outputs._gallery import CREDITS_ROUND_UP_KEY, REPORT_HTML, write_reports
from liangxin_batch.outputs._layout import Layout
from liangxin_batch.outputs._report import RESULTS_CSV
from liangxin_batch.outputs._thumbs import ensure_previews
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._credentials import AccountKey, load_accounts
from liangxin_batch.run._download import Downloader, DownloadLimits
from liangxin_batch.run._live_report import live_report
from liangxin_batch.run._progress import NullObserver, Observer
from liangxin_batch.run._provenance import set_aside_provenance
from liangxin_batch.run._run_log import attach_run_log
from liangxin_batch.run._runner import Interrupt, Runner
from liangxin_batch.run._upload_client import (
    ENV_UPLOAD_BASE_URL,
    UploadClient,
    upload_base_url_from,
)
from liangxin_batch.run._worker import alone, join_as_worker, leave, refuse_another_manifest
from liangxin_batch.state._backends import open_shared_limits, open_state, peek_state_meta
from liangxin_batch.state._lock import RunLock
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import COLUMNS_KEY, FINGERPRINT_KEY, SyncReport, sync_jobs

if TYPE_CHECKING:  # the receiver (starlette) is imported only when callbacks are on
    from liangxin_batch.run._callback_link import CallbackLink

#: The library logger that run.log attaches to.
_pkg = "liangxin_batch"

#: Where --allow-changed moves the files of finished jobs that start over.
SUPERSEDED_DIR = "superseded"

#: An interrupted run of more jobs than this leaves its reports to `report` or the next
#: run (rebuilding them takes seconds per 100,000 jobs; the first Ctrl-C must not wait).
REPORTS_ON_INTERRUPT_MAX_JOBS = 20_000


__all__ = [
    "CallbackOptions",
    "RunHandle",
    "load_manifest_jobs",
    "run_batch_async",
]


#: The callback receiver's address: loopback (a proxy or tunnel exposes it), and not
#: 8787, where `simulate` listens by default.
DEFAULT_LISTEN = "127.0.0.1:8788"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackOptions:
    """Receive the service's callbacks on `listen`, reachable from outside at `public_base`."""

    public_base: str
    listen: str = DEFAULT_LISTEN
    hmac_key: str | None = None
    #: Opt-in: a signed success with its result URLs is taken without a recordInfo,
    #: accepting that a party on the callback's path could swap the URLs (_callback_link).
    trust_signed: bool = False
    #: Tests route callbacks in-process (see `receiver_ready`) instead of listening.
    in_process: bool = False
    #: Unix time for the signature's timestamp window (tests and simulators inject theirs).
    clock: Callable[[], float] = time.time

    def __repr__(self) -> str:  # never show the HMAC key
        return f"CallbackOptions(public_base={self.public_base!r}, listen={self.listen!r})"


ManifestSource = Path | str | Iterable[Mapping[str, Any]] | Any  # Any: a pandas DataFrame


@dataclass
class RunHandle:
    """Lets a caller (the CLI's signal handler) reach the runner while it runs."""

    runner: Runner | None = None
    interrupted: bool = False
    #: Called once the runner exists (the CLI installs its signal handlers then: until
    #: that moment nothing has been sent, and a plain KeyboardInterrupt is the right stop).
    on_attach: Callable[[], None] | None = None

    def interrupt(self) -> None:
        self.interrupted = True
        if self.runner is not None:
            self.runner.interrupt()

    def attach(self, runner: Runner) -> None:
        self.runner = runner
        if self.on_attach is not None:
            self.on_attach()
        if self.interrupted:  # Ctrl-C came while the manifest was still loading
            runner.interrupt()


def load_manifest_jobs(
    source: ManifestSource,
    *,
    catalog: Catalog,
    default_model: str | None = None,
    allow_outside: bool = False,
) -> JobSpool:
    """Validate the whole manifest, reading it once; its jobs, to walk as often as needed.

    The jobs are spooled to a temporary file as they are validated (bounded memory for a
    million rows). Close the spool when done.
    """
    import liangxin_batch.manifest._manifest as _manifest

    spool = _new_spool()
    keep = _keep_in(spool)
    try:
        if isinstance(source, str | Path):
            report = _manifest.validate_manifest(
                Path(source),
                catalog=catalog,
                default_model=default_model,
                allow_outside=allow_outside,
                keep=keep,
            )
            if report.problems:
                raise ManifestError(report.problems, total=report.total_problems)
            spool.local_stats = dict(report.local_stats)
        else:
            records = _records(source)
            for job in _manifest.jobs_from_records(
                records, catalog=catalog, default_model=default_model
            ):
                keep(job)
    except BaseException:
        spool.close()
        raise
    return spool


_SPOOL_ADVICE = "set TMPDIR to a folder with space"


def _new_spool() -> JobSpool:
    try:
        return JobSpool()
    except OSError as err:
        raise ConfigError(
            f"cannot make a temporary file for the manifest's jobs ({err.strerror or err}); "
            + _SPOOL_ADVICE
        ) from None


def _keep_in(spool: JobSpool) -> Callable[[Job], None]:
    def keep(job: Job) -> None:
        try:
            spool.add(job)
        except OSError as err:  # the temporary folder is full or unwritable
            raise ConfigError(
                f"cannot keep the manifest's jobs in a temporary file "
                f"({err.strerror or err}); " + _SPOOL_ADVICE
            ) from None

    return keep


def _records(source: Any) -> list[Mapping[str, Any]]:
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # a DataFrame
        return [
            {str(k): v for k, v in row.items() if v is not None and v == v}  # drop NaN
            for row in source.to_dict(orient="records")
        ]
    return [dict(r) for r in source]


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        why = err.strerror or str(err)
        if isinstance(err, (FileExistsError, NotADirectoryError)):
            why += ": a file is in the way"
        raise ConfigError(
            f"cannot create the output folder {out} ({why}); choose another place"
        ) from None


async def run_batch_async(
    manifest: ManifestSource,
    *,
    out_dir: Path | str,
    settings: RunSettings | None = None,
    catalog: Catalog | None = None,
    default_model: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    observer: Observer | None = None,
    handle: RunHandle | None = None,
    callbacks: CallbackOptions | None = None,
    receiver_ready: Callable[[Any], None] | None = None,
    download_transport: httpx.AsyncBaseTransport | None = None,
    allow_outside: bool = False,
    upload_base_url: str | None = None,
    upload_transport: httpx.AsyncBaseTransport | None = None,
    accounts: Path | str | Sequence[AccountKey] | None = None,
) -> RunSummary:
    """Run a manifest to finished tasks in `out_dir`; safe to call again to resume.

    Local input files are uploaded to `upload_base_url` (default
    `$LIANGXIN_UPLOAD_BASE_URL`; no public default) just before their jobs are sent;
    a batch that has some and no upload host is refused before anything is sent.
    `upload_transport` serves the upload host in tests.

    With `callbacks`, a receiver listens for the service's callbacks for the life of the
    run; polling continues, slower, as the safety net. `receiver_ready` is called with
    the CallbackReceiver before the first submit (tests use it to route callbacks).
    `download_transport` serves result files in tests; it never carries the API key.

    `accounts`: an accounts file (`--accounts`), or its accounts already loaded: jobs
    are spread over them, each with its own key and limits, and every task is polled
    and downloaded with the key of the account that created it. Without, the one
    account is `default`, with `api_key` (or LIANGXIN_API_KEY).
    """
    settings = settings or RunSettings()
    catalog = catalog or default_catalog()
    observer = observer or NullObserver()
    out = Path(out_dir)
    # A bad accounts file stops here, before anything is read or sent.
    keys = load_accounts(Path(accounts)) if isinstance(accounts, str | Path) else accounts

    def load() -> JobSpool:
        return load_manifest_jobs(
            manifest, catalog=catalog, default_model=default_model, allow_outside=allow_outside
        )

    def fingerprint_beside(stored: str | None) -> str | None:
        """The manifest's fingerprint, to compare with the state's (`stored`)."""
        if not isinstance(manifest, str | Path):
            return None
        return manifest_fingerprint(
            Path(manifest),
            catalog=catalog,
            default_model=default_model,
            allow_outside=allow_outside,
            version=package_version(),
            models=stored_models(stored),  # the catalog as far as the batch uses it
        )

    stored = None
    if isinstance(manifest, str | Path):
        stored = peek_state_meta(out, FINGERPRINT_KEY, url=settings.state_url)
    fingerprint = fingerprint_beside(stored)
    # The state already holds what an unchanged manifest would give: no validation and
    # no sync (checked again under the run lock, below).
    unchanged = fingerprint is not None and same_manifest(stored, fingerprint)
    jobs = None if unchanged else load()
    try:
        file_layout = Layout.parse(settings.layout)  # a bad template stops here, unspent
        if file_layout.column_fields:
            file_layout.check_columns(
                jobs.column_names if jobs is not None else _stored_columns(out, settings.state_url)
            )
        # The client is built before anything is written, so a missing key costs nothing.
        client = LiangXinClient(
            api_key=api_key,
            accounts=keys,
            base_url=base_url,
            transport=transport,
            settings=settings,
        )
        upload_url = upload_base_url_from(upload_base_url)
    except BaseException:
        if jobs is not None:
            jobs.close()
        raise
    async with contextlib.AsyncExitStack() as stack:
        if jobs is not None:
            stack.callback(jobs.close)
        stack.push_async_callback(client.aclose)
        uploads = None
        by_account: dict[str, UploadClient] = {}
        if upload_url is not None:
            for account in keys or ():  # each account uploads with its own key
                by_account[account.name] = UploadClient(
                    upload_base_url=upload_url,
                    api_key=account.key.reveal(),
                    settings=settings,
                    transport=upload_transport,
                )
                stack.push_async_callback(by_account[account.name].aclose)
            uploads = next(iter(by_account.values()), None) or UploadClient(
                upload_base_url=upload_url,
                api_key=api_key,
                settings=settings,
                transport=upload_transport,
            )
            if not by_account:
                stack.push_async_callback(uploads.aclose)
        _make_folder(out)  # what is wrong here locally is said before any network wait
        await client.check_reachable()  # a wrong base URL: said in seconds, nothing sent
        shared = settings.state_url is not None  # workers of one batch share DIR
        if not shared:
            stack.enter_context(RunLock(out))  # before the state is opened: one run per folder
        store = open_state(out, url=settings.state_url)
        stack.callback(store.close)
        if settings.state_url is not None:  # its workers pace by limits they share
            limits = open_shared_limits(out, settings.state_url)
            stack.callback(limits.close)
            pacer = ThreadPoolExecutor(1, thread_name_prefix="liangxin-limits")
            # At the end nothing waits on a reservation stuck on the network.
            stack.callback(pacer.shutdown, wait=False, cancel_futures=True)
            client.share_limits(limits, pacer)
        stack.enter_context(_run_log(out))
        waiting = "another worker of this batch is syncing the manifest: waiting for it"
        # Workers of a shared batch: one syncs, the others wait (told why).
        with store.batch_lock("sync", on_wait=lambda: observer.message(waiting)):
            if (now_stored := store.get_meta(FINGERPRINT_KEY)) != stored:
                stored, fingerprint = now_stored, fingerprint_beside(now_stored)
            if jobs is None and not same_manifest(stored, fingerprint):
                jobs = load()  # another run synced another manifest in between
                stack.callback(jobs.close)
            elif jobs is not None and shared and same_manifest(stored, fingerprint):
                jobs = None  # another worker synced this manifest meanwhile
            if jobs is not None and shared:
                refuse_another_manifest(store)
            # Every check that can refuse the run happens inside the sync's transaction: a
            # refusal rolls it back, and nothing is moved on disk before it has passed.
            if jobs is None:
                sync = SyncReport(unchanged=True)
                with store.transaction():
                    _check_budget(store, catalog, settings)
            else:
                spool = jobs
                sync = sync_jobs(
                    store,
                    jobs,
                    allow_changed=settings.allow_changed,
                    check=lambda: _check_budget(store, catalog, settings),
                    fingerprint=with_models(fingerprint, catalog, spool.models, spool.local_stats),
                    column_names=lambda: spool.column_names,
                )
            # Registered before the lock is let go: a worker given another manifest
            # is refused from here on (refuse_another_manifest).
            worker = join_as_worker(store, settings, observer) if shared else None
            if worker is not None:
                stack.callback(worker.abandon)  # ended already when the run ends normally
        if upload_url is None:
            _refuse_local_files_without_host(store, settings)
        _remember_manifest(store, manifest, observer, sync)
        _remember_billing(store, catalog)
        _set_aside_superseded(out, sync, observer)
        # A Ctrl-C that came during the (synchronous) validation and sync lands here,
        # before anything changes state beyond the sync, which committed whole.
        await asyncio.sleep(0)
        # Only Ctrl-C halts downloads: after a 402 the results already paid for are
        # still fetched before their URLs expire.
        interrupt = Interrupt()
        downloader = Downloader(
            store=store,
            out_dir=out,
            client=client,
            layout=file_layout,
            observer=observer,
            concurrency=settings.download_concurrency,
            max_file_size=settings.max_file_size,
            transport=download_transport,
            limits=DownloadLimits.from_settings(settings),
            stopping=lambda: interrupt.requested,
            thumbnails=True,
            embed_metadata=settings.embed_metadata,
        )
        link = _callback_link(store, client, callbacks, receiver_ready)
        if worker is not None:
            worker.hold()
        runner = Runner(
            store=store,
            client=client,
            catalog=catalog,
            settings=settings,
            observer=observer,
            on_succeeded=downloader.handle,
            callback_url_for=link.url_for if link is not None else None,
            interrupt=interrupt,
            # A deleted or changed file is fetched again, found in the background (by
            # `report` and a single run: workers sharing DIR would fetch it twice).
            output_check=downloader.lost_outputs if worker is None else None,
            upload_client=uploads,
            upload_clients=by_account,
            worker=worker,
        )
        if handle is not None:  # from here on Ctrl-C is the runner's checkpointing stop
            handle.attach(runner)
        downloader.prepare()
        runner.prepare()
        progress = _progress_counts(store)
        total = progress["total"]
        observer.start(**progress)
        started = time.monotonic()
        store.begin_session()
        summary: RunSummary | None = None
        # Workers sharing DIR: the last to end writes the report, none refreshes it.
        refresh = live_report(out, store, settings if worker is None else alone(settings), observer)
        try:
            async with refresh:
                if callbacks is None or link is None:
                    summary = await runner.run()
                else:
                    summary = await _run_with_callbacks(runner, link, callbacks, observer)
            return summary
        finally:
            await downloader.aclose()
            with contextlib.suppress(LiangXinBatchError):  # a full disk: said elsewhere
                store.end_session()  # (the next run closes it at its last event)
            others = leave(worker, observer, stopped=interrupt.requested)
            # Reports are written at the end of every run, and of an interrupted one when
            # that takes a moment: a Ctrl-C must not wait minutes for a million rows.
            if others:
                if summary is not None:
                    summary.reports_written, summary.other_workers = False, others
                written = False
            elif interrupt.requested and total > REPORTS_ON_INTERRUPT_MAX_JOBS:
                observer.message(
                    f"results.csv and report.html were not rebuilt ({total:,} jobs): run "
                    f"`liangxin-batch report {out}`, or run the batch again"
                )
                if summary is not None:
                    summary.reports_written = False
                written = False
            else:
                written = _write_reports(
                    out,
                    store,
                    observer,
                    time.monotonic() - started,
                    settings,
                    previews=not interrupt.requested,
                )
            if not written:  # a refreshed page must not say the batch still runs
                refresh.settle()
            observer.close()
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _run_log(out_dir: Path) -> Iterator[None]:
    log = logging.getLogger(_pkg)
    level = log.level
    handler = attach_run_log(out_dir, _pkg)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)  # the package's level is the application's, after the run
        handler.close()


def _set_aside_superseded(out: Path, sync: SyncReport, observer: Observer) -> None:
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


def _callback_link(
    store: StateStore,
    client: LiangXinClient,
    options: CallbackOptions | None,
    receiver_ready: Callable[[Any], None] | None,
) -> CallbackLink | None:
    """The callback receiver and its link to the runner, when callbacks are on."""
    if options is None:
        return None
    from liangxin_batch.run._callback_link import CallbackLink
    from liangxin_batch.run._webhook import CallbackReceiver, ReceiverSettings

    # One token per batch, not per process: callbacks for tasks created before a crash
    # still reach the resumed run (and can reconcile jobs left `unknown`).
    token = store.get_meta("callback_token")
    if token is None:
        token = secrets.token_urlsafe(24)
        store.set_meta({"callback_token": token})
    receiver = CallbackReceiver(
        ReceiverSettings(public_base=options.public_base, hmac_key=options.hmac_key),
        token=token,
        clock=options.clock,
    )
    link = CallbackLink(
        receiver=receiver, client=client, store=store, trust_signed=options.trust_signed
    )
    if receiver_ready is not None:
        receiver_ready(receiver)
    return link


async def _run_with_callbacks(
    runner: Runner, link: CallbackLink, options: CallbackOptions, observer: Observer
) -> RunSummary:
    from liangxin_batch.run._webhook import serve_receiver

    receiver = link.receiver
    async with contextlib.AsyncExitStack() as stack:
        if not options.in_process:
            local = await stack.enter_async_context(serve_receiver(receiver, options.listen))
            observer.message(f"callbacks: listening on {local}, public at {options.public_base}")
        consumer = asyncio.create_task(link.consume(runner))
        try:
            summary = await runner.run()
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
    refused = {k: v for k, v in receiver.counters.items() if v and k != "accepted"}
    if refused:
        observer.message(f"callbacks refused or ignored: {refused}")
    summary.callbacks_received = receiver.counters.get("accepted", 0)
    return summary


def _remember_billing(store: StateStore, catalog: Catalog) -> None:
    """Whether the report must say that credits are whole per task, rounded up."""
    specs = (catalog.get(model) for model in store.counts_by_model())
    rounds = any(spec is not None and spec.price.round_up for spec in specs)
    store.set_meta({CREDITS_ROUND_UP_KEY: "1" if rounds else "0"})


def _remember_manifest(
    store: StateStore, manifest: ManifestSource, observer: Observer, sync: SyncReport
) -> None:
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


def _write_reports(
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


def _check_budget(store: StateStore, catalog: Catalog, settings: RunSettings) -> None:
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


def _refuse_local_files_without_host(store: StateStore, settings: RunSettings) -> None:
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


def _stored_columns(out: Path, url: str | None) -> set[str]:
    """The manifest's column names, as the last sync of this manifest recorded them."""
    return set(json.loads(peek_state_meta(out, COLUMNS_KEY, url=url) or "[]"))


def _progress_counts(store: StateStore) -> dict[str, int]:
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
