"""When to poll a task. Pure: ages in, delays out.

The service's guidance: every 2–3 s for the first 30 s, 5–10 s until 2 minutes, then
15–30 s. Polling before a model can possibly be done only spends the 10-per-second
recordInfo budget, so the first poll waits about the model's typical latency, then
intervals grow from a fraction of that latency up to the guidance's ceiling for the age.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PollSchedule"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PollSchedule:
    typical_seconds: float
    #: Stretch everything (a run with callbacks polls slowly, as a safety net only).
    scale: float = 1.0
    first_fraction: float = 1.0
    growth: float = 1.5
    min_interval: float = 2.0

    def first_delay(self) -> float:
        return max(self.min_interval, self.typical_seconds * self.first_fraction) * self.scale

    def next_delay(self, *, age: float, polls: int) -> float:
        """Delay after the `polls`-th poll of a task that is `age` seconds old."""
        base = max(self.min_interval, 0.15 * self.typical_seconds)
        interval = base * self.growth ** max(0, polls - 1)
        return min(interval, _ceiling(age)) * self.scale


def _ceiling(age: float) -> float:
    if age < 30:
        return 3.0
    if age < 120:
        return 10.0
    return 30.0
