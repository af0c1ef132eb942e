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

__all__ = ["EXPLORERS", "MIN_OBSERVED", "LatencyBook", "LatencyEstimate", "kind_key"]

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
    def observed(self) -> int:
        return len(self._recent)

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

    def kinds(self) -> Mapping[str, LatencyEstimate]:
        return dict(self._by_kind)
