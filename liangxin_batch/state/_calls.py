"""Store calls from the event loop: where a database's round trip is made.

SQLite's commits cost about 15 µs, less than a thread hop: they run where they are
asked for, on the loop. PostgreSQL's are a network round trip (a millisecond on a LAN,
more under load or across a data centre): the run's per-job calls go through
`StateStore.call`, which makes them on the store's one thread while the loop goes on
with HTTP, polls and downloads. The rarer calls (start-up and the resume's pages of
jobs, the sync, the summary, a task's input refresh after a failed fetch) stay on the
loop; the connection's lock (`_pg.PgConnection`) keeps the two threads'
statements and transactions apart.

A call whose caller is cancelled (Ctrl-C) still finishes its write, and the caller
unwinds only then (however often it is cancelled meanwhile): what the caller knows of the
state is what the state says. It unwinds as cancelled even when the write failed, so that
a loop catching Exception cannot swallow the stop; the write's error is the
CancelledError's `__cause__`, for a caller with something to say about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from liangxin_batch.state._db import Connection, dialect
from liangxin_batch.state._tx import Transaction

__all__ = ["OffLoopCalls"]

P = ParamSpec("P")
T = TypeVar("T")


class _Lane(Executor):
    """One priority of the state's thread, as the Executor `run_in_executor` takes."""

    def __init__(self, thread: _StateThread, priority: int) -> None:
        self._state_thread = thread
        self._priority = priority

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._state_thread.put(self._priority, functools.partial(fn, *args, **kwargs))


class _StateThread:
    """The store's one thread for PostgreSQL's round trips. Calls run one at a time in
    the order they came, except that the urgent ones (a createTask's intent, a taskId
    that arrived) go before the downloads' and polls' bookkeeping waiting in the queue:
    a createTask holds a rate-limit slot while its intent is written."""

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], Any] | None, Any]] = (
            queue.PriorityQueue()
        )
        self._order = itertools.count()
        self._closed = False
        self.urgent = _Lane(self, 0)
        self.normal = _Lane(self, 1)
        self._thread = threading.Thread(target=self._run, name="liangxin-state_0", daemon=True)
        self._thread.start()

    def put(self, priority: int, fn: Callable[[], T]) -> Future[T]:
        if self._closed:  # as an executor shut down: never a call left waiting forever
            raise RuntimeError("the state's thread has stopped")
        future: Future[T] = Future()
        self._queue.put((priority, next(self._order), fn, future))
        return future

    def _run(self) -> None:
        while True:
            _priority, _order, fn, future = self._queue.get()
            if fn is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as err:  # the caller's to handle, as an executor's
                future.set_exception(err)
            else:
                future.set_result(result)

    def shutdown(self) -> None:
        """After every call already queued (their writes are made)."""
        self._closed = True
        self._queue.put((2, next(self._order), None, None))
        self._thread.join()


class OffLoopCalls:
    """`call` for the store (a mixin: the store sets `db` and `_tx`)."""

    db: Connection
    _tx: Transaction
    _thread: _StateThread | None = None

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)`, a function of this store's calls, made where its round
        trips do not hold up the loop (see the module docstring)."""
        if dialect(self.db) == "sqlite":  # per job, several times: nothing in between
            return fn(*args, **kwargs)
        return await self._off_loop(False, functools.partial(fn, *args, **kwargs))

    async def call_urgent(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`call`, ahead of the calls waiting that are not urgent: a createTask's intent
        and its taskId, which hold a rate-limit slot and a paid task."""
        if dialect(self.db) == "sqlite":
            return fn(*args, **kwargs)
        return await self._off_loop(True, functools.partial(fn, *args, **kwargs))

    async def _off_loop(self, urgent: bool, fn: Callable[[], T]) -> T:
        if self._tx.held_here():
            # The loop inside a transaction would wait for a thread that waits for it.
            raise AssertionError("store.call inside a transaction of the loop's")
        if self._thread is None:
            self._thread = _StateThread()
        loop = asyncio.get_running_loop()
        lane = self._thread.urgent if urgent else self._thread.normal
        done = loop.run_in_executor(lane, fn)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError as cancel:
            while not done.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([done])  # never cancels `done`, never raises its error
            if not done.cancelled() and done.exception() is not None:
                cancel.__cause__ = done.exception()
            raise

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._thread.shutdown()
            self._thread = None
