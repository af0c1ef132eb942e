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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from liangxin_batch.state._db import Connection, dialect
from liangxin_batch.state._tx import Transaction

__all__ = ["OffLoopCalls"]

P = ParamSpec("P")
T = TypeVar("T")


class OffLoopCalls:
    """`call` for the store (a mixin: the store sets `db` and `_tx`)."""

    db: Connection
    _tx: Transaction
    _thread: ThreadPoolExecutor | None = None

    async def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)`, a function of this store's calls, made where its round
        trips do not hold up the loop (see the module docstring)."""
        if dialect(self.db) == "sqlite":
            return fn(*args, **kwargs)
        if self._tx.held_here():
            # The loop inside a transaction would wait for a thread that waits for it.
            raise AssertionError("store.call inside a transaction of the loop's")
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="liangxin-state")
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))
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
            self._thread.shutdown(wait=True)
            self._thread = None
