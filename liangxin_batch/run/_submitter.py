"""The submitter: turns pending jobs into tasks, one createTask each, never twice.

The order of writes is what makes a kill at any instant safe: the intent to submit is
committed before the POST (`begin_attempt`), the taskId the moment it arrives. A create
that may have reached the service without an answer is parked as `unknown` and never
repeated unless the user asks. What a failure means is decided in the pure core
(`decide_create_failure`); this module only applies it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from liangxin_batch.catalog._catalog import ModelSpec
from liangxin_batch.core._envelope import TaskRecord
from liangxin_batch.core._states import CreateVerdict, Event, JobState, decide_create_failure
from liangxin_batch.core._uploads import (
    input_fetch_failed,
    should_refresh_inputs,
    with_upload_urls,
)
from liangxin_batch.errors import APIError, ConfigError, InsufficientCreditsError, LiangXinError
from liangxin_batch.run._client import Account, CreateTurn
from liangxin_batch.run._control import STOPPED, RunPart, RunParts
from liangxin_batch.run._flight import Flight, write_outcome
from liangxin_batch.run._poller import PollScheduler
from liangxin_batch.run._progress import logger, tell
from liangxin_batch.run._upload_client import LocalFileChanged
from liangxin_batch.run._uploader import Uploader
from liangxin_batch.state._store import JobRow, TransitionRefused

__all__ = ["CallbackUrlFor", "Submitter"]

#: The callback URL to give createTask for a job's attempt (None: no callbacks).
CallbackUrlFor = Callable[[JobRow, int], str | None]

_BASE_URL_ENV = "LIANGXIN_BASE_URL"
#: Upload rounds (upload, wait for a turn, find the URLs stale) one createTask may take.
_UPLOAD_ROUNDS = 3


def _code_of(err: LiangXinError) -> str | None:
    if isinstance(err, APIError):
        return str(err.api_code) if err.envelope else f"http_{err.http_status}"
    return type(err).__name__


class Submitter(RunPart):
    def __init__(
        self,
        parts: RunParts,
        *,
        poller: PollScheduler,
        callback_url_for: CallbackUrlFor | None = None,
        uploader: Uploader | None = None,
        pending: Callable[[], AsyncGenerator[JobRow, None]] | None = None,
    ) -> None:
        super().__init__(parts)
        self._poller = poller
        #: Where pending jobs come from: the state's walk, or a worker's claims.
        self._pending = pending or self._pending_in_state
        #: Only for a batch with local files (None: no job is looked at for them).
        self._uploader = uploader
        if uploader is not None:
            poller.refresh_inputs = self.refresh_inputs
        self._callback_url_for = callback_url_for
        #: (what, code) of the last jobs that ended badly at createTask, for "all alike".
        self._alike: list[tuple[str, str]] = []
        #: How often a full cap is looked at again as its tasks age: every second of the
        #: service's time.
        self._recheck = parts.settings.poll_scale

    def _running(self) -> float:
        """Tasks plausibly running at the service, and submissions under way."""
        control = self._control
        followed = self._poller.following
        return self._poller.expected_running() + (control.in_flight - followed)

    async def run(self) -> None:
        """Submit every pending job of the manifest, within the slots and the limits."""
        control = self._control
        # The last window's worth of jobs is the last wave (see PollSchedule.last_wave).
        left = self._store.counts(in_manifest=True).get(JobState.PENDING.value, 0)
        async with contextlib.aclosing(self._pending()) as pending:
            async for job in pending:
                left -= 1
                if not await control.take_slot(self._running, recheck=self._recheck):
                    break
                last_wave = left < self._settings.create_limit
                files = self._uploader.files_of(job.input) if self._uploader is not None else None
                if files:  # uploads first, in a call of its own: no createTask place held
                    control.spawn(self._upload_then_submit(job, files, last_wave=last_wave))
                    continue
                turn = await self._turn()
                if turn is None:
                    break
                control.spawn(self._submit_one(job, turn, last_wave=last_wave))

    async def _pending_in_state(self) -> AsyncGenerator[JobRow, None]:
        for job in self._store.iter_jobs([JobState.PENDING], in_manifest=True):
            yield job

    async def _turn(self, account: Account | None = None) -> CreateTurn | None:
        """A createTask turn (of `account`, else of the account that admits soonest) for a
        job holding its slot; None when the run stops first (the turn, if one came, and
        the slot given back)."""
        control = self._control
        turn = await control.cancellable(self._client.create_turn(account))
        if not isinstance(turn, CreateTurn) or control.stopping:
            if isinstance(turn, CreateTurn):
                turn.release()
            await control.give_slot()
            return None
        return turn

    async def _upload_then_submit(self, job: JobRow, files: list[str], *, last_wave: bool) -> None:
        """A job with local files (holding its slot): a fresh upload of each (made or
        reused), then a createTask turn, then the send with the upload URLs in place of
        the file tokens. Nothing is committed for the job before its URLs are known.

        The wait for a turn can be long (a slow --rate, a full window): when a URL is no
        longer fresh once the turn comes, the turn goes back unused and the uploads are
        made again first; no createTask place is ever held while uploading. That happens
        at most `_UPLOAD_ROUNDS` times for one createTask: uploads that are stale by the
        time every turn comes (a lifetime shorter than the wait for a turn) leave the job
        pending with a message, rather than uploading without end."""
        control = self._control
        uploader = self._uploader
        assert uploader is not None
        rounds = 0
        while True:
            rounds += 1
            if rounds > _UPLOAD_ROUNDS:
                await control.give_slot()
                self._observer.message(
                    f"{job.job_id}: not submitted: its uploads were stale {_UPLOAD_ROUNDS} "
                    "times by the time its createTask turn came (they expire sooner than "
                    "a turn comes: raise --rate, or lower --upload-margin); run again to "
                    "retry it"
                )
                return
            # The account is chosen first: the uploads are made with its key.
            account = self._client.soonest_account() or self._client.account
            try:
                urls = await control.cancellable(uploader.urls_for(files, account=account.name))
            except (LiangXinError, LocalFileChanged, ConfigError) as err:
                await control.give_slot()
                self._upload_failed(job, err)
                return
            if urls is STOPPED or control.stopping:
                await control.give_slot()
                return
            assert isinstance(urls, dict)
            turn = await self._turn(account)
            if turn is None:
                return
            try:
                fresh = await uploader.still_fresh(urls, account=account.name)
            except BaseException:
                turn.release()  # stopped while the state was asked: the turn goes unused
                raise
            if fresh:
                break
            turn.release()
        body = with_upload_urls(job.input, urls)
        await self._submit_one(job, turn, last_wave=last_wave, body=body)

    def _upload_failed(
        self, job: JobRow, err: LiangXinError | LocalFileChanged | ConfigError
    ) -> None:
        """An upload this job needs failed: the job stays pending (nothing was sent for
        it). The account refused (401...), the upload host failing past its retries, or
        a host answering what must not be used (a URL holding the key: ConfigError)
        stops submission; a refused or changed file leaves only its jobs unsent."""
        if isinstance(err, ConfigError) or (
            isinstance(err, LiangXinError)
            and ((isinstance(err, APIError) and err.fatal) or err.retryable)
        ):
            self._control.stop_submitting(f"uploading local inputs: {err}")
            return
        self._observer.message(f"{job.job_id}: not submitted: {err}")

    def refresh_inputs(self, flight: Flight, record: TaskRecord) -> bool:
        """A task failed: when its failure says an input could not be fetched and its job
        has local files, record the failure and take the job back to pending in one
        transaction (once per job: `should_refresh_inputs`), drop the uploads the task
        was given, and send the job again with fresh ones, in the slot the task held.
        False (nothing done) otherwise: the caller records the failure as usual.
        Synchronous: the poller drops the flight right after, with nothing in between."""
        uploader = self._uploader
        job = flight.job
        files = uploader.files_of(job.input) if uploader is not None else []
        if uploader is None or not files or self._control.stopping:
            return False
        # The failure's own words first: the count of the job's refreshes (a query) is
        # asked only for a task that could not fetch its input.
        if not input_fetch_failed(record.fail_code, record.fail_msg):
            return False
        if not should_refresh_inputs(
            fail_code=record.fail_code,
            fail_msg=record.fail_msg,
            has_local_files=True,
            refreshes_before=self._store.input_refreshes(job.job_id),
            credits_consumed=record.credits_consumed,
        ):
            return False
        why = record.fail_msg or record.fail_code or "input could not be fetched"
        note = (
            f"task {flight.task_id} could not fetch its input ({why}): uploads refreshed, "
            "sent again once (a failed task is not billed)"
        )
        with self._store.transaction():
            write_outcome(
                self._store,
                flight,
                Event.TASK_FAILED,
                record=record,
                finished_by=None,
                error_code=record.failure[0],
                error_message=record.failure[1],
                catalog=self._catalog,
                wall=self._clock.wall(),
            )
            moved = self._store.transition(job.job_id, Event.INPUT_REFRESH, message=note)
            if not moved:  # pragma: no cover - the flight owned the job until now
                return False
            # The uploads this task was given were made before it was sent; one made
            # since (another job's refresh) is fresh already. In the same transaction: a
            # kill must not leave the one refresh spent with the old uploads kept.
            sent_wall = self._clock.wall() - (self._clock.monotonic() - flight.submitted_mono)
            uploader.forget(files, uploaded_before=sent_wall, account=flight.account)
        logger.info("%s: %s", job.job_id, note)
        self._observer.message(f"{job.job_id}: {note}")
        tell(self._observer, "taken_back", job.job_id)
        fresh = self._store.get(job.job_id)
        assert fresh is not None
        self._control.spawn(self._upload_then_submit(fresh, files, last_wave=False))
        return True

    async def _submit_one(
        self,
        job: JobRow,
        turn: CreateTurn,
        *,
        last_wave: bool,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        """Send one job, with its own retries of provably-not-created answers.

        Holds the createTask turn it was given (one of a couple of POST places, already
        admitted by the rate limiter); every retry waits for a new turn. `body`: the
        input as sent, when it differs from the stored one (upload URLs for file tokens).
        """
        control = self._control
        spec = self._catalog.get(job.model)
        attempt = job.attempt
        tries = 0
        retaken = False
        while True:
            tries += 1
            attempt += 1
            account = turn.account
            task_id: str | None = None
            failure: LiangXinError | None = None
            try:
                if control.stopping or not await self._store.call_urgent(
                    self._store.begin_attempt, job.job_id, attempt, account=account.name
                ):
                    await control.give_slot()  # stopped, or no longer pending: not ours
                    return
                # While the intent was written (on PostgreSQL the loop goes on meanwhile)
                # the run may have begun to stop, or, on a limit shared with other
                # workers, this turn's slot passed (the slots after it are theirs).
                if not control.stopping and (retaken or not turn.late()):
                    callback = (
                        self._callback_url_for(job, attempt) if self._callback_url_for else None
                    )
                    sent = job.input if body is None else body
                    task_id = await turn.create(job.model, sent, callback)
            except LiangXinError as err:
                failure = err
            finally:
                turn.release()  # idempotent: the turn that was used, or one never used
            if task_id is not None:
                await self._record_submitted(
                    job, attempt, task_id, spec, last_wave=last_wave, account=account
                )
                return
            if failure is None:  # not sent: the run is stopping, or the slot passed
                stopping = control.stopping
                await self._not_sent(job, attempt, stopping=stopping)
                if stopping:
                    await control.give_slot()
                    return
                # The same account's next slot, once: a turn late again is sent
                # (`sent_late` then moves the pace back).
                retaken, tries, again = True, tries - 1, account
            elif await self._after_create_failure(job, attempt, tries, failure, account):
                again = None
            else:
                await control.give_slot()
                return
            next_turn = await control.cancellable(self._client.create_turn(again))
            if not isinstance(next_turn, CreateTurn):
                await control.give_slot()
                return
            turn = next_turn

    async def _not_sent(self, job: JobRow, attempt: int, *, stopping: bool) -> None:
        """Back to pending at once (ahead of the queue: a kill while the next slot is
        awaited must not park it as unknown), its POST place already given back."""
        note = (
            "not sent: the run was stopping"
            if stopping
            else "not sent: its createTask slot passed while the intent was written; sent "
            "on the next one"
        )
        await self._store.call_urgent(
            self._store.transition,
            job.job_id,
            Event.NOT_CREATED,
            message=note,
            attempt=attempt,
            outcome="not_created",
        )

    async def _record_submitted(
        self,
        job: JobRow,
        attempt: int,
        task_id: str,
        spec: ModelSpec | None,
        *,
        last_wave: bool,
        account: Account,
    ) -> None:
        try:
            moved = await self._commit_created(job, attempt, task_id)
        except TransitionRefused:
            # The service answered with a taskId another job already holds: a task was
            # probably created for this job, but which one we cannot tell.
            other = await self._store.call(self._store.by_task_id, task_id)
            message = (
                f"createTask answered with task {task_id}, which job "
                f"{other.job_id if other else '?'} already holds; the task of this job may "
                "exist: see --resubmit-unknown"
            )
            await self._store.call(
                self._store.transition,
                job.job_id,
                Event.CREATE_AMBIGUOUS,
                message=message,
                attempt=attempt,
                error_code="duplicate_task_id",
                error_message=message,
            )
            self._observer.message(f"{job.job_id}: {message}")
            self._observer.submitted(job.job_id)
            self._observer.finished(job.job_id, JobState.UNKNOWN.value)
            self._control.spawn(self._control.give_slot())
            return
        if not moved:  # pragma: no cover - only the submitter moves a submitting job
            logger.error("%s: task %s was created but could not be recorded", job.job_id, task_id)
            raise AssertionError(f"{job.job_id} left `submitting` while its POST was out")
        self._alike.clear()
        self._poller.track_new(
            job, task_id, attempt, spec, last_wave=last_wave, account=account.name
        )
        logger.info(
            "%s: submitted %s as task %s (attempt %d)", job.job_id, job.model, task_id, attempt
        )
        self._observer.submitted(job.job_id)

    async def _commit_created(self, job: JobRow, attempt: int, task_id: str) -> bool:
        try:
            # CREATED; or, a worker whose lease ran out meanwhile, RECONCILED (the task
            # was paid for: it is recorded whoever parked the job `unknown`).
            return await self._store.call_urgent(
                self._store.record_created,
                job.job_id,
                attempt,
                task_id,
                submitted_at=self._clock.wall(),
            )
        except TransitionRefused:
            raise
        except asyncio.CancelledError as cancel:
            # Cancelled only once the write had ended; its failure is the cause, if any.
            if cancel.__cause__ is not None:
                self._unrecorded(job, task_id)
            raise
        except BaseException:
            self._unrecorded(job, task_id)
            raise

    def _unrecorded(self, job: JobRow, task_id: str) -> None:
        # Paid for but not on disk (a full disk, say): say the taskId where the user finds
        # it. The job stays `submitting`; the next run parks it as unknown.
        message = f"{job.job_id}: task {task_id} was created but could not be recorded"
        logger.error(message)
        self._observer.message(message)

    async def _after_create_failure(
        self, job: JobRow, attempt: int, tries: int, err: LiangXinError, account: Account
    ) -> bool:
        """Record a failed createTask; True when the same job should be tried again."""
        control = self._control
        decision = decide_create_failure(err, tries=tries, window=self._settings.create_window)
        code = _code_of(err)
        message = str(err)

        async def outcome(event: Event, note: str = message, *, kind: str | None = None) -> None:
            # Urgent: the job is `submitting` until this is written (a kill would park it).
            await self._store.call_urgent(
                self._store.transition,
                job.job_id,
                event,
                message=note,
                attempt=attempt,
                outcome=kind,
                error_code=code,
                error_message=note,
            )

        if decision.verdict is CreateVerdict.RETRY:
            if tries >= self._settings.create_retries and not decision.throttle:
                # This job's retries are used up; the others go on unless all fail alike.
                message = f"not created after {tries} tries: {message}"
                await outcome(Event.CREATE_GAVE_UP, message)
                self._ended_badly(job, "gave_up", code, message, JobState.FAILED)
                return False
            # Known not created: back to pending at once, so a kill during the wait
            # below cannot park it as unknown.
            await outcome(Event.NOT_CREATED, kind="not_created")
            if decision.throttle:
                self._observer.message(
                    f"rate limited (429): waiting {decision.delay:.1f}s, then at most "
                    f"{account.create_limiter.limit} createTask per "
                    f"{account.create_limiter.window:g}s"
                    + (f" (account {account.name})" if self._client.named_accounts else "")
                )
                return not control.stopping
            self._observer.message(f"{job.job_id}: not created ({message}); retrying")
            waited = await control.cancellable(asyncio.sleep(decision.delay))
            return waited is not STOPPED and not control.stopping
        if decision.verdict is CreateVerdict.STOP:
            await outcome(Event.NOT_CREATED, kind="not_created")
            if isinstance(err, InsufficientCreditsError) and self._stop_account(account, message):
                return not control.stopping  # this job goes to another account
            control.stop_submitting(message)
            return False
        if decision.verdict is CreateVerdict.REJECT:
            await outcome(Event.CREATE_REFUSED)
            logger.info("%s: refused at createTask: %s", job.job_id, message)
            self._observer.submitted(job.job_id)  # past the create step, like the others
            self._observer.finished(job.job_id, JobState.FAILED.value)
            return False
        if self._callback_url_for is not None:
            # Its callback may still arrive and tell us the taskId: stay open for it.
            spec = self._catalog.get(job.model)
            self._poller.expect_callback(job.job_id, spec.typical_seconds if spec else 60.0)
        await outcome(Event.CREATE_AMBIGUOUS)
        self._ended_badly(job, "unknown", code, message, JobState.UNKNOWN)
        if decision.stop:
            control.stop_submitting(
                f"{message}: this answer did not come from LiangXin; check {_BASE_URL_ENV}"
            )
        return False

    def _stop_account(self, account: Account, message: str) -> bool:
        """A 402: this account creates no more tasks in this run (its tasks in flight are
        still polled and downloaded). True while another account still may; False when
        none is left, and the run stops submitting as for any 402."""
        first = account.stopped is None
        account.stopped = message
        if not self._client.named_accounts or not self._client.open_accounts():
            return False
        if first:
            logger.info("account %s: out of credits: %s", account.name, message)
            self._observer.message(
                f"account {account.name}: out of credits ({message}); its submissions "
                f"stop, {', '.join(a.name for a in self._client.open_accounts())} go on"
            )
        return True

    def _ended_badly(
        self, job: JobRow, what: str, code: str | None, message: str, state: JobState
    ) -> None:
        """A job ended at createTask without a task; several in a row alike stop the batch."""
        logger.info("%s: %s at createTask: %s", job.job_id, state.value, message)
        self._observer.submitted(job.job_id)
        self._observer.finished(job.job_id, state.value)
        self._alike.append((what, code or ""))
        recent = self._alike[-self._settings.stop_after_alike :]
        if len(recent) >= self._settings.stop_after_alike and len(set(recent)) == 1:
            self._control.stop_submitting(
                f"{len(recent)} jobs in a row ended {what} at createTask ({message}); "
                "the fault is not the jobs': try again later"
            )
