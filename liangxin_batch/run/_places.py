"""Places for createTask POSTs in progress: as few as keep the account's rate.

Every POST in progress is one a crash could leave `unknown`, so there are few of them:
two, unless the round trip of a create is so long that two cannot keep the rate (a
40-per-2-s account at 400 ms a create needs eight). The number follows the measured
round trip (`observe`) within [`floor`, `ceiling`]; the ceiling is the user's bound on
what a crash can leave unknown.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

__all__ = ["CreatePlaces"]


class CreatePlaces:
    def __init__(self, *, rate: float, ceiling: int, floor: int = 2) -> None:
        self.rate = rate  # creates per second the account allows
        self.floor = min(floor, ceiling)
        self.ceiling = ceiling
        self.limit = self.floor
        self.in_use = 0
        self._round_trip: float | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    def observe(self, seconds: float) -> None:
        """One create's round trip: re-size to keep `rate`, with a quarter to spare."""
        rt = seconds if self._round_trip is None else 0.8 * self._round_trip + 0.2 * seconds
        self._round_trip = rt
        wanted = math.ceil(self.rate * rt * 1.25)
        self.limit = max(self.floor, min(self.ceiling, wanted))
        self._wake()

    async def acquire(self) -> None:
        while self.in_use >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # it was woken and leaves: wake the next one instead
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_use
        for waiter in list(self._waiters):
            if free <= 0:
                break
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
