"""`run_batch_async`: the library call behind `liangxin-batch run` (and `run_batch`).

Validate everything, sync the state file, then run. The CLI adds signals, bars and
the summary text; everything else a user can do from Python too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from liangxin_batch._version import package_version
from liangxin_batch.catalog._catalog import Catalog, default_catalog
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import LiangXinBatchError
from liangxin_batch.manifest._fingerprint import (
    manifest_fingerprint,
    same_manifest,
    stored_models,
    with_models,
)
from liangxin_batch.manifest._spool import JobSpool
from liangxin_batch.outputs._layout import Layout
from liangxin_batch.run._callback_setup import CallbackOptions, callback_link, run_with_callbacks
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._credentials import AccountKey, load_accounts
from liangxin_batch.run._download import Downloader, DownloadLimits
from liangxin_batch.run._live_report import live_report
from liangxin_batch.run._manifest_jobs import ManifestSource, load_manifest_jobs
from liangxin_batch.run._progress import NullObserver, Observer
from liangxin_batch.run._run_log import attach_run_log
from liangxin_batch.run._run_steps import (
    check_credit_cap,
    make_folder,
    progress_counts,
    refuse_local_files_without_host,
    remember_billing,
    remember_manifest,
    set_aside_superseded,
    stored_columns,
    write_reports_if_changed,
)
from liangxin_batch.run._runner import Interrupt, Runner
from liangxin_batch.run._upload_client import UploadClient, upload_base_url_from
from liangxin_batch.run._worker import alone, join_as_worker, leave, refuse_another_manifest
from liangxin_batch.state._backends import open_shared_limits, open_state, peek_state_meta
from liangxin_batch.state._lock import RunLock
from liangxin_batch.state._sync import FINGERPRINT_KEY, SyncReport, sync_jobs

#: The library logger that run.log attaches to.
_pkg = "liangxin_batch"


#: An interrupted run of more jobs than this leaves its reports to `report` or the next
#: run (rebuilding them takes seconds per 100,000 jobs; the first Ctrl-C must not wait).
REPORTS_ON_INTERRUPT_MAX_JOBS = 20_000


__all__ = ["REPORTS_ON_INTERRUPT_MAX_JOBS", "RunHandle", "run_batch_async"]


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
                jobs.column_names if jobs is not None else stored_columns(out, settings.state_url)
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
        make_folder(out)  # what is wrong here locally is said before any network wait
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
                    check_credit_cap(store, catalog, settings)
            else:
                spool = jobs
                sync = sync_jobs(
                    store,
                    jobs,
                    allow_changed=settings.allow_changed,
                    check=lambda: check_credit_cap(store, catalog, settings),
                    fingerprint=with_models(fingerprint, catalog, spool.models, spool.local_stats),
                    column_names=lambda: spool.column_names,
                )
            # Registered before the lock is let go: a worker given another manifest
            # is refused from here on (refuse_another_manifest).
            worker = join_as_worker(store, settings, observer) if shared else None
            if worker is not None:
                stack.callback(worker.abandon)  # ended already when the run ends normally
        if upload_url is None:
            refuse_local_files_without_host(store, settings)
        remember_manifest(store, manifest, observer, sync)
        remember_billing(store, catalog)
        set_aside_superseded(out, sync, observer)
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
        link = callback_link(store, client, callbacks, receiver_ready)
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
        progress = progress_counts(store)
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
                    summary = await run_with_callbacks(runner, link, callbacks, observer)
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
                written = write_reports_if_changed(
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
