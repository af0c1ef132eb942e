"""The clock protocol every timed part of a run reads through.

Two readings, because they answer different questions: `monotonic` orders waits and
deadlines (with asyncio it must be the event loop's own clock, so that a test's virtual
loop drives both the waits and the readings), and `wall` is the unix time that is
recorded (submitted_at, completed_at) and survives a restart.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Clock", "FixedClock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""
        ...

    def wall(self) -> float:
        """Unix seconds, for what is written down."""
        ...


class FixedClock:
    """A clock that moves only when told to: for tests of pure decisions over time."""

    __slots__ = ("_mono", "_wall")

    def __init__(self, *, monotonic: float = 0.0, wall: float = 1_750_000_000.0) -> None:
        self._mono = monotonic
        self._wall = wall

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._mono += seconds
        self._wall += seconds
