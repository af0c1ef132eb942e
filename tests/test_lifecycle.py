from __future__ import annotations

import random

import pytest

from liangxin_batch import _errors as E
from liangxin_batch._lifecycle import CreateVerdict, decide_create_failure
from liangxin_batch._schedule import PollSchedule


@pytest.mark.parametrize(
    ("err", "verdict"),
    [
        (E.NotSentError("refused"), CreateVerdict.RETRY),
        (E.AmbiguousError("read timeout"), CreateVerdict.UNKNOWN),
        (E.RateLimitedError("slow"), CreateVerdict.RETRY),
        (E.MaintenanceError("maint"), CreateVerdict.RETRY),
        (E.ServerError("oops"), CreateVerdict.RETRY),
        (E.BadRequestError("bad"), CreateVerdict.REJECT),
        (E.InvalidInputError("bad ratio"), CreateVerdict.REJECT),
        (E.NotFoundError("no such model"), CreateVerdict.REJECT),
        # 408 and gateway errors may come after the task was created upstream.
        (E.UpstreamTimeoutError("408"), CreateVerdict.UNKNOWN),
        (E.GenerationFailedError("501"), CreateVerdict.UNKNOWN),
        (E.AuthError("key"), CreateVerdict.STOP),
        (E.InsufficientCreditsError("top up"), CreateVerdict.STOP),
        (E.QuotaExceededError("cap"), CreateVerdict.STOP),
        (E.FeatureDisabledError("off"), CreateVerdict.STOP),
        (E.api_error_for(502, "bad gateway"), CreateVerdict.UNKNOWN),
        (E.api_error_for(503, "unavailable"), CreateVerdict.UNKNOWN),
        (E.api_error_for(504, "gateway timeout"), CreateVerdict.UNKNOWN),
    ],
)
def test_create_failure_verdicts(err: E.LiangXinError, verdict: CreateVerdict) -> None:
    assert decide_create_failure(err, tries=1, window=10.0).verdict is verdict


def test_429_throttles_everyone_for_retry_after_or_a_window() -> None:
    d = decide_create_failure(E.RateLimitedError("x", retry_after=4.0), tries=1, window=10.0)
    assert d.throttle and d.delay == 4.0
    d = decide_create_failure(E.RateLimitedError("x"), tries=1, window=10.0)
    assert d.delay == 10.0


def test_backoff_grows_for_not_created_errors() -> None:
    delays = [
        decide_create_failure(E.ServerError("x"), tries=t, window=10).delay for t in (1, 2, 3)
    ]
    assert delays == [1.0, 2.0, 4.0]


def test_poll_schedule_follows_service_guidance_ceilings() -> None:
    s = PollSchedule(typical_seconds=100.0)
    assert s.next_delay(age=10, polls=5) == 3.0
    assert s.next_delay(age=60, polls=5) == 10.0
    assert s.next_delay(age=600, polls=9) == 30.0
    assert PollSchedule(typical_seconds=10, scale=4).first_delay() == 40.0


@pytest.mark.parametrize("typical", [5.0, 6.0, 13.0, 15.0, 19.0, 30.0])
def test_image_tasks_cost_about_three_polls_or_fewer(typical: float) -> None:
    """Against latencies spread ±30 % around the typical (as the simulator draws them)."""
    rng = random.Random(1)
    schedule = PollSchedule(typical_seconds=typical)
    counts = []
    for _ in range(2000):
        latency = typical * rng.uniform(0.7, 1.3)
        t, polls = schedule.first_delay(), 1
        while t < latency:
            t += schedule.next_delay(age=t, polls=polls)
            polls += 1
        counts.append(polls)
    assert sum(counts) / len(counts) <= 3.0
