"""The simulator's rate limits hold exactly: never over, never needlessly under."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liangxin_batch.simulator import SimConfig
from liangxin_batch.simulator._limits import SlidingWindow
from tests.sim_support import CREATE, MODEL, RECORD, harness

pytestmark = pytest.mark.anyio


def assert_window_holds(times: list[float], limit: int, window: float) -> None:
    """No half-open window of `window` seconds holds more than `limit` of `times`."""
    times = sorted(times)
    for i in range(len(times) - limit):
        assert times[i + limit] - times[i] >= window, (i, times[i], times[i + limit])


async def test_create_limit_is_exact_under_a_ragged_load() -> None:
    rng = random.Random(7)
    async with harness() as h:
        start = h.clock()
        outcomes: list[tuple[float, int]] = []
        for n in range(700):
            # Bursts (many at one instant), trickles and pauses, including exact
            # 10-second multiples, so window edges are hit on both sides.
            h.clock.advance(rng.choice([*[0.0] * 6, 0.05, 0.1, 0.3, 1.0, 2.5, 10.0]))
            response = await h.create(f"prompt {n}")
            outcomes.append((h.clock() - start, response.status_code))
            if response.status_code == 429:
                assert response.json()["code"] == 429
                assert int(response.headers["Retry-After"]) >= 1
            else:
                assert response.json()["code"] == 200

        accepted = h.sim.ledger.admitted_create_times()
        refused = [e for e in h.sim.ledger.create_attempts() if e.outcome == "429"]
        assert len(accepted) + len(refused) == 700
        assert 100 < len(refused) < 600  # the load really pushed against the limit
        assert_window_holds(accepted, 20, 10.0)
        # ...and the limiter is not stricter than the service's: every refusal happened
        # with 20 admissions inside the preceding 10 s.
        for event in refused:
            recent = [t for t in accepted if event.at - 10.0 < t <= event.at]
            assert len(recent) == 20
        # Refused requests create nothing and are not queued for later.
        assert len(h.sim.ledger.creates()) == len(accepted)
        assert len(h.sim.task_ids()) == len(accepted)


async def test_retry_after_says_when_the_window_admits_again() -> None:
    async with harness() as h:
        for n in range(20):
            await h.create_id(f"p{n}")
        h.clock.advance(3.0)
        refused = await h.create("one too many")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "7"
        h.clock.advance(6.5)
        again = await h.create("still too early")
        assert again.status_code == 429 and again.headers["Retry-After"] == "1"
        h.clock.advance(0.5)  # exactly 10 s after the first 20
        assert (await h.create("now")).json()["code"] == 200


async def test_create_limit_is_configurable() -> None:
    async with harness(SimConfig(create_limit=3, create_window=2.0)) as h:
        codes = [(await h.create(f"p{n}")).status_code for n in range(4)]
        assert codes == [200, 200, 200, 429]
        h.clock.advance(2.0)
        assert (await h.create("later")).status_code == 200


async def test_poll_limit_is_ten_per_second() -> None:
    async with harness() as h:
        task_id = await h.create_id()
        codes = []
        for _ in range(11):
            codes.append((await h.client.get(RECORD, params={"taskId": task_id})).status_code)
        assert codes == [200] * 10 + [429]
        refused = await h.client.get(RECORD, params={"taskId": task_id})
        assert refused.json()["code"] == 429 and refused.headers["Retry-After"] == "1"
        h.clock.advance(0.999)
        assert (await h.client.get(RECORD, params={"taskId": task_id})).status_code == 429
        h.clock.advance(0.001)
        assert (await h.client.get(RECORD, params={"taskId": task_id})).status_code == 200
        # Polls and creates have separate budgets.
        assert (
            await h.client.post(CREATE, json={"model": MODEL, "input": {"prompt": "x"}})
        ).json()["code"] == 200
        polled = h.sim.ledger.polls()
        assert [p.outcome for p in polled].count("429") == 3
        assert_window_holds([p.at for p in polled if p.outcome != "429"], 10, 1.0)


@given(
    gaps=st.lists(
        st.sampled_from([0.0, 0.001, 0.1, 0.25, 0.999, 1.0, 1.5, 3.0]), min_size=1, max_size=120
    ),
    limit=st.integers(1, 6),
    window=st.sampled_from([0.5, 1.0, 2.0, 10.0]),
)
def test_sliding_window_admits_exactly(gaps: list[float], limit: int, window: float) -> None:
    gate = SlidingWindow(limit, window)
    now, admitted = 1_000.0, []
    for gap in gaps:
        now += gap
        wait = gate.try_admit("key", now)
        if wait is None:
            admitted.append(now)
        else:
            recent = [t for t in admitted if now - t < window]
            assert len(recent) == limit and wait > 0
            assert min(recent) + window - now == pytest.approx(wait, abs=1e-6)
    assert_window_holds(admitted, limit, window)


def test_sliding_window_keys_are_independent() -> None:
    gate = SlidingWindow(1, 10.0)
    assert gate.try_admit("a", 0.0) is None
    assert gate.try_admit("b", 0.0) is None
    assert gate.try_admit("a", 5.0) == pytest.approx(5.0)
