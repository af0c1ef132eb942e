"""How long tasks of one kind take, learned while a batch runs. Pure: seconds in, seconds out.

A kind is a model plus the inputs that change its price (resolution, video duration,
number of images): those are the ones that change how long it runs. Each kind keeps the
generation times of its last `window` finished tasks (completeTime - createTime, as
the service measured them), so an estimate follows a service whose load changes during
the day; the catalog's typical latency is only the prior until a few have finished.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "EXPLORERS",
    "MIN_OBSERVED",
    "LatencyBook",
    "LatencyEstimate",
    "SurvivalCurve",
    "kind_key",
]

#: Finished tasks needed before the estimate is trusted over the prior.
MIN_OBSERVED = 3
#: Tasks of a kind that look early while nothing is learned (the catalog may be wrong by
#: ten times); the others follow the catalog's prior until these have told us more.
EXPLORERS = 3


class LatencyEstimate:
    """The completion-time distribution of one kind of task."""

    __slots__ = ("_explorers", "_recent", "_sorted", "prior_seconds", "window")

    def __init__(self, prior_seconds: float, *, window: int = 64) -> None:
        self.prior_seconds = max(prior_seconds, 0.001)
        self.window = window
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []
        self._explorers = EXPLORERS

    def take_explorer(self) -> bool:
        """Whether a new task of this kind should look early: one of the first few while
        nothing is learned."""
        if self.learned or self._explorers <= 0:
            return False
        self._explorers -= 1
        return True

    @property
    def learned(self) -> bool:
        """Enough finished tasks to plan by them rather than by the prior."""
        return len(self._recent) >= MIN_OBSERVED

    def observe(self, seconds: float) -> None:
        if not seconds >= 0:  # NaN or negative: a clock we cannot read
            return
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def finished_times(self) -> list[float]:
        """The generation times this estimate holds (the last `window`), sorted."""
        return list(self._sorted)

    def quantile(self, p: float) -> float:
        """The time by which a share `p` of tasks have finished (interpolated)."""
        data = self._sorted
        if len(data) < MIN_OBSERVED:
            # The prior: the catalog's typical time, spread like the simulator's 0.7-1.3.
            return self.prior_seconds * (0.7 + 0.6 * min(max(p, 0.0), 1.0))
        position = min(max(p, 0.0), 1.0) * (len(data) - 1)
        low = int(position)
        high = min(low + 1, len(data) - 1)
        return data[low] + (data[high] - data[low]) * (position - low)

    def finished_share(self, age: float) -> float:
        """The estimated share of tasks of this kind done within `age` seconds."""
        data = self._sorted
        if len(data) < MIN_OBSERVED:
            low, high = 0.7 * self.prior_seconds, 1.3 * self.prior_seconds
            return min(max((age - low) / (high - low), 0.0), 1.0)
        if age < data[0]:
            return 0.0
        if age >= data[-1]:
            return 1.0
        i = bisect.bisect_right(data, age) - 1  # data[i] <= age < data[i + 1]
        step = data[i + 1] - data[i]
        within = (age - data[i]) / step if step > 0 else 0.0
        return (i + within) / (len(data) - 1)


class SurvivalCurve:
    """The share of tasks of a kind still running at each age (Kaplan-Meier).

    Finished tasks alone would say too little: early in a batch only the fast ones have
    finished, and their times would make every task look done too soon. The tasks still
    running count as "ran at least this long", so the curve stays honest while the slow
    ones are out. Pure: generation times and running ages in.
    """

    __slots__ = ("_ages", "_shares")

    def __init__(self, finished: Iterable[float], running: Iterable[float]) -> None:
        events = sorted(finished)
        censored = sorted(running)
        at_risk = len(events) + len(censored)
        share = 1.0
        ages: list[float] = []
        shares: list[float] = []
        c = i = 0
        while i < len(events):
            t = events[i]
            while c < len(censored) and censored[c] < t:  # left before t: not at risk
                c += 1
                at_risk -= 1
            ties = 1
            while i + ties < len(events) and events[i + ties] == t:
                ties += 1
            if at_risk > 0:
                share *= 1.0 - ties / at_risk
            ages.append(t)
            shares.append(share)
            at_risk -= ties
            i += ties
        self._ages = ages
        self._shares = shares

    def still_running(self, age: float) -> float:
        """The share of tasks still running at `age` (a step down at each finish)."""
        i = bisect.bisect_right(self._ages, age)
        return 1.0 if i == 0 else self._shares[i - 1]

    def chance(self, age: float, *, seen_running_at: float = 0.0) -> float:
        """How likely a task `age` old, seen running at `seen_running_at`, still runs."""
        before = self.still_running(seen_running_at)
        if before <= 0.0:
            return 1.0  # it outlived everything seen: the curve says nothing about it
        return min(1.0, self.still_running(age) / before)


def kind_key(model: str, values: Mapping[str, Any], latency_fields: Iterable[str]) -> str:
    """`model` plus the values of the fields that change how long it runs."""
    parts = [f"{name}={values.get(name)}" for name in latency_fields if name in values]
    return model if not parts else model + "|" + "|".join(parts)


class LatencyBook:
    """One estimate per kind of task, made on first use with the kind's prior."""

    def __init__(self, *, window: int = 64) -> None:
        self._window = window
        self._by_kind: dict[str, LatencyEstimate] = {}

    def estimate(self, kind: str, prior_seconds: float) -> LatencyEstimate:
        found = self._by_kind.get(kind)
        if found is None:
            found = self._by_kind[kind] = LatencyEstimate(prior_seconds, window=self._window)
        return found
