"""When to poll a task. Pure: ages and a latency estimate in, delays out.

Each poll aims at the time by which a share `target` of the tasks still running at the
last poll have finished (a quantile of the learned completion times, `_latency`), so a
task costs about 1 + (1 - target) + ... polls and is seen soon after it ends; the batch's
last tasks aim their first poll at the tail instead, since the slowest of them decides
when the batch ends. Before a
kind has finished tasks to learn from, the quantiles are the catalog's prior (its
typical time, spread 0.7-1.3), except for a few explorers per kind whose first poll
comes at a quarter of the typical time: a catalog wrong by ten times then costs those
few early polls, not the account's rate. Never faster than the service's guidance
(every 2-3 s for the first 30 s, 5-10 s until 2 minutes, then 15-30 s): `_floor` is its
lower end.
"""

from __future__ import annotations

from dataclasses import dataclass

from liangxin_batch.core._latency import LatencyEstimate

__all__ = ["SAFETY_NET_STRETCH", "PollSchedule"]

#: With callbacks on, polls are only the safety net: every delay is this many times longer.
SAFETY_NET_STRETCH = 4.0

#: Beyond this share, the estimate has nothing more to say: back off instead.
_TAIL = 0.98


@dataclass(frozen=True, slots=True, kw_only=True)
class PollSchedule:
    estimate: LatencyEstimate
    #: Our seconds per second of the service: below 1 against a simulator whose latencies
    #: are scaled down. Ages and learned times are in the service's seconds.
    scale: float = 1.0
    #: Every delay this many times longer (`SAFETY_NET_STRETCH` when callbacks are on).
    stretch: float = 1.0
    #: Each poll aims where this share of the tasks still running will have finished.
    target: float = 0.8
    #: One of the first tasks of its kind (`LatencyEstimate.take_explorer`): before anything
    #: is learned its first poll comes at `explore_first` of the catalog's time.
    explorer: bool = False
    explore_first: float = 0.25
    #: One of the batch's last tasks: nothing waits for its slot, and the batch ends when
    #: the slowest of them is seen, so its first poll aims just past the slowest time
    #: seen instead of at `target`: one that misses a poll is seen a guidance interval
    #: later (for 40 last tasks of 1-3 s: the batch's end 3.15 s after the last create
    #: on average instead of 4.59 s; `tests/test_schedule.py`).
    last_wave: bool = False
    growth: float = 1.5

    def first_delay(self) -> float:
        est = self.estimate
        if self.explorer and not est.learned:
            first = max(_floor(0.0), self.explore_first * est.prior_seconds)
        else:
            first = max(
                _floor(0.0), _past_slowest(est) if self.last_wave else est.quantile(self.target)
            )
        return first * self.scale * self.stretch

    def next_delay(self, *, age: float, polls: int) -> float:
        """Delay after the `polls`-th poll of a task `age` service-seconds old."""
        est = self.estimate
        # By the learned times, or by the catalog's prior: an explorer looks early once,
        # then follows the prior like the others.
        done = est.finished_share(age)
        if done < _TAIL:
            due = est.quantile(done + (1.0 - done) * self.target)
            return max(due - age, _floor(age)) * self.scale * self.stretch
        # Past what has been seen, or nothing seen yet: intervals that grow from a
        # fraction of the typical time, within the guidance for the task's age.
        shortest, longest = _guidance(age)
        interval = max(shortest, 0.15 * est.quantile(0.5)) * self.growth ** max(0, polls - 1)
        return min(interval, longest) * self.scale * self.stretch


def _past_slowest(est: LatencyEstimate) -> float:
    """Just past the slowest time seen: by half its distance from the 90th percentile,
    since a few more draws may well land beyond the slowest of a window's worth. Never
    later than the 95th percentile plus the guidance's longest interval there: one
    outlier in the window (a 120-s task among 5-s ones) must not hold the batch's end."""
    slowest = est.quantile(1.0)
    high = est.quantile(0.95)
    return min(slowest + 0.5 * (slowest - est.quantile(0.9)), high + _guidance(high)[1])


#: The service's polling guidance, by a task's age: (up to this age, the shortest
#: interval, the longest): every 2-3 s for the first 30 s, 5-10 s until 2 minutes, then
#: 15-30 s. Never poll one task more often than the first; an unknown task is still
#: looked at as often as the second.
_GUIDANCE = ((30.0, 2.0, 3.0), (120.0, 5.0, 10.0), (float("inf"), 15.0, 30.0))


def _guidance(age: float) -> tuple[float, float]:
    for until, shortest, longest in _GUIDANCE:
        if age < until:
            return shortest, longest
    return _GUIDANCE[-1][1:]


def _floor(age: float) -> float:
    return _guidance(age)[0]
