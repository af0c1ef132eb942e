"""SharedLimiter: an account's limit held by every worker of a batch (issue 18).

The in-process limiter's pacing (`SlidingWindowLimiter`: one admission per `(window +
margin) / limit`, 429 recovery; no burst, see `acquire`) with the slots taken from one row
per limit in the shared PostgreSQL state (`state/_limits.py`), so four workers on one
account send as one process would: evenly, at most `limit` in any window. Reservations
run on one thread of their own with their own connection: a round trip to the database
never holds the event loop.

What stays per worker: a 429's step down of the limit (this worker paces more slowly
for a while, as the in-process limiter does) and the bookkeeping of its own sends.
What is shared: the slots, a 429's pause (`block_for`, for every worker at once), and a
late send's push back of the slots after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from concurrent.futures import Executor

from liangxin_batch.run._ratelimit import EPSILON, SlidingWindowLimiter
from liangxin_batch.state._limits import SharedLimits

__all__ = ["SHARED_MARGIN_FLOOR", "SHARED_MARGIN_SHARE", "SharedLimiter"]

#: The least margin of a shared limit, as a share of its window: 200 ms of the service's
#: 10 s window (2% of its rate), where one process keeps 50 ms; and at least
#: `SHARED_MARGIN_FLOOR` whatever the window (a loaded machine's send, or the service's
#: reading of it, slips by tens of milliseconds; at a window of a few seconds that much
#: is all of a 50 ms margin).
SHARED_MARGIN_SHARE = 0.02
SHARED_MARGIN_FLOOR = 0.1

logger = logging.getLogger(__name__)


class SharedLimiter(SlidingWindowLimiter):
    """`limit` admissions in any `window` seconds across every worker of the batch."""

    __slots__ = ("_executor", "_limits", "_next_free", "_pending", "name")

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        name: str,
        limits: SharedLimits,
        executor: Executor,
        margin: float | None = None,
        burst: int | None = None,
    ) -> None:
        super().__init__(limit, window, margin=margin, burst=burst)
        self.name = name
        self._limits = limits
        self._executor = executor
        self._pending: set[asyncio.Future[None]] = set()
        self._next_free = -math.inf

    @classmethod
    def like(
        cls, local: SlidingWindowLimiter, *, name: str, limits: SharedLimits, executor: Executor
    ) -> SharedLimiter:
        """A shared limiter with the settings of an in-process one, and a margin of at
        least `SHARED_MARGIN_SHARE` of the window: the senders are several processes on
        several machines, whose sends reach the service with their own delays."""
        return cls(
            local.configured,
            local.window,
            name=name,
            limits=limits,
            executor=executor,
            margin=max(local.margin, SHARED_MARGIN_SHARE * local.window, SHARED_MARGIN_FLOOR),
            burst=local.burst,
        )

    async def acquire(self) -> float:
        """Wait for this worker's next slot of the shared pace; its time (the loop's)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one reservation at a time per worker
            loop = asyncio.get_running_loop()
            self._recover(self._now())
            # No burst: a slot ahead of the even pace could make a window hold one more
            # than the limit, and the shared row has no log of the window to check it by.
            wait, after, _slot = await loop.run_in_executor(
                self._executor, self._limits.reserve, self.name, self.spacing, 0.0
            )
            now = self._now()
            slot, self._next_free = now + wait, now + after
            if wait > EPSILON:
                await asyncio.sleep(wait)
            # The slot, not the wake-up: a busy loop that wakes late makes the send late,
            # and `sent_late` then pushes the pace back by as much.
            self._admit(slot)
            return slot

    def delay(self, now: float) -> float:
        """When this limit's next slot comes, as the last reservation saw the shared pace
        (other workers' reservations since can only make it later): which account a job
        goes to is chosen by it (`LiangXinClient.soonest_account`)."""
        return max(0.0, self._next_free - now, self._blocked_until - now)

    def too_late(self, held: float) -> bool:
        """The slots after this one are other workers' already: a send held back past
        its slot by more than the margin could make their window hold one more than
        the limit (an intent's commit behind the store's queue, a database answering
        slowly). Take a new slot instead. A busy loop's late wake-up is not counted
        here: it delays every worker's sends alike, and `sent_late` moves the pace
        back by it (retaking for it wasted a slot a time: 0.73 of the summed limits
        for 4 workers x 3 accounts on two loaded cores, 0.97 without)."""
        return held > self.margin

    def sent_late(self, admitted: float, sent: float) -> None:
        super().sent_late(admitted, sent)
        late = sent - admitted
        if late > self.margin / 2:  # beyond what the margin absorbs: move the pace back
            self._share(self._limits.push_back, self.name, late)

    def block_for(self, seconds: float) -> None:
        super().block_for(seconds)
        self._share(self._limits.block, self.name, seconds)

    def _share(self, call: Callable[[str, float], None], name: str, seconds: float) -> None:
        """Tell the other workers, off the loop's thread (the caller does not wait)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, call, name, seconds)
        self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[None]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            err = future.exception()
            logger.warning("%s: the shared limit was not updated: %s", self.name, err)
