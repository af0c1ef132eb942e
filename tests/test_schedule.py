"""The learned poll schedule: pure, so checked on plain numbers (ages and quantiles in,
delays out), with simulated tasks drawn from known distributions."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liangxin_batch.core._latency import LatencyBook, LatencyEstimate, kind_key
from liangxin_batch.core._schedule import PollSchedule


def learned(samples: list[float], prior: float = 30.0) -> LatencyEstimate:
    est = LatencyEstimate(prior, window=len(samples) or 1)
    for s in samples:
        est.observe(s)
    return est


def polls_and_delay(schedule: PollSchedule, duration: float) -> tuple[int, float]:
    """Poll a task that finishes at `duration` by the schedule: (polls, seen - finished)."""
    at = schedule.first_delay()
    polls = 1
    while at < duration:
        at += schedule.next_delay(age=at, polls=polls)
        polls += 1
    return polls, at - duration


def test_quantiles_and_shares_of_what_finished() -> None:
    est = learned([float(s) for s in range(1, 102)])  # 1..101 s
    assert est.quantile(0.0) == 1.0 and est.quantile(1.0) == 101.0
    assert est.quantile(0.5) == pytest.approx(51.0)
    assert est.finished_share(51.0) == pytest.approx(0.5)
    assert est.finished_share(0.5) == 0.0 and est.finished_share(500) == 1.0


def test_the_window_forgets_old_tasks_so_a_drift_is_followed() -> None:
    est = LatencyEstimate(10.0, window=32)
    for _ in range(32):
        est.observe(10.0)
    for _ in range(32):
        est.observe(20.0)  # the service got twice as slow
    assert est.quantile(0.0) == 20.0


def test_before_anything_finished_a_few_explorers_look_early() -> None:
    """A catalog wrong by ten times must not hold tasks (and slots) for its whole guess;
    a right one must not cost every task a string of early polls."""
    est = LatencyEstimate(40.0)
    explorers = [est.take_explorer() for _ in range(10)]
    assert explorers == [True] * 3 + [False] * 7
    assert PollSchedule(estimate=est, explorer=True).first_delay() == pytest.approx(10.0)
    # The others follow the catalog's prior: 40 s spread 0.7-1.3, at its 80th percentile.
    assert PollSchedule(estimate=est).first_delay() == pytest.approx(40.0 * 1.18)
    small = LatencyEstimate(4.0)
    assert PollSchedule(estimate=small, explorer=True).first_delay() == 2.0  # the floor


def test_an_explorer_looks_early_once_then_follows_the_prior() -> None:
    """A small batch (a few tasks of each kind, all explorers) must not pay a string of
    early polls when the catalog is right."""
    schedule = PollSchedule(estimate=LatencyEstimate(100.0), explorer=True)
    assert schedule.first_delay() == pytest.approx(25.0)
    assert schedule.next_delay(age=25, polls=1) == pytest.approx(118.0 - 25.0)
    rng = random.Random(3)
    counts = [polls_and_delay(schedule, 100 * rng.uniform(0.7, 1.3))[0] for _ in range(500)]
    assert sum(counts) / len(counts) <= 2.5


def test_past_everything_known_polls_come_within_the_guidance_ceilings() -> None:
    schedule = PollSchedule(estimate=LatencyEstimate(10.0))
    assert schedule.next_delay(age=20, polls=5) == 3.0
    assert schedule.next_delay(age=60, polls=5) == 10.0
    assert schedule.next_delay(age=600, polls=9) == 30.0


@pytest.mark.parametrize("typical", [5.0, 6.0, 13.0, 15.0, 19.0, 30.0])
def test_a_right_catalog_costs_about_one_and_a_half_polls_before_learning(
    typical: float,
) -> None:
    """Against latencies spread 0.7-1.3 around the typical (as the simulator draws them)."""
    rng = random.Random(1)
    schedule = PollSchedule(estimate=LatencyEstimate(typical))
    counts = [polls_and_delay(schedule, typical * rng.uniform(0.7, 1.3))[0] for _ in range(2000)]
    assert sum(counts) / len(counts) <= 1.5


@pytest.mark.parametrize(
    ("low", "high", "max_polls", "max_delay"),
    [(1.0, 3.0, 1.35, 1.1), (7.0, 13.0, 1.35, 2.0), (60.0, 300.0, 1.5, 70.0)],
)
def test_learned_schedules_cost_little_more_than_one_poll_per_task(
    low: float, high: float, max_polls: float, max_delay: float
) -> None:
    rng = random.Random(7)
    est = learned([rng.uniform(low, high) for _ in range(64)])
    schedule = PollSchedule(estimate=est)
    results = [polls_and_delay(schedule, rng.uniform(low, high)) for _ in range(2000)]
    mean_polls = sum(p for p, _ in results) / len(results)
    mean_delay = sum(d for _, d in results) / len(results)
    assert mean_polls <= max_polls
    assert mean_delay <= max_delay


def test_the_last_wave_is_seen_soon_after_the_slowest_finishes() -> None:
    """The batch ends when the slowest of its last tasks is seen. Aiming the first poll
    at the usual 80% made one in five of them wait a whole guidance interval (2 s) more:
    the batch ended at 4.6 s after the last create for generations of 1-3 s."""
    rng = random.Random(3)

    def mean_batch_end(last_wave: bool) -> float:
        ends = []
        for _ in range(300):
            est = learned([rng.uniform(1.0, 3.0) for _ in range(64)])
            schedule = PollSchedule(estimate=est, last_wave=last_wave)
            last = [rng.uniform(1.0, 3.0) for _ in range(40)]
            ends.append(max(d + polls_and_delay(schedule, d)[1] for d in last))
        return sum(ends) / len(ends)

    assert mean_batch_end(False) > 4.4
    assert mean_batch_end(True) < 3.3


@given(
    st.lists(st.floats(0.5, 600), min_size=3, max_size=64),
    st.floats(0, 900),
    st.integers(1, 30),
)
def test_never_faster_than_the_guidance(samples: list[float], age: float, polls: int) -> None:
    schedule = PollSchedule(estimate=learned(samples))
    delay = schedule.next_delay(age=age, polls=polls)
    floor = 2.0 if age < 30 else 5.0 if age < 120 else 15.0
    assert delay >= floor
    assert schedule.first_delay() >= 2.0
    explorer = PollSchedule(estimate=LatencyEstimate(samples[0]), explorer=True)
    assert explorer.next_delay(age=age, polls=polls) >= floor
    assert explorer.first_delay() >= 2.0


def test_scale_and_stretch() -> None:
    est = learned([10.0, 10.0, 10.0])
    assert PollSchedule(estimate=est, scale=0.1).first_delay() == pytest.approx(1.0)
    assert PollSchedule(estimate=est, stretch=4.0).first_delay() == pytest.approx(40.0)


def test_kinds_follow_the_inputs_that_change_latency() -> None:
    book = LatencyBook()
    two_k = kind_key("m", {"resolution": "2K", "prompt": "a"}, ["resolution"])
    four_k = kind_key("m", {"resolution": "4K", "prompt": "b"}, ["resolution"])
    assert two_k != four_k
    assert kind_key("m", {"prompt": "x"}, ["resolution"]) == "m"
    assert book.estimate(two_k, 10.0) is book.estimate(two_k, 99.0)
    assert book.estimate(four_k, 10.0) is not book.estimate(two_k, 10.0)


def test_survival_counts_the_slow_tasks_still_out() -> None:
    """A cohort of 100 started together, 60-300 s each: at 220 s the fastest two thirds
    have finished. Their times alone say every task is done by 220 s; with the others
    counted as "ran at least 220 s" the curve says a third still run."""
    from liangxin_batch.core._latency import SurvivalCurve

    rng = random.Random(5)
    durations = sorted(rng.uniform(60, 300) for _ in range(100))
    now = 220.0
    finished = [d for d in durations if d <= now]
    running = [now] * (100 - len(finished))
    curve = SurvivalCurve(finished, running)
    assert curve.still_running(now) == pytest.approx(len(running) / 100)
    naive = SurvivalCurve(finished, [])
    assert naive.still_running(now) == 0.0
    # A task seen running at 200 s is more likely still out at 220 s than a fresh guess.
    assert curve.chance(now, seen_running_at=200.0) > curve.still_running(now)
    assert SurvivalCurve([], [5.0]).chance(10.0) == 1.0


def test_one_outlier_does_not_hold_the_last_wave_back() -> None:
    """Review finding: 63 tasks of 5 s and one of 120 s put the last wave's first poll at
    177 s; now at most the 95th percentile plus the guidance's longest interval."""
    est = learned([5.0] * 63 + [120.0])
    first = PollSchedule(estimate=est, last_wave=True).first_delay()
    assert first <= 5.0 + 3.0
