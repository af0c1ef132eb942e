"""The poll scheduler: asks recordInfo about every task in flight until it ends.

Each task in flight is a `Flight`, due for its next poll at a time the pure
`PollSchedule` picks from what this run learned about its kind of task (`LatencyBook`);
a `PollQueue` orders them. When more polls are due than the recordInfo budget allows,
the next turn goes to the task most likely to have finished by now (the oldest past its
kind's typical time), not to the first in line. Callbacks only move a poll earlier.

The in-flight cap counts tasks plausibly still running at the service: a task that has
probably finished but has not been polled yet holds back a new submission only by the
chance that it is still running (`expected_running`).

With several accounts, each has its own queue: a task is asked about only with the key
of the account that created it, and each account's recordInfo limit holds on its own;
the next turn goes to the account with due tasks whose limiter admits soonest.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any, cast

from liangxin_batch.catalog._catalog import ModelSpec
from liangxin_batch.core._accounts import DEFAULT_ACCOUNT
from liangxin_batch.core._envelope import TaskRecord, TaskState
from liangxin_batch.core._latency import LatencyEstimate
from liangxin_batch.core._poll_queue import PollQueue
from liangxin_batch.core._states import Event, JobState, target_of
from liangxin_batch.errors import APIError, LiangXinError, NotFoundError, RateLimitedError
from liangxin_batch.run._client import PollTurn
from liangxin_batch.run._control import STOPPED, RunPart, RunParts
from liangxin_batch.run._flight import (
    RUNNING_REFRESH,
    Flight,
    FlightBook,
    generation_seconds,
    write_outcome,
)
from liangxin_batch.run._progress import logger
from liangxin_batch.run._ratelimit import EPSILON
from liangxin_batch.state._store import JobRow, TransitionRefused

__all__ = ["GARBLED_SUCCESS_POLLS", "Flight", "PollScheduler"]

#: A success whose result URLs cannot be read is polled again this many times before the
#: job is taken as succeeded without URLs (the downloader then asks recordInfo again).
GARBLED_SUCCESS_POLLS = 3


class PollScheduler(RunPart):
    def __init__(
        self,
        parts: RunParts,
        *,
        on_succeeded: Callable[[JobRow], None] | None = None,
        stretch: float = 1.0,
    ) -> None:
        super().__init__(parts)
        self._on_succeeded = on_succeeded
        self._book = FlightBook(catalog=parts.catalog, settings=parts.settings, stretch=stretch)
        #: One queue per account (one, `default`, without an accounts file).
        self._queues = {name: PollQueue() for name in parts.client.accounts}
        #: The submitter has ended: once no task is in flight, polling ends too.
        self.submitting_done = False
        self.polls = 0
        self.finished_tasks = 0
        self.finished_by_callback = 0
        #: Monotonic time until which the run stays open for callbacks that may reconcile
        #: `unknown` jobs (only when callbacks are on).
        self._linger_until = 0.0
        #: The jobs that lingering waits for: parked `unknown` in this run, with a
        #: callback that may still reconcile them. Once none is left the run ends.
        self._reconcilable: set[str] = set()
        #: A failed task whose input could not be fetched: True when it was taken back to
        #: be sent again with fresh uploads, keeping its slot (the submitter's, set only
        #: for a batch with local files).
        self.refresh_inputs: Callable[[Flight, TaskRecord], bool] | None = None

    # -- tasks joining ----------------------------------------------------------------

    def estimate_for(
        self, model: str, values: Mapping[str, Any], spec: ModelSpec | None = None
    ) -> LatencyEstimate:
        """The latency estimate of this kind of task (model + the inputs that price it)."""
        return self._book.estimate_for(model, values, spec)

    def age(self, flight: Flight, now: float) -> float:
        """How long the task has run, in the service's seconds."""
        return self._book.age(flight, now)

    @property
    def following(self) -> int:
        """Tasks followed (created, not finished)."""
        return len(self._book)

    def expected_running(self) -> float:
        """Tasks plausibly still running at the service (see `FlightBook`)."""
        return self._book.expected_running(self._clock.monotonic())

    def track_new(
        self,
        job: JobRow,
        task_id: str,
        attempt: int,
        spec: ModelSpec | None,
        *,
        last_wave: bool = False,
        account: str | None = None,
    ) -> None:
        """A task createTask just answered with (`last_wave`: one of the batch's last),
        created by `account`."""
        flight = self._book.track(
            job,
            task_id,
            attempt=attempt,
            submitted_mono=self._clock.monotonic(),
            spec=spec,
            last_wave=last_wave,
            account=account,
        )
        self.schedule(flight, flight.schedule.first_delay())

    def resume(self, job: JobRow, *, overdue: bool) -> None:
        """A task an earlier run submitted: continue its schedule where its age puts it."""
        assert job.task_id is not None
        now, wall = self._clock.monotonic(), self._clock.wall()
        age = max(0.0, wall - (job.submitted_at or wall))
        flight = self._book.track(job, job.task_id, attempt=job.attempt, submitted_mono=now - age)
        flight.polls = job.polls
        if overdue:  # ask at once, and give it a fresh window
            flight.deadline = now + (flight.deadline - flight.submitted_mono)
            self.schedule(flight, 0.0)
        else:
            self.schedule(flight, max(0.0, flight.schedule.first_delay() - age))

    def expect_callback(self, job_id: str, typical_seconds: float) -> None:
        """A job parked `unknown` whose callback may still tell its taskId: wait for it."""
        until = self._clock.monotonic() + 3 * typical_seconds + 30
        self._linger_until = max(self._linger_until, until)
        self._reconcilable.add(job_id)

    # -- callbacks (see _callback_link.py) --------------------------------------------

    def has_flight(self, task_id: str) -> bool:
        return task_id in self._book

    def poll_now(self, task_id: str) -> bool:
        """An unverified callback says a task is done: ask recordInfo at once."""
        flight = self._book.get(task_id)
        if flight is None:
            return False
        flight.hinted = True
        self.schedule(flight, 0.0)
        return True

    async def accept_signed(self, job_id: str, attempt: int, record: TaskRecord) -> bool:
        """A signed callback reports a success with its result URLs: take it as recordInfo
        would have said it, if it is about the task this job's attempt is waiting for."""
        flight = self._book.get(record.task_id)
        if flight is None or flight.job_id != job_id or flight.attempt != attempt:
            return False
        if record.state is not TaskState.SUCCESS or not record.result_urls:
            return False  # a failure, or no URLs: ask recordInfo before giving anything up
        await self._apply(flight, record, finished_by="callback")
        return True

    async def adopt_task(self, job_id: str, attempt: int, task_id: str) -> bool:
        """An `unknown` job's task turned out to exist: track it instead of paying again."""
        job = await self._store.call(self._store.get, job_id)
        if job is None or job.state is not JobState.UNKNOWN or job.attempt != attempt:
            return False
        if (job.account or DEFAULT_ACCOUNT) not in self._client.accounts:
            return False  # its creator's key is not here: left for a run that has it
        try:
            moved = await self._store.call(
                self._store.transition,
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
        await self._control.add_flight()
        # Only now: the poll loop must never see "idle, nothing to reconcile" in between.
        self._reconcilable.discard(job_id)
        flight = self._book.track(
            job, task_id, attempt=attempt, submitted_mono=self._clock.monotonic()
        )
        flight.hinted = True
        self.schedule(flight, 0.0)
        return True

    # -- the loop ---------------------------------------------------------------------

    def schedule(self, flight: Flight, delay: float) -> None:
        # Never past the task's deadline: the poll there says whether it timed out, on
        # time. A poll already queued no later (a hint behind the limiter) is kept.
        now = self._clock.monotonic()
        due = min(now + delay, max(flight.deadline, now))
        if self._queues[flight.account].schedule(flight.task_id, due):
            self._control.wake.set()

    def _collect_due(self, now: float) -> list[str]:
        """Move the tasks due by `now` to their queue's ready set; the accounts with any."""
        return [name for name, queue in self._queues.items() if queue.collect_due(now)]

    def _next_due(self) -> float | None:
        dues = [d for q in self._queues.values() if (d := q.next_due()) is not None]
        return min(dues, default=None)

    def _soonest(self, names: list[str], now: float) -> str:
        """Of the accounts with due tasks, the one whose recordInfo limiter admits soonest."""
        if len(names) == 1:
            return names[0]
        accounts = self._client.accounts
        return min(names, key=lambda name: accounts[name].poll_limiter.delay(now))

    async def run(self) -> None:
        control = self._control
        while True:
            if control.downloads_halted or control.polling_stopped:
                return  # interrupted, failed, or the disk is full
            now = self._clock.monotonic()
            idle = self.submitting_done and control.in_flight == 0
            linger = self._linger_until - now
            if idle and (linger <= 0 or not self._reconcilable):
                return  # what is left in the queue belongs to finished tasks
            ready = self._collect_due(now + EPSILON)
            if idle or not ready:
                due = self._next_due()
                if idle or due is None:
                    await self._sleep(linger if idle else None)
                else:
                    await self._sleep(max(due - now, EPSILON))
                continue
            # A turn (a place, then the recordInfo limiter): a stop cancels this wait, and
            # nothing has been sent.
            name = self._soonest(ready, now)
            waited = await control.cancellable(
                self._client.poll_turn(self._client.accounts[name]), polling=True
            )
            if waited is STOPPED:
                return
            turn = cast(PollTurn, waited)
            if control.downloads_halted:
                turn.release()
                return
            now = self._clock.monotonic()
            self._collect_due(now + EPSILON)  # others came due meanwhile: theirs too
            task_id = self._queues[name].take_ready(
                functools.partial(self._finished_chance, now=now),
                now=now,
                fresh_for=RUNNING_REFRESH * self._settings.poll_scale,
            )
            flight = self._book.get(task_id) if task_id else None
            if flight is None:  # finished meanwhile (a callback)
                turn.release()
                continue
            control.spawn(self._poll_one(flight, turn))

    def _learn(self, flight: Flight, record: TaskRecord, age: float, now: float) -> None:
        """A task of this kind finished: one more generation time for its estimate."""
        estimate = flight.estimate
        was_learned = estimate.learned
        estimate.observe(generation_seconds(record, age, self._settings.poll_scale))
        if estimate.learned and not was_learned:
            self._replan(estimate, now)

    def _replan(self, estimate: LatencyEstimate, now: float) -> None:
        """A kind has just been learned: its tasks still waiting in the queue for a first
        poll at the catalog's guess are brought forward to where the learned times put
        them. Tasks being polled, or due and waiting for a turn, are left as they are."""
        for flight in self._book:
            queued = flight.task_id in self._queues[flight.account]
            if flight.estimate is estimate and flight.polls == 0 and queued:
                due = flight.schedule.first_delay() - (now - flight.submitted_mono)
                self.schedule(flight, max(0.0, due))

    def _finished_chance(self, task_id: str, *, now: float) -> tuple[float, float]:
        """Poll first one a callback says is done, then the one whose kind has most
        likely finished by its age (the oldest past the median first)."""
        flight = self._book.get(task_id)
        if flight is None:  # finished while due: nothing to poll, so last
            return (-1.0, 0.0)
        age = self.age(flight, now)
        return (2.0 if flight.hinted else flight.estimate.finished_share(age), age)

    async def _sleep(self, timeout: float | None) -> None:
        """Until something changes (`wake`) or `timeout` seconds pass."""
        wake = self._control.wake
        wake.clear()
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            pass

    async def _poll_one(self, flight: Flight, turn: PollTurn) -> None:
        try:
            record: TaskRecord | LiangXinError = await turn.get_task(flight.task_id)
        except LiangXinError as err:
            record = err
        # One check for every outcome: whatever came back, nothing more is owed to a task
        # that finished while this poll was out (a callback, or a hint's poll).
        if self._book.get(flight.task_id) is not flight:
            return
        if isinstance(record, NotFoundError):
            await self._not_found(flight)
            return
        if isinstance(record, LiangXinError):
            await self._poll_failed(flight, record)
            return
        if record.task_id != flight.task_id:
            # An answer about another task (a proxy rewrote it?): nothing learned. A
            # failed poll: retried, then timed out; never left without a next poll.
            await self._poll_failed(
                flight,
                LiangXinError(f"recordInfo answered about task {record.task_id!r}"),
            )
            return
        flight.polls += 1
        self.polls += 1
        finished_by = "callback" if flight.hinted else "poll"
        await self._apply(flight, record, finished_by=finished_by)

    async def _poll_failed(self, flight: Flight, err: LiangXinError) -> None:
        """A poll that taught nothing (its flight is still followed: see `_poll_one`)."""
        if isinstance(err, APIError) and err.fatal:
            # The key or account is refused for reads too. The task stays `submitted`;
            # the next run polls it again.
            self._control.stop_polling(str(err))
            return
        if self._clock.monotonic() >= flight.deadline:
            await self._finish(
                flight,
                Event.TASK_TIMED_OUT,
                error_code="timeout",
                error_message=f"recordInfo kept failing ({err}); run again to keep polling",
            )
            return
        if isinstance(err, RateLimitedError):
            # The client holds every recordInfo back for the window already: ask again
            # right after it, not 30 s later.
            self.schedule(flight, err.retry_after or self._settings.poll_window)
            return
        self._observer.message(f"{flight.job_id}: recordInfo failed ({err}); will retry")
        self.schedule(flight, 30.0 * self._settings.poll_scale)

    async def _not_found(self, flight: Flight) -> None:
        flight.polls += 1
        self.polls += 1
        if self.age(flight, self._clock.monotonic()) < self._settings.not_found_grace:
            self.schedule(flight, 3.0)
            return
        await self._finish(
            flight,
            Event.TASK_NOT_FOUND,
            error_code="404",
            error_message="recordInfo: task not found",
        )

    async def _apply(self, flight: Flight, record: TaskRecord, *, finished_by: str) -> None:
        """Finish the task, or schedule its next poll: every path does one of the two."""
        job_id = flight.job_id
        now = self._clock.monotonic()
        age = self.age(flight, now)
        if record.state is TaskState.SUCCESS:
            if not record.result_urls:
                # Paid for, but this answer's resultJson is unreadable or empty: ask again
                # rather than lose the result; after a few, the downloader asks once more.
                flight.garbled += 1
                if flight.garbled < GARBLED_SUCCESS_POLLS and now < flight.deadline:
                    self._observer.message(
                        f"{job_id}: task {record.task_id} succeeded but its result URLs are "
                        "unreadable; asking again"
                    )
                    self.schedule(flight, 3.0 * self._settings.poll_scale)
                    return
                await self._finish(
                    flight,
                    Event.TASK_SUCCEEDED,
                    record=record,
                    finished_by=finished_by,
                    error_code="no_result_urls",
                    error_message="succeeded, but recordInfo gave no readable result URLs; "
                    "they are asked for again before download",
                )
            else:
                await self._finish(
                    flight, Event.TASK_SUCCEEDED, record=record, finished_by=finished_by
                )
            self._learn(flight, record, age, now)
            if self._on_succeeded is not None:  # the downloader reads the job afresh
                self._on_succeeded(flight.job)
        elif record.state is TaskState.FAIL:
            if self.refresh_inputs is not None and self.refresh_inputs(flight, record):
                self._drop(flight)  # its slot goes on to the new attempt
                self.finished_tasks += 1
                return
            await self._finish(
                flight,
                Event.TASK_FAILED,
                record=record,
                finished_by=finished_by,
                error_code=record.failure[0],
                error_message=record.failure[1],
            )
        elif now >= flight.deadline:
            await self._finish(
                flight,
                Event.TASK_TIMED_OUT,
                error_code="timeout",
                error_message=f"still {record.raw_state or 'running'} after "
                f"{age:.0f}s; run again to keep polling",
            )
        else:
            flight.seen_running_at = age
            self.schedule(flight, flight.schedule.next_delay(age=age, polls=flight.polls))

    async def _finish(
        self,
        flight: Flight,
        event: Event,
        *,
        record: TaskRecord | None = None,
        finished_by: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """Record how a task ended and give its slot back."""
        self._drop(flight)
        await self._store.call(
            write_outcome,
            self._store,
            flight,
            event,
            record=record,
            finished_by=finished_by,
            error_code=error_code,
            error_message=error_message,
            catalog=self._catalog,
            wall=self._clock.wall(),
        )
        logger.info(
            "%s: task %s %s%s%s",
            flight.job_id,
            flight.task_id,
            target_of(event).value,
            f" by {finished_by}" if finished_by else "",
            f" ({error_code}: {error_message})" if error_code else "",
        )
        self.finished_tasks += 1
        if finished_by == "callback":
            self.finished_by_callback += 1
        self._observer.finished(flight.job_id, target_of(event).value)
        await self._control.give_slot()

    def _drop(self, flight: Flight) -> None:
        """The task is finished with: no longer in flight, polled or ranked."""
        self._book.remove(flight.task_id)
        self._queues[flight.account].discard(flight.task_id)
