"""SlidingWindowLimiter: at most N admissions in ANY window of P seconds — exactly.

A leaky bucket (aiolimiter) admits up to twice its burst inside one window, and the
service rejects (HTTP 429, not queued) anything over "20 per 10 s". So we keep the
admission times and admit the next caller only when the N-th most recent admission
has left the window. Time comes from the running loop, so tests drive it with a
virtual clock instead of sleeping.

Inside the window, admissions are also paced evenly (GCRA: one per `window / limit`,
with a tolerance of `burst` admissions at once), so the window's quota is never sent as
one burst: a kill at any instant then finds at most a couple of requests on the wire.
A 429 while we kept to the limit is first taken for arrival jitter (the service saw two
of our sends closer together than we sent them): the margin doubles, up to a tenth of the
window, and the rate stays. A second 429 within `CEILING_WINDOWS` quiet windows means the
limit itself is wrong: it steps down (multiplicative decrease), and remembers a ceiling just
below the limit that drew it; each quiet window climbs one step back toward that ceiling
(additive increase), and every `CEILING_WINDOWS` quiet windows the ceiling itself rises by
one toward the configured limit, so one early 429 does not cost the rest of a long run
and a wrong configured limit does not hit the wall every window.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

__all__ = ["SlidingWindowLimiter"]

#: Waits shorter than this count as "now": float rounding can leave a residue of 1e-13 s
#: that a clock at the magnitude of loop.time() cannot even advance by.
EPSILON = 1e-6
#: Quiet windows after which a ceiling learnt from a 429 is probed one step higher; a 429
#: after this many quiet windows counts as jitter, not as a wrong limit.
CEILING_WINDOWS = 10
#: The most a 429 widens the margin to, as a share of the window.
MAX_MARGIN_SHARE = 0.1


class SlidingWindowLimiter:
    """Admit at most `limit` acquisitions in any `window` seconds.

    `margin` widens the window slightly because the service measures arrival times,
    which differ from our send times by the network's jitter.
    """

    __slots__ = (
        "_blocked_until",
        "_ceiling",
        "_ceiling_raised_at",
        "_clock",
        "_lock",
        "_raised_at",
        "_rejected_at",
        "_slowed_at",
        "_tat",
        "_times",
        "burst",
        "configured",
        "limit",
        "margin",
        "window",
    )

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        margin: float | None = None,
        burst: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError(
                f"rate must be at least 1 per a positive window, got {limit}/{window}s"
            )
        self.limit = limit
        #: The limit asked for; after a 429 step-down `limit` climbs back to it.
        self.configured = limit
        self.window = window
        # At least 50 ms: a loaded event loop (ours, or the service's) can shift a send
        # by tens of milliseconds. Larger jitter shows as a 429, which widens it.
        self.margin = max(0.05, 0.01 * window) if margin is None else margin
        #: Admissions allowed back to back; None: the whole quota (no pacing).
        self.burst = limit if burst is None else max(1, burst)
        self._clock = clock
        self._times: deque[float] = deque()
        self._blocked_until = 0.0
        self._slowed_at = -math.inf
        self._rejected_at = -math.inf
        self._raised_at = -math.inf
        #: The highest limit believed safe (below the one that drew the last 429).
        self._ceiling = limit
        self._ceiling_raised_at = -math.inf
        #: GCRA's theoretical arrival time of the next evenly paced admission.
        self._tat = -math.inf
        self._lock: asyncio.Lock | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def spacing(self) -> float:
        """The even gap between admissions at the current limit."""
        return (self.window + self.margin) / self.limit

    def delay(self, now: float) -> float:
        """Seconds until the next admission is allowed (0 when one is allowed now)."""
        self._recover(now)
        span = self.window + self.margin
        while self._times and self._times[0] <= now - span:
            self._times.popleft()
        wait = self._blocked_until - now
        if len(self._times) >= self.limit:
            wait = max(wait, self._times[-self.limit] + span - now)
        tolerance = (min(self.burst, self.limit) - 1) * self.spacing
        wait = max(wait, self._tat - tolerance - now)
        return max(0.0, wait)

    def _admit(self, now: float) -> None:
        self._times.append(now)
        self._tat = max(self._tat, now) + self.spacing

    def _recover(self, now: float) -> None:
        span = self.window + self.margin
        quiet = now - self._slowed_at
        if (
            self._ceiling < self.configured
            and quiet >= CEILING_WINDOWS * span
            and now - self._ceiling_raised_at >= CEILING_WINDOWS * span
        ):
            self._ceiling_raised_at = now
            self._ceiling += 1
        if self.limit < self._ceiling and now - max(self._slowed_at, self._raised_at) >= span:
            self._raised_at = now
            self.limit += 1

    async def acquire(self) -> float:
        """Wait for an admission; its time. Callers are admitted in arrival order."""
        if self._lock is None:  # created lazily so the limiter binds to the running loop
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = self._now()
                wait = self.delay(now)
                if wait <= EPSILON:
                    self._admit(now)
                    return now
                await asyncio.sleep(wait)

    def too_late(self, held: float) -> bool:
        """Whether a turn held back `held` seconds past its slot by a wait of ours (the
        intent's commit) should take a new slot rather than send. Never here: this
        limiter's own log counts a late send when it goes out (`sent_late`), and the
        next admission waits for it."""
        return False

    def sent_late(self, admitted: float, sent: float) -> None:
        """The request admitted at `admitted` went out only at `sent` (a busy loop, a
        commit first): count it in the window at the time the service will see it."""
        if sent <= admitted:
            return
        times = self._times
        for i in range(len(times) - 1, -1, -1):
            if times[i] == admitted:
                del times[i]
                break
        # Not found: its admission already left the window, but the request itself goes
        # out only now and the service counts it now: it is put back all the same.
        i = len(times)
        while i > 0 and times[i - 1] > sent:  # keep the deque in order (a few steps)
            i -= 1
        times.insert(i, sent)

    def prime(self, admitted: list[float]) -> None:
        """Admissions made before this limiter existed, in its clock's time (an earlier
        process's creates: the service still counts them in its window)."""
        for at in sorted(admitted):
            self._times.append(at)
            self._tat = max(self._tat, at) + self.spacing

    def block_for(self, seconds: float) -> None:
        """Admit nobody for `seconds` (the service said 429 / Retry-After)."""
        self._blocked_until = max(self._blocked_until, self._now() + seconds)

    def slow_down(self, *, factor: float = 0.75) -> int:
        """The service said 429 although we kept to `limit`: widen the margin for the
        first, admit fewer for a while after a second.

        At most one step per window, so a burst of 429s from one window counts once;
        quiet windows climb back (see `_recover`). Returns the new limit (never below 1).
        """
        now = self._now()
        if now - self._rejected_at < self.window:
            return self.limit
        quiet = now - self._rejected_at >= CEILING_WINDOWS * (self.window + self.margin)
        self._rejected_at = now
        if quiet:
            widest = MAX_MARGIN_SHARE * self.window
            self.margin = max(self.margin, min(max(2 * self.margin, 0.01 * self.window), widest))
            return self.limit
        self._slowed_at = now
        self._ceiling = max(1, self.limit - 1)
        self.limit = max(1, int(self.limit * factor))
        return self.limit
