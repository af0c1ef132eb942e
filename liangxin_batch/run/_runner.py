"""The runner: takes the jobs in a state file to finished tasks.

Three independent limits: createTask rate (exact sliding window), recordInfo rate, and
tasks in flight. The order of writes is what makes a kill at any instant safe:
the intent to submit is committed before the POST, the taskId the moment it arrives.
A create that may have reached the service without an answer is parked as `unknown`
and never repeated unless the user asks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from liangxin_batch.catalog._catalog import Catalog, ModelSpec, estimate_credits
from liangxin_batch.core._envelope import TaskRecord, TaskState
from liangxin_batch.core._schedule import PollSchedule
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import (
    RECOVERY_ORDER,
    CreateVerdict,
    Event,
    JobState,
    decide_create_failure,
    recovery_step,
    target_of,
)
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import (
    APIError,
    DiskFullError,
    LiangXinError,
    NotFoundError,
    RateLimitedError,
)
from liangxin_batch.run._client import CreateTurn, LiangXinClient, PollTurn
from liangxin_batch.run._progress import NullObserver, Observer, logger
from liangxin_batch.run._ratelimit import EPSILON
from liangxin_batch.state._store import JobRow, StateStore, TransitionRefused

__all__ = ["Interrupt", "RunSummary", "Runner"]


def _current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


#: Called once a task's generation succeeded; returns the job's final state (downloads).
FinishHook = Callable[[JobRow], Awaitable[None]]

#: What `_cancellable` returns when a stop cancelled the wait.
_STOPPED = object()
_BASE_URL_ENV = "LIANGXIN_BASE_URL"


def _code_of(err: LiangXinError) -> str | None:
    if isinstance(err, APIError):
        return str(err.api_code) if err.envelope else f"http_{err.http_status}"
    return type(err).__name__


#: A success whose result URLs cannot be read is polled again this many times before the
#: job is taken as succeeded without URLs (the downloader then asks recordInfo again).
GARBLED_SUCCESS_POLLS = 3


@dataclass
class _Flight:
    """What the poller keeps in memory for one submitted task."""

    job: JobRow  # as it was when submitted: its input and ids do not change while in flight
    task_id: str
    attempt: int
    submitted_mono: float
    schedule: PollSchedule
    #: Loop time after which a still-running task counts as timed out.
    deadline: float
    polls: int = 0
    #: A callback said this task is done: the poll it triggered counts as a callback finish.
    hinted: bool = False
    #: When the next poll is due; heap entries with another time are stale and skipped,
    #: so a task never has two polling chains.
    due: float = math.inf
    #: Answers that said success without readable result URLs.
    garbled: int = 0

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def model(self) -> str:
        return self.job.model


@dataclass
class Interrupt:
    """Set by the first Ctrl-C (`Runner.interrupt`); every stage that must stop then
    (downloads in progress) is given the same one when it is made."""

    requested: bool = False


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
        callback_url_for: Callable[[JobRow, int], str | None] | None = None,
        interrupt: Interrupt | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._interrupt = interrupt or Interrupt()
        #: Unix time for what the state records (submitted_at, ages on resume); waiting
        #: and scheduling run on the event loop's own clock, which tests drive.
        self._wall = wall_clock
        self.store = store
        self.client = client
        self.catalog = catalog
        self.settings = settings
        self.observer = observer or NullObserver()
        self.on_succeeded = on_succeeded
        self.callback_url_for = callback_url_for
        self._slots = asyncio.Condition()
        self._in_flight = 0
        #: Jobs whose generation succeeded and whose files are not on disk yet (queued or
        #: being fetched): the submitter waits while it is full.
        self._backlog = 0
        self._download_queue: asyncio.Queue[JobRow] = asyncio.Queue()
        #: (what, code) of the last jobs that ended badly at createTask, for "all alike".
        self._alike: list[tuple[str, str]] = []
        self._flights: dict[str, _Flight] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Task[object]] = set()
        self._poll_waiting: set[asyncio.Task[object]] = set()
        self._stop_reason: str | None = None
        self._submitting_done = False
        self._polls = 0
        self._finished_tasks = 0
        self._prepared = False
        #: The first unexpected exception of a spawned task: the run stops and re-raises it
        #: rather than wait forever for a slot that task would have returned.
        self._failure: BaseException | None = None
        #: recordInfo itself answered 401/402/433/505: stop polling too; flights stay
        #: `submitted` for the next run.
        self._polling_stopped = False
        #: Writing under DIR failed for want of space: stop submitting and downloading.
        self._disk_full: str | None = None
        self._finished_by_callback = 0
        #: Loop time until which the run stays open for callbacks that may reconcile
        #: `unknown` jobs (only when callbacks are on).
        self.linger_until = 0.0
        #: The jobs that lingering waits for: parked `unknown` in this run, with a
        #: callback that may still reconcile them. Once none is left the run ends.
        self._reconcilable: set[str] = set()

    # -- public controls ------------------------------------------------------------

    def interrupt(self) -> None:
        """First Ctrl-C: stop starting new work; calls in progress finish and commit."""
        self._interrupt.requested = True
        self._halt_waiters()

    def stop_submitting(self, reason: str) -> None:
        """Stop creating tasks (401/402/433/505...); tasks in flight are still polled."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self.observer.message(f"stopping new submissions: {reason}")
        self._halt_waiters()

    def _halt_waiters(self) -> None:
        # Jobs still waiting for the create limiter or a backoff have sent nothing: drop
        # them. A poll waiting for its turn has sent nothing either: dropped only when
        # polling itself ends (Ctrl-C, a failure, a full disk), not when submission stops.
        for task in list(self._waiting):
            task.cancel()
        if self._downloads_halted:
            for task in list(self._poll_waiting):
                task.cancel()
        self._wake.set()
        self._spawn(self._notify_slots())

    async def _notify_slots(self) -> None:
        async with self._slots:
            self._slots.notify_all()

    @property
    def interrupted(self) -> bool:
        """Ctrl-C/SIGTERM: the only stop that also halts downloads of paid results."""
        return self._interrupt.requested

    @property
    def stopping(self) -> bool:
        return (
            self._interrupt.requested or self._stop_reason is not None or self._failure is not None
        )

    # -- the run --------------------------------------------------------------------

    def prepare(self) -> None:
        """Recover from a crash and apply --retry-failed/--resubmit-unknown (idempotent)."""
        if not self._prepared:
            self._prepared = True
            self._recover()

    async def run(self) -> RunSummary:
        started = asyncio.get_running_loop().time()
        self.prepare()
        workers: list[asyncio.Task[None]] = []
        if self.on_succeeded is not None:
            workers = [
                asyncio.create_task(self._download_worker())
                for _ in range(self.settings.download_concurrency)
            ]
            # Generated earlier, files not all on disk yet: through the same bounded queue.
            self._spawn(self._feed_backlog())
        submitter = asyncio.create_task(self._submit_all())
        poller = asyncio.create_task(self._poll_loop())
        try:
            await submitter
            self._submitting_done = True
            self._wake.set()
            await poller
            # Calls already in progress finish and commit, even after an interrupt.
            while self._tasks or (self._backlog and not self._downloads_halted):
                if self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
                else:
                    await self._notify_wait()
        finally:
            # Normally nothing is left; after a cancellation (Ctrl-C before the runner's
            # own handlers, or a caller's cancel) spawned calls must not outlive the run.
            leftover = [t for t in (submitter, poller, *workers, *self._tasks) if not t.done()]
            for task in leftover:
                task.cancel()
            if leftover:
                await asyncio.gather(*leftover, return_exceptions=True)
        if self._failure is not None:
            raise self._failure
        return self._summary(asyncio.get_running_loop().time() - started)

    # -- downloads: a bounded queue the submitter respects ------------------------------

    @property
    def _downloads_halted(self) -> bool:
        return self._interrupt.requested or self._disk_full is not None or self._failure is not None

    async def _notify_wait(self) -> None:
        async with self._slots:
            await self._slots.wait()

    async def _feed_backlog(self) -> None:
        for job in self.store.iter_jobs([JobState.SUCCEEDED]):
            async with self._slots:
                await self._slots.wait_for(
                    lambda: (
                        self._backlog < self.settings.max_download_backlog or self._downloads_halted
                    )
                )
            if self._downloads_halted:
                return
            self._enqueue_download(job)

    def _enqueue_download(self, job: JobRow) -> None:
        self._backlog += 1
        self._download_queue.put_nowait(job)

    async def _download_worker(self) -> None:
        assert self.on_succeeded is not None
        while True:
            job = await self._download_queue.get()
            try:
                if not self._downloads_halted:
                    await self.on_succeeded(job)
            except DiskFullError as err:
                self._stop_for_disk(err)
            except Exception as err:  # a bug: stop the run and raise it, never hang on it
                self._fail_run(err)
            finally:
                self._backlog -= 1
                await self._notify_slots()

    def _stop_for_disk(self, err: DiskFullError) -> None:
        if self._disk_full is None:
            self._disk_full = str(err)
            self.stop_submitting(str(err))
            self._wake.set()  # the poll loop ends too: its answers could not be recorded

    def _recover(self) -> None:
        """Bring a state file left by a crash or Ctrl-C back to a runnable shape."""
        s = self.settings
        # The service still counts an earlier process's creates in its window: so do we.
        limiter = self.client.create_limiter
        loop_now, wall_now = asyncio.get_running_loop().time(), self._wall()
        recent = self.store.submits_since(wall_now - limiter.window - limiter.margin)
        limiter.prime([loop_now - (wall_now - at) for at in recent])
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
        loop_now = asyncio.get_running_loop().time()
        wall_now = self._wall()
        for job in self.store.iter_jobs([JobState.SUBMITTED]):
            assert job.task_id is not None
            age = max(0.0, wall_now - (job.submitted_at or wall_now))
            flight = self._new_flight(job, job.task_id, loop_now - age)
            flight.polls = job.polls
            self._in_flight += 1
            if job.job_id in repoll:  # overdue: ask at once, and give it a fresh window
                spec = self.catalog.get(job.model)
                flight.deadline = loop_now + self.settings.timeout_for(spec.kind if spec else "")
                self._schedule(flight, 0.0)
            else:
                self._schedule(flight, max(0.0, flight.schedule.first_delay() - age))

    # -- submission -----------------------------------------------------------------

    async def _submit_all(self) -> None:
        for job in self.store.iter_jobs([JobState.PENDING], in_manifest=True):
            if not await self._take_slot():
                break
            turn = await self._cancellable(self.client.create_turn())
            if not isinstance(turn, CreateTurn) or self.stopping:
                if isinstance(turn, CreateTurn):
                    turn.release()
                await self._give_slot()
                break
            self._spawn(self._submit_one(job, turn))

    async def _take_slot(self) -> bool:
        s = self.settings
        async with self._slots:
            await self._slots.wait_for(
                lambda: (
                    (self._in_flight < s.max_in_flight and self._backlog < s.max_download_backlog)
                    or self.stopping
                )
            )
            if self.stopping:
                return False
            self._in_flight += 1
            return True

    async def _give_slot(self) -> None:
        async with self._slots:
            self._in_flight -= 1
            self._slots.notify_all()
        self._wake.set()

    async def _submit_one(self, job: JobRow, turn: CreateTurn) -> None:
        """Send one job, with its own retries of provably-not-created answers.

        Holds the createTask turn it was given (one of a couple of POST places, already
        admitted by the rate limiter); every retry waits for a new turn.
        """
        spec = self.catalog.get(job.model)
        attempt = job.attempt
        tries = 0
        while True:
            tries += 1
            attempt += 1
            try:
                if self.stopping or not self.store.begin_attempt(job.job_id, attempt):
                    await self._give_slot()  # stopped, or no longer pending: not ours to send
                    return
                callback = self.callback_url_for(job, attempt) if self.callback_url_for else None
                task_id = await turn.create(job.model, job.input, callback)
            except LiangXinError as err:
                failure: LiangXinError | None = err
            else:
                failure = None
            finally:
                turn.release()  # idempotent: the turn that was used, or one never used
            if failure is None:
                self._record_submitted(job, attempt, task_id, spec)
                return
            if not await self._after_create_failure(job, attempt, tries, failure):
                await self._give_slot()
                return
            next_turn = await self._cancellable(self.client.create_turn())
            if not isinstance(next_turn, CreateTurn):
                await self._give_slot()
                return
            turn = next_turn

    async def _cancellable(
        self, waiting: Awaitable[object], group: set[asyncio.Task[object]] | None = None
    ) -> object:
        """Wait for something that sends nothing; `_STOPPED` when a stop cancelled it."""
        task = asyncio.ensure_future(waiting)
        waiters = self._waiting if group is None else group
        waiters.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and not _current_cancelling():
                return _STOPPED
            raise
        finally:
            waiters.discard(task)

    def _record_submitted(
        self, job: JobRow, attempt: int, task_id: str, spec: ModelSpec | None
    ) -> None:
        try:
            moved = self._commit_created(job, attempt, task_id)
        except TransitionRefused:
            # The service answered with a taskId another job already holds: a task was
            # probably created for this job, but which one we cannot tell.
            other = self.store.by_task_id(task_id)
            message = (
                f"createTask answered with task {task_id}, which job "
                f"{other.job_id if other else '?'} already holds; the task of this job may "
                "exist: see --resubmit-unknown"
            )
            self.store.transition(
                job.job_id,
                Event.CREATE_AMBIGUOUS,
                message=message,
                attempt=attempt,
                error_code="duplicate_task_id",
                error_message=message,
            )
            self.observer.message(f"{job.job_id}: {message}")
            self.observer.finished(job.job_id, JobState.UNKNOWN.value)
            self._spawn(self._give_slot())
            return
        if not moved:  # pragma: no cover - only the submitter moves a submitting job
            raise AssertionError(f"{job.job_id} left `submitting` while its POST was out")
        self._alike.clear()
        flight = self._new_flight(
            job, task_id, asyncio.get_running_loop().time(), spec, attempt=attempt
        )
        self._schedule(flight, flight.schedule.first_delay())
        logger.info(
            "%s: submitted %s as task %s (attempt %d)", job.job_id, job.model, task_id, attempt
        )
        self.observer.submitted(job.job_id)

    def _commit_created(self, job: JobRow, attempt: int, task_id: str) -> bool:
        try:
            return self.store.transition(
                job.job_id,
                Event.CREATED,
                message=f"submitted as task {task_id}",
                attempt=attempt,
                task_id=task_id,
                submitted_at=self._wall(),
                error_code=None,
                error_message=None,
            )
        except TransitionRefused:
            raise
        except BaseException:
            # Paid for but not on disk (a full disk, say): say the taskId where the user
            # finds it. The job stays `submitting`; the next run parks it as unknown.
            message = f"{job.job_id}: task {task_id} was created but could not be recorded"
            logger.error(message)
            self.observer.message(message)
            raise

    async def _after_create_failure(
        self, job: JobRow, attempt: int, tries: int, err: LiangXinError
    ) -> bool:
        """Record a failed createTask; True when the same job should be tried again."""
        decision = decide_create_failure(err, tries=tries, window=self.settings.create_window)
        code = _code_of(err)
        message = str(err)

        def outcome(event: Event, note: str = message, *, kind: str | None = None) -> None:
            self.store.transition(
                job.job_id,
                event,
                message=note,
                attempt=attempt,
                outcome=kind,
                error_code=code,
                error_message=note,
            )

        if decision.verdict is CreateVerdict.RETRY:
            if tries >= self.settings.create_retries and not decision.throttle:
                # This job's retries are used up; the others go on unless all fail alike.
                message = f"not created after {tries} tries: {message}"
                outcome(Event.CREATE_GAVE_UP, message)
                self._ended_badly(job, "gave_up", code, message, JobState.FAILED)
                return False
            # Known not created: back to pending at once, so a kill during the wait
            # below cannot park it as unknown.
            outcome(Event.NOT_CREATED, kind="not_created")
            if decision.throttle:
                self.observer.message(
                    f"rate limited (429): waiting {decision.delay:.1f}s, then at most "
                    f"{self.client.create_limiter.limit} createTask per "
                    f"{self.settings.create_window:g}s"
                )
                return not self.stopping
            self.observer.message(f"{job.job_id}: not created ({message}); retrying")
            waited = await self._cancellable(asyncio.sleep(decision.delay))
            return waited is not _STOPPED and not self.stopping
        if decision.verdict is CreateVerdict.STOP:
            outcome(Event.NOT_CREATED, kind="not_created")
            self.stop_submitting(message)
            return False
        if decision.verdict is CreateVerdict.REJECT:
            outcome(Event.CREATE_REFUSED)
            logger.info("%s: refused at createTask: %s", job.job_id, message)
            self.observer.finished(job.job_id, JobState.FAILED.value)
            return False
        if self.callback_url_for is not None:
            # Its callback may still arrive and tell us the taskId: stay open for it.
            spec = self.catalog.get(job.model)
            typical = spec.typical_seconds if spec else 60.0
            loop_now = asyncio.get_running_loop().time()
            self.linger_until = max(self.linger_until, loop_now + 3 * typical + 30)
            self._reconcilable.add(job.job_id)
        outcome(Event.CREATE_AMBIGUOUS)
        self._ended_badly(job, "unknown", code, message, JobState.UNKNOWN)
        if decision.stop:
            self.stop_submitting(
                f"{message}: this answer did not come from LiangXin; check {_BASE_URL_ENV}"
            )
        return False

    def _ended_badly(
        self, job: JobRow, what: str, code: str | None, message: str, state: JobState
    ) -> None:
        """A job ended at createTask without a task; several in a row alike stop the batch."""
        logger.info("%s: %s at createTask: %s", job.job_id, state.value, message)
        self.observer.finished(job.job_id, state.value)
        self._alike.append((what, code or ""))
        recent = self._alike[-self.settings.stop_after_alike :]
        if len(recent) >= self.settings.stop_after_alike and len(set(recent)) == 1:
            self.stop_submitting(
                f"{len(recent)} jobs in a row ended {what} at createTask ({message}); "
                "the fault is not the jobs': try again later"
            )

    # -- callbacks (see _callback_link.py) --------------------------------------------

    def has_flight(self, task_id: str) -> bool:
        return task_id in self._flights

    def poll_now(self, task_id: str) -> bool:
        """An unverified callback says a task is done: ask recordInfo at once."""
        flight = self._flights.get(task_id)
        if flight is None:
            return False
        flight.hinted = True
        self._schedule(flight, 0.0)
        return True

    async def adopt_task(self, job_id: str, attempt: int, task_id: str) -> bool:
        """An `unknown` job's task turned out to exist: track it instead of paying again."""
        job = self.store.get(job_id)
        if job is None or job.state is not JobState.UNKNOWN or job.attempt != attempt:
            return False
        try:
            moved = self.store.transition(
                job_id,
                Event.RECONCILED,
                message=f"reconciled: task {task_id} exists (reported by callback)",
                attempt=attempt,
                outcome="submitted",
                task_id=task_id,
                error_code=None,
                error_message=None,
            )
        except TransitionRefused:
            return False  # another job holds that taskId: believe neither
        if not moved:
            return False
        async with self._slots:
            self._in_flight += 1
        # Only now: the poll loop must never see "idle, nothing to reconcile" in between.
        self._reconcilable.discard(job_id)
        flight = self._new_flight(job, task_id, asyncio.get_running_loop().time())
        flight.hinted = True
        self._schedule(flight, 0.0)
        return True

    # -- polling --------------------------------------------------------------------

    def _new_flight(
        self,
        job: JobRow,
        task_id: str,
        submitted_mono: float,
        spec: ModelSpec | None = None,
        *,
        attempt: int | None = None,
    ) -> _Flight:
        spec = spec or self.catalog.get(job.model)
        typical = spec.typical_seconds if spec else 30.0
        kind = spec.kind if spec else "image"
        flight = _Flight(
            job=job,
            task_id=task_id,
            attempt=job.attempt if attempt is None else attempt,
            submitted_mono=submitted_mono,
            schedule=PollSchedule(typical_seconds=typical, scale=self.settings.poll_scale),
            deadline=submitted_mono + self.settings.timeout_for(kind),
        )
        self._flights[task_id] = flight
        return flight

    def _schedule(self, flight: _Flight, delay: float) -> None:
        due = asyncio.get_running_loop().time() + delay
        if flight.due <= due:
            # An entry is already waiting (flight.due is inf while none is: see _poll_loop)
            # and comes no later, e.g. a callback's hint queued behind the limiter: keep it.
            return
        flight.due = due
        heapq.heappush(self._heap, (due, next(self._seq), flight.task_id))
        self._wake.set()

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._downloads_halted or self._polling_stopped:
                return  # interrupted, failed, or the disk is full
            idle = self._submitting_done and self._in_flight == 0
            linger = self.linger_until - loop.time()
            if idle and (linger <= 0 or not self._reconcilable):
                return  # what is left in the heap belongs to finished tasks
            if not self._heap or idle:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), linger if idle else None)
                except TimeoutError:
                    pass
                continue
            due, _, task_id = self._heap[0]
            wait = due - loop.time()
            if wait > EPSILON:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    pass
                continue
            heapq.heappop(self._heap)
            flight = self._flights.get(task_id)
            if flight is None or flight.due != due:
                continue  # finished, or rescheduled (a callback hint moved it earlier)
            flight.due = math.inf  # being polled: the next _schedule sets the next time
            # A turn (a place, then the recordInfo limiter): a stop cancels this wait, and
            # nothing has been sent.
            waited = await self._cancellable(self.client.poll_turn(), self._poll_waiting)
            if waited is _STOPPED:
                return
            turn = cast(PollTurn, waited)
            if self._downloads_halted:
                turn.release()
                return
            if self._flights.get(task_id) is not flight:  # a callback finished it meanwhile
                turn.release()
                continue
            self._spawn(self._poll_one(flight, turn))

    async def _poll_one(self, flight: _Flight, turn: PollTurn) -> None:
        try:
            record = await turn.get_task(flight.task_id)
        except NotFoundError:
            await self._not_found(flight)
            return
        except LiangXinError as err:
            await self._poll_failed(flight, err)
            return
        flight.polls += 1
        self._polls += 1
        finished_by = "callback" if flight.hinted else "poll"
        await self.apply_record(flight.job_id, record, finished_by=finished_by)

    async def _poll_failed(self, flight: _Flight, err: LiangXinError) -> None:
        if self._flights.get(flight.task_id) is not flight:
            return  # finished meanwhile (a callback, or a concurrent poll)
        if isinstance(err, APIError) and err.fatal:
            # The key or account is refused for reads too: nothing more to learn in this
            # run. The task stays `submitted`; the next run polls it again.
            self.stop_submitting(str(err))
            self._polling_stopped = True
            self._wake.set()
            return
        if asyncio.get_running_loop().time() >= flight.deadline:
            self._finish(
                flight,
                Event.TASK_TIMED_OUT,
                error_code="timeout",
                error_message=f"recordInfo kept failing ({err}); run again to keep polling",
            )
            await self._give_slot()
            return
        if isinstance(err, RateLimitedError):
            # The client holds every recordInfo back for the window already: ask again
            # right after it, not 30 s later.
            self._schedule(flight, err.retry_after or self.settings.poll_window)
            return
        self.observer.message(f"{flight.job_id}: recordInfo failed ({err}); will retry")
        self._schedule(flight, 30.0 * self.settings.poll_scale)

    async def _not_found(self, flight: _Flight) -> None:
        if self._flights.get(flight.task_id) is not flight:
            return  # finished meanwhile (a callback, or a concurrent poll)
        age = asyncio.get_running_loop().time() - flight.submitted_mono
        flight.polls += 1
        self._polls += 1
        if age < self.settings.not_found_grace:
            self._schedule(flight, 3.0)
            return
        self._finish(
            flight,
            Event.TASK_NOT_FOUND,
            error_code="404",
            error_message="recordInfo: task not found",
        )
        await self._give_slot()

    async def apply_record(self, job_id: str, record: TaskRecord, *, finished_by: str) -> None:
        """Apply what our own recordInfo said about a task (never a callback's body)."""
        flight = self._flights.get(record.task_id)
        if flight is None or flight.job_id != job_id:
            return  # already finished: duplicates and late answers change nothing
        now = asyncio.get_running_loop().time()
        age = now - flight.submitted_mono
        if record.state is TaskState.SUCCESS:
            if not record.result_urls:
                # Paid for, but this answer's resultJson is unreadable or empty: ask again
                # rather than lose the result; after a few, the downloader asks once more.
                flight.garbled += 1
                if flight.garbled < GARBLED_SUCCESS_POLLS and now < flight.deadline:
                    self.observer.message(
                        f"{job_id}: task {record.task_id} succeeded but its result URLs are "
                        "unreadable; asking again"
                    )
                    self._schedule(flight, 3.0 * self.settings.poll_scale)
                    return
                self._finish(
                    flight,
                    Event.TASK_SUCCEEDED,
                    record=record,
                    finished_by=finished_by,
                    error_code="no_result_urls",
                    error_message="succeeded, but recordInfo gave no readable result URLs; "
                    "they are asked for again before download",
                )
            else:
                self._finish(flight, Event.TASK_SUCCEEDED, record=record, finished_by=finished_by)
        elif record.state is TaskState.FAIL:
            self._finish(
                flight,
                Event.TASK_FAILED,
                record=record,
                finished_by=finished_by,
                error_code=record.fail_code or "fail",
                error_message=record.fail_msg or "generation failed",
            )
        elif now >= flight.deadline:
            self._finish(
                flight,
                Event.TASK_TIMED_OUT,
                error_code="timeout",
                error_message=f"still {record.raw_state or 'running'} after "
                f"{age:.0f}s; run again to keep polling",
            )
        else:
            self._schedule(flight, flight.schedule.next_delay(age=age, polls=flight.polls))
            return
        await self._give_slot()
        if record.state is TaskState.SUCCESS and self.on_succeeded is not None:
            job = self.store.get(flight.job_id)
            if job is not None and job.state is JobState.SUCCEEDED:
                self._enqueue_download(job)

    def _finish(
        self,
        flight: _Flight,
        event: Event,
        *,
        record: TaskRecord | None = None,
        finished_by: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        del self._flights[flight.task_id]
        fields: dict[str, Any] = {"polls": flight.polls}
        succeeded = event is Event.TASK_SUCCEEDED
        if record is not None:
            charged = record.credits_consumed if succeeded else 0.0
            estimated = None
            if charged is None:  # the service did not say: keep our estimate apart
                spec = self.catalog.get(flight.model)
                estimated = estimate_credits(spec, flight.job.input) if spec else None
            fields.update(
                result_urls=record.result_urls,
                credits=charged,
                credits_estimated=estimated,
                cost_time=record.cost_time,
                completed_at=(record.complete_time / 1000)
                if record.complete_time
                else self._wall(),
                finished_by=finished_by,
            )
        fields.update(error_code=error_code, error_message=error_message)
        moved = self.store.transition(
            flight.job_id,
            event,
            message=error_message or f"task {flight.task_id}: {event.value}",
            attempt=flight.attempt,
            task_id=flight.task_id,
            **fields,
        )
        if not moved:  # pragma: no cover - a flight is the only owner of a submitted job
            raise AssertionError(
                f"{flight.job_id}: {event.value} from {self.store.get(flight.job_id)}"
            )
        logger.info(
            "%s: task %s %s%s%s",
            flight.job_id,
            flight.task_id,
            target_of(event).value,
            f" by {finished_by}" if finished_by else "",
            f" ({error_code}: {error_message})" if error_code else "",
        )
        self._finished_tasks += 1
        if finished_by == "callback":
            self._finished_by_callback += 1
        self.observer.finished(flight.job_id, target_of(event).value)

    # -- helpers --------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if isinstance(err, DiskFullError):
            self._stop_for_disk(err)  # nothing more can be recorded: stop, keep what is
        elif err is not None:
            self._fail_run(err)

    def _fail_run(self, err: BaseException) -> None:
        if self._failure is None:
            self._failure = err
            self.observer.message(f"stopping: unexpected {type(err).__name__}: {err}")
            self._halt_waiters()

    def _summary(self, wall: float) -> RunSummary:
        # Jobs removed from the manifest stay in the state (their tasks were paid for) but
        # are not part of this batch's outcome.
        counts = self.store.counts(in_manifest=True)
        credits = self.store.credits()
        return RunSummary(
            counts=counts,
            credits=credits.total,
            credits_estimated=credits.estimated,
            wall_seconds=wall,
            stopped_reason=self._stop_reason,
            interrupted=self._interrupt.requested,
            unknown_jobs=self.store.job_ids(JobState.UNKNOWN),
            polls=self._polls,
            tasks_finished=self._finished_tasks,
            finished_by_callback=self._finished_by_callback,
            removed_jobs=self.store.removed_count(),
            downloads=self.on_succeeded is not None,
        )
