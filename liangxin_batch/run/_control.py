"""What the parts of one run share: why it is stopping, its slots, and its spawned calls.

The submitter, the poll scheduler and the download queue each hold the same
`RunControl`. It owns the three reasons a run stops (Ctrl-C, a refusal that stops
submission, a full disk) plus the first unexpected failure, the count of tasks in flight
and of results waiting for download (the submitter's backpressure), and the set of calls
it spawned, so that none outlives the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from liangxin_batch.catalog._catalog import Catalog
from liangxin_batch.core._clock import Clock
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.errors import DiskFullError
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._progress import Observer
from liangxin_batch.state._store import StateStore

logger = logging.getLogger("liangxin_batch")

__all__ = [
    "STOPPED",
    "TRACKED_PER_SLOT",
    "Interrupt",
    "LoopClock",
    "RunControl",
    "RunPart",
    "RunParts",
]

#: Tasks followed at once, per `max_in_flight`: the cap counts those plausibly running,
#: and this bounds the rest (finished, not yet polled) in memory and polls owed.
TRACKED_PER_SLOT = 3

#: What `RunControl.cancellable` returns when a stop cancelled the wait.
STOPPED = object()


@dataclass
class Interrupt:
    """Set by the first Ctrl-C (`Runner.interrupt`); every stage that must stop then
    (downloads in progress) is given the same one when it is made."""

    requested: bool = False


class LoopClock:
    """The `core.Clock` of a run: the running event loop's clock (which tests drive
    virtually) for waits and deadlines; unix time for what is recorded."""

    __slots__ = ("wall",)

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()


def _current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


class RunControl:
    def __init__(self, *, settings: RunSettings, observer: Observer, interrupt: Interrupt) -> None:
        self.settings = settings
        self.observer = observer
        self._interrupt = interrupt
        self.stop_reason: str | None = None
        #: The first unexpected exception of a spawned task: the run stops and re-raises it
        #: rather than wait forever for a slot that task would have returned.
        self.failure: BaseException | None = None
        #: Writing under DIR failed for want of space: stop submitting and downloading.
        self.disk_full: str | None = None
        #: recordInfo itself answered 401/402/433/505: polling stops too; flights stay
        #: `submitted` for the next run.
        self.polling_stopped = False
        self.in_flight = 0
        #: Jobs whose generation succeeded and whose files are not on disk yet (queued or
        #: being fetched): the submitter waits while it is full.
        self.backlog = 0
        self._slots = asyncio.Condition()
        #: Set whenever the poll scheduler should look again (a new due time, a stop).
        self.wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Waits that have sent nothing and end at any stop (create turns, backoffs) ...
        self._waiting: set[asyncio.Task[object]] = set()
        #: ... and those that end only when polling itself ends (poll turns).
        self.poll_waiting: set[asyncio.Task[object]] = set()

    # -- why the run stops ----------------------------------------------------------

    @property
    def interrupted(self) -> bool:
        """Ctrl-C/SIGTERM: the only stop that also halts downloads of paid results."""
        return self._interrupt.requested

    @property
    def stopping(self) -> bool:
        """No new createTask: interrupted, refused (401/402/...), or failed."""
        return self._interrupt.requested or self.stop_reason is not None or self.failure is not None

    @property
    def downloads_halted(self) -> bool:
        """Nothing more can be fetched or recorded: interrupted, disk full, or failed."""
        return self._interrupt.requested or self.disk_full is not None or self.failure is not None

    def interrupt(self) -> None:
        """First Ctrl-C: stop starting new work; calls in progress finish and commit."""
        self._interrupt.requested = True
        self._halt_waiters()

    def stop_submitting(self, reason: str) -> None:
        """Stop creating tasks (401/402/433/505...); tasks in flight are still polled."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.observer.message(f"stopping new submissions: {reason}")
        self._halt_waiters()

    def stop_polling(self, reason: str) -> None:
        """recordInfo is refused too: nothing more to learn in this run."""
        self.stop_submitting(reason)
        self.polling_stopped = True
        self.wake.set()

    def stop_for_disk(self, err: DiskFullError) -> None:
        if self.disk_full is None:
            self.disk_full = str(err)
            self.stop_submitting(str(err))
            self.wake.set()  # polling ends too: its answers could not be recorded

    def fail_run(self, err: BaseException) -> None:
        if self.failure is None:
            self.failure = err
            self.observer.message(f"stopping: unexpected {type(err).__name__}: {err}")
            self._halt_waiters()

    def _halt_waiters(self) -> None:
        # Jobs still waiting for the create limiter or a backoff have sent nothing: drop
        # them. A poll waiting for its turn has sent nothing either: dropped only when
        # polling itself ends (Ctrl-C, a failure, a full disk), not when submission stops.
        for task in list(self._waiting):
            task.cancel()
        if self.downloads_halted:
            for task in list(self.poll_waiting):
                task.cancel()
        self.wake.set()
        self.spawn(self.notify_slots())

    # -- slots: tasks in flight and the download backlog ------------------------------

    async def take_slot(self, running: Callable[[], float], *, recheck: float) -> bool:
        """Wait for room for one more task; False when the run is stopping instead.

        Room: fewer than `max_in_flight` tasks plausibly running (`running()`, which
        falls as tasks age past their kind's latencies, so it is looked at again every
        `recheck` seconds), fewer than `TRACKED_PER_SLOT` times that followed at all,
        and room in the download backlog.
        """
        s = self.settings

        def room() -> bool:
            return self.stopping or (
                self.in_flight < s.max_in_flight * TRACKED_PER_SLOT
                and self.backlog < s.max_download_backlog
                # running() counts each task in flight at most once, so it is below the
                # cap whenever in_flight is: only then is it worth its walk of every flight.
                and (self.in_flight < s.max_in_flight or running() < s.max_in_flight)
            )

        async with self._slots:
            while not room():
                # asyncio.timeout, not wait_for: the wait stays in this task, so a cancel
                # never leaves the condition's lock in doubt.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(recheck):
                        await self._slots.wait()
            if self.stopping:
                return False
            self.in_flight += 1
            return True

    async def add_flight(self) -> None:
        """A task joins without a slot taken for it (one reconciled by a callback)."""
        async with self._slots:
            self.in_flight += 1

    async def give_slot(self) -> None:
        async with self._slots:
            self.in_flight -= 1
            self._slots.notify_all()
        self.wake.set()

    async def wait_for_room(self, room: Callable[[], bool]) -> None:
        async with self._slots:
            await self._slots.wait_for(room)

    async def wait_change(self) -> None:
        """Until the next change of the slots or the backlog."""
        async with self._slots:
            await self._slots.wait()

    async def notify_slots(self) -> None:
        async with self._slots:
            self._slots.notify_all()

    # -- spawned calls and stoppable waits ------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def settle(self) -> None:
        """Wait for every spawned call (they finish and commit, even after an interrupt)."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def leftover(self) -> list[asyncio.Task[None]]:
        return [t for t in self._tasks if not t.done()]

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            # Cancelled once its state write had ended (store.call): the write's failure,
            # if any, is the cause. (The first `result()` gives the task's own error.)
            cause: BaseException | None = None
            try:
                task.result()
            except asyncio.CancelledError as cancel:
                cause = cancel.__cause__
            if isinstance(cause, DiskFullError):
                self.stop_for_disk(cause)
            elif cause is not None:
                logger.error("a state write failed as the run stopped: %s", cause)
            return
        err = task.exception()
        if isinstance(err, DiskFullError):
            self.stop_for_disk(err)  # nothing more can be recorded: stop, keep what is
        elif err is not None:
            self.fail_run(err)

    async def cancellable(self, waiting: Awaitable[object], *, polling: bool = False) -> object:
        """Wait for something that sends nothing; `STOPPED` when a stop cancelled it."""
        task = asyncio.ensure_future(waiting)
        waiters = self.poll_waiting if polling else self._waiting
        waiters.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and not _current_cancelling():
                return STOPPED
            raise
        finally:
            waiters.discard(task)


@dataclass(frozen=True, slots=True)
class RunParts:
    """What every part of one run is built with (the runner makes it once)."""

    control: RunControl
    store: StateStore
    client: LiangXinClient
    catalog: Catalog
    settings: RunSettings
    observer: Observer
    clock: Clock


class RunPart:
    """A part of a run (the submitter, the poll scheduler): keeps the shared `RunParts`."""

    def __init__(self, parts: RunParts) -> None:
        self._control = parts.control
        self._store = parts.store
        self._client = parts.client
        self._catalog = parts.catalog
        self._settings = parts.settings
        self._observer = parts.observer
        self._clock = parts.clock
