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

from ._catalog import Catalog, ModelSpec, estimate_credits
from ._client import LiangXinClient
from ._envelope import TaskRecord, TaskState
from ._errors import (
    APIError,
    LiangXinError,
    NotFoundError,
)
from ._lifecycle import (
    CreateVerdict,
    JobState,
    decide_create_failure,
    refetch_only,
    retry_states,
)
from ._progress import NullObserver, Observer, logger
from ._ratelimit import EPSILON, SlidingWindowLimiter
from ._schedule import PollSchedule
from ._settings import RunSettings
from ._store import JobRow, StateStore, billed_credits
from ._summary import RunSummary

__all__ = ["RunSummary", "Runner"]


def _current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


#: Called once a task's generation succeeded; returns the job's final state (downloads).
FinishHook = Callable[[JobRow], Awaitable[None]]


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

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def model(self) -> str:
        return self.job.model


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
    ) -> None:
        self.store = store
        self.client = client
        self.catalog = catalog
        self.settings = settings
        self.observer = observer or NullObserver()
        self.on_succeeded = on_succeeded
        self.callback_url_for = callback_url_for
        self._create_limiter = SlidingWindowLimiter(
            settings.create_limit, settings.create_window, margin=settings.create_margin
        )
        self._poll_limiter = SlidingWindowLimiter(settings.poll_limit, settings.poll_window)
        self._create_gate = asyncio.Semaphore(settings.max_concurrent_creates)
        self._poll_gate = asyncio.Semaphore(settings.max_concurrent_polls)
        self._slots = asyncio.Condition()
        self._in_flight = 0
        self._flights: dict[str, _Flight] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Task[object]] = set()
        self._stop_reason: str | None = None
        self._interrupted = False
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
        self._finished_by_callback = 0
        #: Loop time until which the run stays open for callbacks that may reconcile
        #: `unknown` jobs (only when callbacks are on).
        self.linger_until = 0.0

    # -- public controls ------------------------------------------------------------

    def interrupt(self) -> None:
        """First Ctrl-C: stop starting new work; calls in progress finish and commit."""
        self._interrupted = True
        self._halt_waiters()

    def stop_submitting(self, reason: str) -> None:
        """Stop creating tasks (401/402/433/505...); tasks in flight are still polled."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self.observer.message(f"stopping new submissions: {reason}")
        self._halt_waiters()

    def _halt_waiters(self) -> None:
        # Jobs still waiting for the create limiter or a backoff have sent nothing: drop them.
        for task in list(self._waiting):
            task.cancel()
        self._wake.set()
        self._spawn(self._notify_slots())

    async def _notify_slots(self) -> None:
        async with self._slots:
            self._slots.notify_all()

    @property
    def interrupted(self) -> bool:
        """Ctrl-C/SIGTERM: the only stop that also halts downloads of paid results."""
        return self._interrupted

    @property
    def stopping(self) -> bool:
        return self._interrupted or self._stop_reason is not None or self._failure is not None

    # -- the run --------------------------------------------------------------------

    def prepare(self) -> None:
        """Recover from a crash and apply --retry-failed/--resubmit-unknown (idempotent)."""
        if not self._prepared:
            self._prepared = True
            self._recover()

    async def run(self) -> RunSummary:
        started = time.monotonic()
        self.prepare()
        if self.on_succeeded is not None:  # generated earlier, files not all on disk yet
            for job in self.store.iter_jobs([JobState.SUCCEEDED]):
                self._spawn(self.on_succeeded(job))
        submitter = asyncio.create_task(self._submit_all())
        poller = asyncio.create_task(self._poll_loop())
        try:
            await submitter
            self._submitting_done = True
            self._wake.set()
            await poller
            # Calls already in progress finish and commit, even after an interrupt.
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            # Normally nothing is left; after a cancellation (Ctrl-C before the runner's
            # own handlers, or a caller's cancel) spawned calls must not outlive the run.
            leftover = [t for t in (submitter, poller, *self._tasks) if not t.done()]
            for task in leftover:
                task.cancel()
            if leftover:
                await asyncio.gather(*leftover, return_exceptions=True)
        if self._failure is not None:
            raise self._failure
        return self._summary(time.monotonic() - started)

    def _recover(self) -> None:
        """Bring a state file left by a crash or Ctrl-C back to a runnable shape."""
        s = self.settings
        for job in self.store.iter_jobs([JobState.SUBMITTING]):
            # The intent was committed but no taskId: the POST may have been sent.
            self.store.update(
                job.job_id,
                state=JobState.UNKNOWN,
                error_message="interrupted while submitting; the task may exist",
                event="interrupted during createTask: parked as unknown",
            )
            self.store.end_attempt(job.job_id, job.attempt, "unknown")
        again = retry_states(retry_failed=s.retry_failed, resubmit_unknown=s.resubmit_unknown)
        for job in self.store.iter_jobs(again, in_manifest=True):
            if refetch_only(job.state, job.task_id, job.result_urls):
                # The generation was paid for and succeeded: fetch the files again, no more.
                self.store.update(job.job_id, state=JobState.SUCCEEDED, event="retry download")
                continue
            with self.store.transaction():  # a note, not a problem: status lists problems
                self.store.update(job.job_id, state=JobState.PENDING)
                self.store.record_event("note", f"retry from {job.state}", job.job_id)
        # Timed-out tasks are polled again on resume, with a fresh timeout: they may
        # have finished since.
        repoll: set[str] = set()
        for job in self.store.iter_jobs([JobState.TIMED_OUT]):
            if job.task_id:
                repoll.add(job.job_id)
                self.store.update(job.job_id, state=JobState.SUBMITTED, event="polling again")
        loop_now = asyncio.get_running_loop().time()
        wall_now = time.time()
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
            await self._create_gate.acquire()
            if self.stopping:
                self._create_gate.release()
                await self._give_slot()
                break
            self._spawn(self._submit_one(job))

    async def _take_slot(self) -> bool:
        async with self._slots:
            await self._slots.wait_for(
                lambda: self._in_flight < self.settings.max_in_flight or self.stopping
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

    async def _submit_one(self, job: JobRow) -> None:
        spec = self.catalog.get(job.model)
        attempt = job.attempt
        tries = 0
        try:
            while True:
                tries += 1
                if not await self._cancellable(self._create_limiter.acquire()) or self.stopping:
                    await self._give_slot()
                    return
                attempt += 1
                if not self.store.begin_attempt(job.job_id, attempt):
                    await self._give_slot()  # no longer pending: not ours to send
                    return
                callback = self.callback_url_for(job, attempt) if self.callback_url_for else None
                try:
                    task_id = await self.client.create_task(job.model, job.input, callback)
                except LiangXinError as err:
                    if await self._after_create_failure(job, attempt, tries, err):
                        continue
                    await self._give_slot()
                    return
                try:
                    self._record_submitted(job, attempt, task_id, spec)
                except Exception:
                    # Paid for but not on disk: say the taskId where the user will find it.
                    # The job stays `submitting`, so the next run parks it as unknown.
                    self.observer.message(
                        f"{job.job_id}: task {task_id} was created but could not be recorded"
                    )
                    raise
                return
        finally:
            self._create_gate.release()

    async def _cancellable(self, waiting: Awaitable[object]) -> bool:
        """Wait for something that sends nothing; False when a stop cancelled the wait."""
        task = asyncio.ensure_future(waiting)
        self._waiting.add(task)
        try:
            await task
            return True
        except asyncio.CancelledError:
            if task.cancelled() and not _current_cancelling():
                return False
            raise
        finally:
            self._waiting.discard(task)

    def _record_submitted(
        self, job: JobRow, attempt: int, task_id: str, spec: ModelSpec | None
    ) -> None:
        wall = time.time()
        self.store.update(job.job_id, state=JobState.SUBMITTED, task_id=task_id, submitted_at=wall)
        self.store.end_attempt(job.job_id, attempt, "submitted", task_id=task_id)
        flight = self._new_flight(
            job, task_id, asyncio.get_running_loop().time(), spec, attempt=attempt
        )
        self._schedule(flight, flight.schedule.first_delay())
        logger.info(
            "%s: submitted %s as task %s (attempt %d)", job.job_id, job.model, task_id, attempt
        )
        self.observer.submitted(job.job_id)

    async def _after_create_failure(
        self, job: JobRow, attempt: int, tries: int, err: LiangXinError
    ) -> bool:
        """Record a failed createTask; True when the same job should be tried again."""
        decision = decide_create_failure(err, tries=tries, window=self.settings.create_window)
        code = str(err.api_code) if isinstance(err, APIError) else None
        message = str(err)
        if decision.verdict is CreateVerdict.RETRY:
            # Known not created: back to pending at once, so a kill during the wait
            # below cannot park it as unknown.
            self.store.update(
                job.job_id, state=JobState.PENDING, error_code=code, error_message=message
            )
            self.store.end_attempt(
                job.job_id, attempt, "not_created", error_code=code, error_message=message
            )
            if decision.throttle:
                self._create_limiter.block_for(decision.delay)
                limit = self._create_limiter.slow_down()
                self.observer.message(
                    f"rate limited (429): waiting {decision.delay:.1f}s, then at most "
                    f"{limit} createTask per {self.settings.create_window:g}s"
                )
                return not self.stopping
            if tries >= self.settings.create_retries:
                self.stop_submitting(f"createTask kept failing ({message}); try again later")
                return False
            self.observer.message(f"{job.job_id}: not created ({message}); retrying")
            return await self._cancellable(asyncio.sleep(decision.delay)) and not self.stopping
        if decision.verdict is CreateVerdict.STOP:
            self.store.update(
                job.job_id,
                state=JobState.PENDING,
                error_code=code,
                error_message=message,
                event=message,
            )
            self.store.end_attempt(
                job.job_id, attempt, "not_created", error_code=code, error_message=message
            )
            self.stop_submitting(message)
            return False
        state = JobState.FAILED if decision.verdict is CreateVerdict.REJECT else JobState.UNKNOWN
        if state is JobState.UNKNOWN and self.callback_url_for is not None:
            # Its callback may still arrive and tell us the taskId: stay open for it.
            spec = self.catalog.get(job.model)
            typical = spec.typical_seconds if spec else 60.0
            loop_now = asyncio.get_running_loop().time()
            self.linger_until = max(self.linger_until, loop_now + 3 * typical + 30)
        self.store.update(
            job.job_id, state=state, error_code=code, error_message=message, event=message
        )
        self.store.end_attempt(
            job.job_id, attempt, state.value, error_code=code, error_message=message
        )
        logger.info("%s: %s at createTask: %s", job.job_id, state.value, message)
        self.observer.finished(job.job_id, state.value)
        return False

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
        self.store.update(
            job_id,
            state=JobState.SUBMITTED,
            task_id=task_id,
            error_code=None,
            error_message=None,
            event=f"reconciled: task {task_id} exists (reported by callback)",
        )
        self.store.end_attempt(job_id, attempt, "submitted", task_id=task_id)
        async with self._slots:
            self._in_flight += 1
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
            if self._interrupted or self._failure is not None or self._polling_stopped:
                return
            idle = self._submitting_done and self._in_flight == 0
            linger = self.linger_until - loop.time()
            if idle and linger <= 0:
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
            await self._poll_limiter.acquire()
            await self._poll_gate.acquire()
            if self._interrupted or self._failure is not None:
                self._poll_gate.release()
                return
            if self._flights.get(task_id) is not flight:  # a callback finished it meanwhile
                self._poll_gate.release()
                continue
            self._spawn(self._poll_one(flight))

    async def _poll_one(self, flight: _Flight) -> None:
        try:
            record = await self.client.get_task(flight.task_id)
        except NotFoundError:
            await self._not_found(flight)
            return
        except LiangXinError as err:
            await self._poll_failed(flight, err)
            return
        finally:
            self._poll_gate.release()
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
                JobState.TIMED_OUT,
                error_code="timeout",
                error_message=f"recordInfo kept failing ({err}); run again to keep polling",
            )
            await self._give_slot()
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
            flight, JobState.FAILED, error_code="404", error_message="recordInfo: task not found"
        )
        await self._give_slot()

    async def apply_record(self, job_id: str, record: TaskRecord, *, finished_by: str) -> None:
        """Apply what recordInfo (or a verified callback) said about a task."""
        flight = self._flights.get(record.task_id)
        if flight is None or flight.job_id != job_id:
            return  # already finished: duplicates and late callbacks change nothing
        if record.state is TaskState.SUCCESS:
            if not record.result_urls:
                self._finish(
                    flight,
                    JobState.FAILED,
                    error_code="no_result",
                    error_message="task succeeded but resultJson has no URLs",
                )
            else:
                self._finish(flight, JobState.SUCCEEDED, record=record, finished_by=finished_by)
        elif record.state is TaskState.FAIL:
            self._finish(
                flight,
                JobState.FAILED,
                record=record,
                finished_by=finished_by,
                error_code=record.fail_code or "fail",
                error_message=record.fail_msg or "generation failed",
            )
        else:
            now = asyncio.get_running_loop().time()
            age = now - flight.submitted_mono
            if now >= flight.deadline:
                self._finish(
                    flight,
                    JobState.TIMED_OUT,
                    error_code="timeout",
                    error_message=f"still {record.raw_state or 'running'} after "
                    f"{age:.0f}s; run again to keep polling",
                )
            else:
                self._schedule(flight, flight.schedule.next_delay(age=age, polls=flight.polls))
                return
        await self._give_slot()
        if record.state is TaskState.SUCCESS and record.result_urls and self.on_succeeded:
            self._spawn(self.on_succeeded(flight.job))  # the hook reads the job's current row

    def _finish(
        self,
        flight: _Flight,
        state: JobState,
        *,
        record: TaskRecord | None = None,
        finished_by: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        del self._flights[flight.task_id]
        fields: dict[str, object] = {"state": state, "polls": flight.polls}
        if record is not None:
            credits = record.credits_consumed
            if credits is None and state is JobState.SUCCEEDED:
                spec = self.catalog.get(flight.model)
                if spec is not None:
                    credits = estimate_credits(spec, flight.job.input)
            fields.update(
                result_urls=record.result_urls,
                credits=credits if state is JobState.SUCCEEDED else 0.0,
                cost_time=record.cost_time,
                completed_at=(record.complete_time / 1000) if record.complete_time else time.time(),
                finished_by=finished_by,
            )
        if error_code is not None:
            fields.update(error_code=error_code, error_message=error_message)
        with self.store.transaction():  # the job and its attempt's outcome, together
            self.store.update(flight.job_id, event=error_message, **fields)
            self.store.end_attempt(
                flight.job_id,
                flight.attempt,
                state.value,
                task_id=flight.task_id,
                error_code=error_code,
                error_message=error_message,
            )
        logger.info(
            "%s: task %s %s%s%s",
            flight.job_id,
            flight.task_id,
            state.value,
            f" by {finished_by}" if finished_by else "",
            f" ({error_code}: {error_message})" if error_code else "",
        )
        self._finished_tasks += 1
        if finished_by == "callback":
            self._finished_by_callback += 1
        self.observer.finished(flight.job_id, state.value)

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
        if err is not None and self._failure is None:
            self._failure = err
            self.observer.message(f"stopping: unexpected {type(err).__name__}: {err}")
            self._halt_waiters()

    def _summary(self, wall: float) -> RunSummary:
        # Jobs removed from the manifest stay in the state (their tasks were paid for) but
        # are not part of this batch's outcome.
        counts = self.store.counts(in_manifest=True)
        unknown = [
            r[0]
            for r in self.store.db.execute(
                "SELECT job_id FROM jobs WHERE state = 'unknown' AND in_manifest = 1"
                " ORDER BY idx LIMIT 50"
            )
        ]
        return RunSummary(
            counts=counts,
            credits=billed_credits(self.store.db),
            wall_seconds=wall,
            stopped_reason=self._stop_reason,
            interrupted=self._interrupted,
            unknown_jobs=unknown,
            polls=self._polls,
            tasks_finished=self._finished_tasks,
            finished_by_callback=self._finished_by_callback,
            removed_jobs=self.store.removed_count(),
            downloads=self.on_succeeded is not None,
        )
