"""Clocks for the simulator: wall time by default, a hand-driven one for tests."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Clock", "ManualClock"]

Clock = Callable[[], float]
"""Unix seconds as a float. All simulator logic reads time through one of these."""


class ManualClock:
    """A clock that only moves when told to, so tests never sleep.

    Starts at a realistic unix time so createTime/completeTime look like real values.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = start
        # Tests may advance it while a uvicorn thread reads it.
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Jump to an absolute time at or after the current one."""
        with self._lock:
            if now < self._now:
                raise ValueError("a clock does not go backwards")
            self._now = now
