"""The service's rate limits: an exact sliding window per API key.

Exact means: at most `limit` admissions in ANY half-open interval of `window` seconds.
We keep the admission times and admit only when the `limit`-th most recent one is at
least `window` old, so a client that obeys "20 per 10 s" is never refused and one that
does not is refused exactly when the real service would.
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """Per-key admission control; time is passed in, never read."""

    __slots__ = ("_lock", "_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def try_admit(self, key: str, now: float) -> float | None:
        """Admit (and record) a request at `now`; None if admitted, else seconds to wait."""
        with self._lock:
            times = self._times.setdefault(key, deque())
            # Admissions a full window old can never matter again. Written as a
            # difference (not `t <= now - window`) so float rounding agrees with how
            # a test checks the property: t[i + limit] - t[i] >= window.
            while times and now - times[0] >= self.window:
                times.popleft()
            if len(times) >= self.limit:
                # The difference above and this sum round apart: a refusal never says 0.
                return max(times[-self.limit] + self.window - now, 1e-9)
            times.append(now)
            return None
