"""An asyncio loop whose clock jumps to the next timer instead of waiting for it.

Code under test keeps calling `asyncio.sleep` and `loop.time()`; under this loop a
10-second rate window passes in microseconds, deterministically. While executor jobs
(threads) are pending the clock does not jump, so thread work is never "timed out".
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar, TypeVarTuple, Unpack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self.loop
        if loop is None or loop.pending_threads:
            return super().select(timeout if timeout is None else min(timeout, 0.01))
        events = super().select(0)
        if events or timeout is None or timeout <= 0:
            if not events and timeout is None:
                # Nothing scheduled: only real I/O can wake us; wait for it briefly.
                return super().select(0.01)
            return events
        loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 1_000.0) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = start
        self.pending_threads = 0

    def time(self) -> float:
        return self.now

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[Unpack[Ts]], T], *args: *Ts
    ) -> asyncio.Future[T]:
        self.pending_threads += 1
        fut = super().run_in_executor(executor, func, *args)

        def done(_: Any) -> None:
            self.pending_threads -= 1

        fut.add_done_callback(done)
        return fut


def run_virtual(main: Callable[[], Awaitable[T]]) -> T:
    """Run `main()` to completion on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
