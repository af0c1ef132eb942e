"""The runner: takes the jobs in a state file to finished tasks, and wires the parts.

- `Submitter` (`_submitter.py`) turns pending jobs into tasks, never one twice;
- `PollScheduler` (`_poller.py`) asks recordInfo about each task until it ends;
- a bounded download queue here hands paid results to the downloader, and the
  submitter waits while it is full;
- `RunControl` (`_control.py`) is what they share: the stop reasons, the slots, the
  spawned calls.

Three independent limits: createTask rate (exact sliding window), recordInfo rate, and
tasks in flight. Recovery from a crash is a pure plan per job (`core.recovery_step`)
that the store applies before anything is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from liangxin_batch.catalog._catalog import Catalog
from liangxin_batch.core._accounts import DEFAULT_ACCOUNT
from liangxin_batch.core._clock import Clock
from liangxin_batch.core._envelope import TaskRecord
from liangxin_batch.core._schedule import SAFETY_NET_STRETCH
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import (
    RECOVERY_ORDER,
    Event,
    JobState,
    recovery_step,
    report_counts,
)
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import DiskFullError
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._control import Interrupt, LoopClock, RunControl, RunParts
from liangxin_batch.run._poller import PollScheduler
from liangxin_batch.run._progress import NullObserver, Observer, logger
from liangxin_batch.run._submitter import CallbackUrlFor, Submitter
from liangxin_batch.run._upload_client import UploadClient
from liangxin_batch.run._uploader import Uploader
from liangxin_batch.run._worker import Worker
from liangxin_batch.state._status import TOP_UP_KEY
from liangxin_batch.state._store import JobRow, StateStore

__all__ = ["FinishHook", "Interrupt", "RunSummary", "Runner"]

#: Called once a task's generation succeeded, to fetch its files.
FinishHook = Callable[[JobRow], Awaitable[None]]
#: Walks the done jobs' files in the background, yielding the jobs moved back to be
#: fetched again (`Downloader.lost_outputs`); its argument says when to stop.
OutputCheck = Callable[[Callable[[], bool]], AsyncIterator[JobRow]]


class Runner:
    def __init__(
        self,
        *,
        store: StateStore,
        client: LiangXinClient,
        catalog: Catalog,
        settings: RunSettings,
        observer: Observer | None = None,
        on_succeeded: FinishHook | None = None,
        callback_url_for: CallbackUrlFor | None = None,
        interrupt: Interrupt | None = None,
        clock: Clock | None = None,
        output_check: OutputCheck | None = None,
        upload_client: UploadClient | None = None,
        upload_clients: Mapping[str, UploadClient] | None = None,
        worker: Worker | None = None,
    ) -> None:
        self.store = store
        #: One of several workers of a shared batch (run/_worker.py), or None: the only one.
        self._worker = worker
        self._output_check = output_check
        self.client = client
        self.settings = settings
        self.observer = observer or NullObserver()
        self._clock = clock or LoopClock()
        self._on_succeeded = on_succeeded
        self._control = RunControl(
            settings=settings, observer=self.observer, interrupt=interrupt or Interrupt()
        )
        self._download_queue: asyncio.Queue[JobRow] = asyncio.Queue()
        parts = RunParts(
            control=self._control,
            store=store,
            client=client,
            catalog=catalog,
            settings=settings,
            observer=self.observer,
            clock=self._clock,
        )
        self._poller = PollScheduler(
            parts,
            on_succeeded=self._enqueue_download if on_succeeded is not None else None,
            # With callbacks on, polls are the safety net only.
            stretch=SAFETY_NET_STRETCH if callback_url_for is not None else 1.0,
        )
        #: Local input files are looked for only in a batch that has any (one probe).
        self.uploader = (
            Uploader(
                client=upload_client,
                store=store,
                settings=settings,
                clock=self._clock,
                observer=self.observer,
                spawn=self._control.spawn,
                by_account=upload_clients,
            )
            if upload_client is not None and store.has_local_files()
            else None
        )
        self._submitter = Submitter(
            parts,
            poller=self._poller,
            callback_url_for=callback_url_for,
            uploader=self.uploader,
            pending=(lambda: worker.pending(self._control)) if worker is not None else None,
        )
        if worker is not None:
            worker.adopt = self._adopt
        self._prepared = False
        #: Tasks in flight not polled in this run, by the name of their missing account.
        self._accounts_missing: dict[str, int] = {}

    # -- public controls ------------------------------------------------------------

    def interrupt(self) -> None:
        """First Ctrl-C: stop starting new work; calls in progress finish and commit."""
        self._control.interrupt()

    @property
    def in_flight(self) -> int:
        """Tasks created (or being created) and not finished; at most three times
        `max_in_flight`, which counts those expected to be running at the service."""
        return self._control.in_flight

    # -- what callbacks reach (see _callback_link.py) ---------------------------------

    def has_flight(self, task_id: str) -> bool:
        return self._poller.has_flight(task_id)

    def poll_now(self, task_id: str) -> bool:
        """An unverified callback says a task is done: ask recordInfo at once."""
        return self._poller.poll_now(task_id)

    async def accept_signed(self, job_id: str, attempt: int, record: TaskRecord) -> bool:
        """A signed callback's success, taken without a recordInfo (see _callback_link)."""
        return await self._poller.accept_signed(job_id, attempt, record)

    async def adopt_task(self, job_id: str, attempt: int, task_id: str) -> bool:
        """An `unknown` job's task turned out to exist: track it instead of paying again."""
        return await self._poller.adopt_task(job_id, attempt, task_id)

    # -- the run --------------------------------------------------------------------

    def prepare(self) -> None:
        """Recover from a crash and apply --retry-failed/--resubmit-unknown (idempotent)."""
        if not self._prepared:
            self._prepared = True
            self._recover()

    async def run(self) -> RunSummary:
        control = self._control
        started = self._clock.monotonic()
        self.prepare()
        workers: list[asyncio.Task[None]] = []
        if self._on_succeeded is not None:
            workers = [
                asyncio.create_task(self._download_worker(self._on_succeeded))
                for _ in range(self.settings.download_concurrency)
            ]
            # Generated earlier, files not all on disk yet: through the same bounded queue.
            control.spawn(self._feed_backlog())
        submitter = asyncio.create_task(self._submitter.run())
        poller = asyncio.create_task(self._poller.run())
        if self._worker is not None:
            workers.append(asyncio.create_task(self._worker.heartbeat(control)))
        try:
            await submitter
            self._poller.submitting_done = True
            control.wake.set()
            await poller
            # Calls already in progress finish and commit, even after an interrupt.
            while control.busy or (control.backlog and not control.downloads_halted):
                if control.busy:
                    await control.settle()
                else:
                    await control.wait_change()
        finally:
            # Normally nothing is left; after a cancellation (Ctrl-C before the runner's
            # own handlers, or a caller's cancel) spawned calls must not outlive the run.
            leftover = [t for t in (submitter, poller, *workers) if not t.done()]
            leftover += control.leftover()
            for task in leftover:
                task.cancel()
            if leftover:
                await asyncio.gather(*leftover, return_exceptions=True)
        if control.failure is not None:
            raise control.failure
        summary = self._summary(self._clock.monotonic() - started)
        # For `status`: which accounts need a top-up (none: a top-up was made).
        self.store.set_meta({TOP_UP_KEY: ",".join(summary.accounts_to_top_up)})
        return summary

    # -- downloads: a bounded queue the submitter respects ------------------------------

    async def _feed_backlog(self) -> None:
        control = self._control
        limit = self.settings.max_download_backlog
        for job in self.store.iter_jobs([JobState.SUCCEEDED]):
            await control.wait_for_room(lambda: control.backlog < limit or control.downloads_halted)
            if control.downloads_halted:
                return
            self._enqueue_download(job)
        if self._output_check is None:
            return
        # Then, behind the new work: finished jobs whose files were deleted or changed.
        async for job in self._output_check(lambda: control.downloads_halted):
            await control.wait_for_room(lambda: control.backlog < limit or control.downloads_halted)
            if control.downloads_halted:
                return
            self._enqueue_download(job)

    def _enqueue_download(self, job: JobRow) -> None:
        self._control.backlog += 1
        self._download_queue.put_nowait(job)

    async def _download_worker(self, fetch: FinishHook) -> None:
        control = self._control
        while True:
            job = await self._download_queue.get()
            try:
                if not control.downloads_halted:
                    await fetch(job)
            except DiskFullError as err:
                control.stop_for_disk(err)
            except Exception as err:  # a bug: stop the run and raise it, never hang on it
                control.fail_run(err)
            finally:
                control.backlog -= 1
                await control.notify_slots()

    # -- recovery -------------------------------------------------------------------

    def _adopt(self, job: JobRow) -> None:
        """A task a dead worker left, now this one's: polled to its end, or downloaded."""
        if job.state is JobState.SUBMITTED:
            if (job.account or DEFAULT_ACCOUNT) not in self.client.accounts:
                self._missing_account(job)  # never polled with another account's key
                return
            self._control.in_flight += 1
            self._poller.resume(job, overdue=True)
        elif job.state is JobState.SUCCEEDED and self._on_succeeded is not None:
            self._enqueue_download(job)

    def _recover(self) -> None:
        """Bring a state file left by a crash or Ctrl-C back to a runnable shape."""
        if self._worker is not None:  # only what no live worker holds, taken first
            self._worker.claim_left_over()
        s = self.settings
        # The service still counts an earlier process's creates in its window (each
        # account's in its own): so do we.
        mono, wall = self._clock.monotonic(), self._clock.wall()
        for account in self.client.accounts.values():
            limiter = account.create_limiter
            since = wall - limiter.window - limiter.margin
            recent = self.store.submits_since(since, account=account.name)
            limiter.prime([mono - (wall - at) for at in recent])
        # Latencies learned by earlier runs of this batch: a resume schedules by them.
        for job in self.store.recent_generations():
            assert job.generation_seconds is not None
            seconds = job.generation_seconds / s.poll_scale
            self._poller.estimate_for(job.model, job.input).observe(seconds)
        repoll: set[str] = set()
        for state in RECOVERY_ORDER:  # the plan is pure (core); the store applies it
            for job in self.store.iter_jobs([state]):
                step = recovery_step(
                    job.state,
                    has_task=bool(job.task_id),
                    in_manifest=job.in_manifest,
                    retry_failed=s.retry_failed,
                    resubmit_unknown=s.resubmit_unknown,
                )
                if step is None:
                    continue
                errors = (
                    {"error_code": None, "error_message": None}
                    if step.clear_error
                    else {"error_message": step.error_message}
                    if step.error_message
                    else {}
                )
                self.store.transition(
                    job.job_id,
                    step.event,
                    message=step.message,
                    attempt=job.attempt if step.event is Event.INTERRUPTED_SUBMIT else None,
                    **errors,
                )
                if step.event is Event.REPOLL:
                    repoll.add(job.job_id)
        for job in self.store.iter_jobs([JobState.SUBMITTED]):
            if (job.account or DEFAULT_ACCOUNT) not in self.client.accounts:
                self._missing_account(job)
                continue
            self._control.in_flight += 1
            self._poller.resume(job, overdue=job.job_id in repoll)
        for name, count in self._accounts_missing.items():
            self.observer.message(
                f"{count} task(s) created by account {name!r}, which is not in the accounts "
                "file, are not polled in this run (never with another account's key): they "
                f"stay submitted; run with an accounts file that names {name!r} to finish them"
            )

    def _missing_account(self, job: JobRow) -> None:
        """A task whose creator is not among this run's accounts: left `submitted` for a
        run that has its key, said in its history and in the summary."""
        name = job.account or DEFAULT_ACCOUNT
        self._accounts_missing[name] = self._accounts_missing.get(name, 0) + 1
        note = (
            f"task {job.task_id} not polled: it was created by account {name!r}, which is "
            "not among this run's accounts"
        )
        logger.info("%s: %s", job.job_id, note)
        # Off the loop on PostgreSQL: a worker adopting a dead one's tasks may meet many.
        self._control.spawn(self.store.call(self.store.record_event, "note", note, job.job_id))

    def _accounts_to_top_up(self) -> list[str]:
        """The accounts a 402 stopped, by name: only for an accounts file (without one,
        a 402 reads as it always did)."""
        names = [a.name for a in self.client.accounts.values() if a.stopped]
        return names if names and self.client.named_accounts else []

    def _summary(self, wall: float) -> RunSummary:
        # Jobs removed from the manifest stay in the state (their tasks were paid for) but
        # are not part of this batch's outcome.
        downloads = self._on_succeeded is not None
        counts = report_counts(self.store.counts(in_manifest=True), downloads=downloads)
        credits = self.store.credits(in_manifest=True)
        removed = self.store.credits(in_manifest=False)
        return RunSummary(
            counts=counts,
            credits=credits.total,
            credits_estimated=credits.estimated,
            wall_seconds=wall,
            stopped_reason=self._control.stop_reason,
            interrupted=self._control.interrupted,
            unknown_jobs=self.store.job_ids(JobState.UNKNOWN),
            polls=self._poller.polls,
            tasks_finished=self._poller.finished_tasks,
            finished_by_callback=self._poller.finished_by_callback,
            removed_jobs=self.store.removed_count(),
            removed_credits=removed.total,
            downloads=downloads,
            uploads=self.uploader.uploads if self.uploader is not None else 0,
            upload_bytes=self.uploader.upload_bytes if self.uploader is not None else 0,
            accounts_to_top_up=self._accounts_to_top_up(),
            accounts_missing=dict(self._accounts_missing),
        )
