"""This process as one worker of a batch shared in PostgreSQL (issue 18).

The same `run` command on several machines (same manifest, same `--state` URL) makes
each a worker: it registers, claims pending jobs in small batches as its submitter
wants them, and renews its lease every third of the lease time. Between claims, and
on each renewal, it ends the workers whose lease ran out (their interrupted submits
parked `unknown`, their jobs freed) and adopts the tasks they left: a submitted task
is polled to the end, a succeeded one downloaded. A worker with nothing left to claim
stays while other live workers hold unfinished jobs (if one dies, its jobs come free
here), then ends: it frees what it holds, and the last worker to end writes
results.csv and the report.

The state's SQL is in state/_workers.py; this part decides when to call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import AsyncGenerator, Callable, Iterable

from liangxin_batch.core._clock import Clock
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import RECOVERY_ORDER, JobState
from liangxin_batch.errors import ConfigError, LiangXinBatchError, StateError, WorkerLostError
from liangxin_batch.run._control import LoopClock, RunControl
from liangxin_batch.run._progress import Observer
from liangxin_batch.state._db import DatabaseError
from liangxin_batch.state._store import JobRow, StateStore
from liangxin_batch.state._workers import Expired

logger = logging.getLogger(__name__)

__all__ = [
    "Worker",
    "alone",
    "join_as_worker",
    "leave",
    "refuse_another_manifest",
]

#: Tasks a worker adopts when it finds them free: generated or in flight, not done.
ADOPTED_STATES = (JobState.SUBMITTED, JobState.SUCCEEDED)
#: How often a worker with nothing left to claim looks whether the others are done.
IDLE_LOOK = 1.0
#: No claim asks for more than this (a claim is one statement and its rows).
_ALL = 1_000_000_000


class Worker:
    """One worker's side of the leases (ids are host:pid:random, never reused)."""

    def __init__(
        self,
        store: StateStore,
        *,
        lease: float,
        claim_size: int,
        clock: Clock,
        observer: Observer,
    ) -> None:
        self.store = store
        self.lease = lease
        self.claim_size = claim_size
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._clock = clock
        self._observer = observer
        self._last_look = -float("inf")
        self._ended: int | None = None
        #: Where adopted jobs go (the runner's poller and download queue).
        self.adopt: Callable[[JobRow], None] = lambda job: None

    def register(self) -> None:
        """Known to the other workers (from the sync on: a worker given another
        manifest is refused while this one is registered)."""
        self.store.register_worker(
            self.id, host=socket.gethostname(), pid=os.getpid(), lease=self.lease
        )
        self._last_look = self._clock.monotonic()

    def hold(self) -> None:
        """From here on this process's state walks and sends only what it holds."""
        self.store.holder = self.id

    def claim_left_over(self) -> None:
        """At the start: end the dead, then hold every free job a recovery or a resume
        would touch (an earlier run's, or a dead worker's), before the runner walks them."""
        self._expire()
        states: Iterable[JobState] = (*RECOVERY_ORDER, *ADOPTED_STATES)
        self.store.claim(self.id, list(states), _ALL)

    async def pending(self, control: RunControl) -> AsyncGenerator[JobRow, None]:
        """Pending jobs for the submitter, claimed a few at a time; after the last,
        waits while other workers still hold unfinished jobs, adopting what frees."""
        store = self.store
        while not control.stopping:
            await self.look_after()
            batch = await store.call(store.claim, self.id, [JobState.PENDING], self.claim_size)
            for job in batch:
                yield job
            if batch:
                continue
            others = await store.call(store.held_by_others, self.id)
            if not others:
                return
            # Look again soon (a count of the others' jobs is cheap): the batch's end is
            # noticed in a second, not a third of the lease later.
            waiting = asyncio.sleep(min(self.lease / 3, IDLE_LOOK))  # virtual in tests
            if await control.cancellable(waiting) is not None:
                return  # stopped (Ctrl-C, a refusal)

    async def look_after(self, *, force: bool = False) -> None:
        """Renew the lease, end dead workers and adopt their tasks: at most every third
        of the lease (called between claims and by `heartbeat`)."""
        now = self._clock.monotonic()
        if not force and now - self._last_look < self.lease / 3:
            return
        self._last_look = now
        looked = await self.store.call(self._renew_and_look)
        if looked is None:
            raise WorkerLostError(
                f"worker {self.id} was ended by another (its lease of {self.lease:g} s ran "
                "out: a pause longer than the lease?); its jobs went to the others. Nothing "
                "more is sent from here; run the same command again to join as a new worker"
            )
        gone, adopted = looked
        self._tell_ended(gone)
        for job in adopted:
            self.adopt(job)

    def _renew_and_look(self) -> tuple[list[Expired], list[JobRow]] | None:
        """The state's side of `look_after` (on the store's thread): None when this
        worker's lease was lost; else the workers ended and the tasks adopted."""
        if not self.store.renew(self.id, self.lease):
            return None
        gone = self.store.expire_workers()
        return gone, self.store.claim(self.id, list(ADOPTED_STATES), _ALL)

    async def heartbeat(self, control: RunControl) -> None:
        """Renew while the run lasts (the submitter may wait long for a slot). A lost
        lease stops everything, downloads in progress too: the jobs are another's now.
        A failed renewal (the database restarting, a lost connection) is tried again at
        the next beat; the lease lasts three of them."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.look_after(force=True)
            except WorkerLostError as err:
                control.fail_run(err)
                control.interrupt()
                return
            except (DatabaseError, StateError) as err:
                logger.warning("worker %s: lease not renewed (%s); trying again", self.id, err)

    def end(self, *, how: str) -> int:
        """Free what this worker holds; how many other workers are still alive. Once."""
        if self._ended is not None:
            return self._ended
        self._ended = self.store.release(self.id, how=how)
        return self._ended

    def abandon(self) -> None:
        """A run that stopped before its work began (a refusal after the sync): ended
        at once, so no other worker waits for its lease."""
        with contextlib.suppress(LiangXinBatchError, DatabaseError):
            self.end(how="stopped")

    def _expire(self) -> None:
        self._tell_ended(self.store.expire_workers())

    def _tell_ended(self, ended: Iterable[Expired]) -> None:
        for gone in ended:
            self._observer.message(
                f"worker {gone.worker} stopped renewing its lease: {gone.parked_unknown} "
                f"interrupted submit(s) parked unknown, {gone.freed} job(s) taken over"
            )


def join_as_worker(store: StateStore, settings: RunSettings, observer: Observer) -> Worker:
    """Register this process as a worker of the batch (after the sync)."""
    worker = Worker(
        store,
        lease=settings.worker_lease,
        claim_size=settings.claim_size,
        clock=LoopClock(),
        observer=observer,
    )
    worker.register()
    return worker


def leave(worker: Worker | None, observer: Observer, *, stopped: bool) -> int:
    """End the worker (its jobs freed); how many others are still at work (0: this one
    writes the reports). A state that cannot be written now: its lease runs out instead."""
    if worker is None:
        return 0
    try:
        others = worker.end(how="stopped" if stopped else "finished")
    except LiangXinBatchError as err:
        observer.message(f"worker {worker.id} could not end cleanly ({err}): its lease runs out")
        return 1
    if others:
        observer.message(
            f"{others} other worker(s) still at work on this batch: the last to finish "
            "writes results.csv and report.html"
        )
    return others


def alone(settings: RunSettings) -> RunSettings:
    """A worker's settings for what only one process may do in DIR: no live report."""
    return dataclasses.replace(settings, report_every=0)


def refuse_another_manifest(store: StateStore) -> None:
    """A worker whose manifest (or version, or catalog) differs from the batch's, while
    other workers run it: ConfigError (exit 2), nothing synced or sent."""
    others = store.live_workers()
    if others:
        names = ", ".join(f"{host} pid {pid}" for _id, host, pid, _until in others[:3])
        raise ConfigError(
            f"{len(others)} other worker(s) ({names}) run this batch with another manifest "
            "(or another version of liangxin-batch, or another catalog): every worker of a "
            "batch runs the same manifest. Nothing was sent. Run it when they have "
            "finished, or give this one the same manifest"
        )
