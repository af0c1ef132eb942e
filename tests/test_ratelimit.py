from __future__ import annotations

import asyncio
import random

import pytest

from liangxin_batch.run._ratelimit import SlidingWindowLimiter
from tests.virtual_time import run_virtual


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_never_more_than_limit_in_any_window_under_contention() -> None:
    admitted: list[float] = []

    async def main() -> None:
        limiter = SlidingWindowLimiter(20, 10.0)
        loop = asyncio.get_running_loop()

        async def caller(delay: float) -> None:
            await asyncio.sleep(delay)
            await limiter.acquire()
            admitted.append(loop.time())

        rng = random.Random(7)
        await asyncio.gather(*(caller(rng.uniform(0, 60)) for _ in range(300)))

    run_virtual(main)
    assert len(admitted) == 300
    assert max_in_any_window(admitted, 10.0) == 20
    # Throughput stays close to the limit: 300 admissions need at least 14 full windows.
    span = max(admitted) - min(admitted)
    assert span < 15 * 10.2 + 1


def test_burst_is_admitted_at_once_then_waits_a_full_window() -> None:
    async def main() -> list[float]:
        limiter = SlidingWindowLimiter(5, 1.0, margin=0.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        out = []
        for _ in range(6):
            await limiter.acquire()
            out.append(loop.time() - start)
        return out

    times = run_virtual(main)
    assert times[:5] == [0.0] * 5
    assert times[5] == pytest.approx(1.0)


def test_block_for_holds_everyone_back() -> None:
    async def main() -> float:
        limiter = SlidingWindowLimiter(100, 1.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        limiter.block_for(7.5)
        await limiter.acquire()
        return loop.time() - start

    assert run_virtual(main) == pytest.approx(7.5)


def test_callers_are_served_in_arrival_order() -> None:
    order: list[int] = []

    async def main() -> None:
        limiter = SlidingWindowLimiter(1, 1.0)

        async def caller(i: int) -> None:
            await limiter.acquire()
            order.append(i)

        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(caller(i)))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    run_virtual(main)
    assert order == [0, 1, 2, 3, 4]


def test_rejects_nonsense_rates() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SlidingWindowLimiter(0, 10)
    with pytest.raises(ValueError):
        SlidingWindowLimiter(5, 0)


def test_an_isolated_429_widens_the_margin_and_keeps_the_rate() -> None:
    """A 429 while we kept to the limit is most likely arrival jitter (the service
    counted two sends closer than we sent them): cutting the rate by a quarter for the
    rest of a short run cost 18% of its throughput. The first one widens the margin."""
    now = [0.0]
    limiter = SlidingWindowLimiter(40, 2.0, clock=lambda: now[0])
    assert limiter.margin == pytest.approx(0.05)
    assert limiter.slow_down() == 40
    assert limiter.margin == pytest.approx(0.1)
    now[0] = 1.0
    assert limiter.slow_down() == 40, "more 429s from the same window count once"
    now[0] = 5.0  # a second one within the quiet period: the limit itself is wrong
    assert limiter.slow_down() == 30
    assert limiter.margin == pytest.approx(0.1)


def test_the_widened_margin_never_passes_a_tenth_of_the_window() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(40, 2.0, clock=lambda: now[0])
    for step in range(10):
        now[0] = 100.0 * step  # each 429 isolated
        limiter.slow_down()
    assert limiter.margin == pytest.approx(0.2)
    assert limiter.limit == 40


def test_slow_down_steps_once_per_window_and_never_below_one() -> None:
    now = [0.0]
    limiter = SlidingWindowLimiter(40, 10.0, clock=lambda: now[0])
    assert limiter.slow_down() == 40  # the first: jitter, the margin widens
    now[0] = 10.0
    assert limiter.slow_down() == 30
    assert limiter.slow_down() == 30, "more 429s from the same window count once"
    now[0] = 20.0
    assert limiter.slow_down() == 22
    for step in range(20):
        now[0] = 30.0 + 10.0 * step
        limiter.slow_down()
    assert limiter.limit == 1


def test_creates_are_paced_evenly_with_a_small_burst() -> None:
    """Finding 8: the window's quota is never admitted at once."""

    async def main() -> list[float]:
        limiter = SlidingWindowLimiter(20, 10.0, margin=0.0, burst=2)
        loop = asyncio.get_running_loop()
        times: list[float] = []
        for _ in range(60):
            await limiter.acquire()
            times.append(loop.time())
        return times

    times = run_virtual(main)
    start = times[0]
    rel = [t - start for t in times]
    assert rel[:3] == pytest.approx([0.0, 0.0, 0.5])  # a burst of 2, then every 0.5 s
    assert max_in_any_window(times, 10.0) <= 20
    assert max_in_any_window(times, 1.0) <= 3
    # Throughput at the limit: 60 admissions in 29 s (the burst of 2 saves one spacing).
    assert rel[-1] == pytest.approx(29.0)


def test_after_a_429_the_rate_climbs_back_after_quiet_windows() -> None:
    """Finding 7: one early 429 must not cost the rest of a long run."""

    async def main() -> list[int]:
        limiter = SlidingWindowLimiter(20, 10.0, margin=0.0, burst=2)
        limiter.slow_down()  # jitter: the margin widens
        await asyncio.sleep(10.0)
        limiter.slow_down()  # a second: 20 -> 15, ceiling 19
        limits = [limiter.limit]
        for _ in range(40):
            await asyncio.sleep(10.2)  # a window and the widened margin
            limiter.delay(asyncio.get_running_loop().time())
            limits.append(limiter.limit)
        return limits

    limits = run_virtual(main)
    assert limits[0] == 15
    assert limits[1:5] == [16, 17, 18, 19]  # one step per quiet window, to the ceiling
    assert limits[-1] == 20  # the ceiling itself is probed back up to the configured rate
    assert max(limits) == 20


def test_a_second_429_at_the_ceiling_keeps_the_rate_below_it() -> None:
    async def main() -> tuple[int, int]:
        limiter = SlidingWindowLimiter(40, 10.0, margin=0.0)
        limiter.slow_down()  # the service allows 20, we believed 40: first taken for jitter
        await asyncio.sleep(10.0)
        limiter.slow_down()
        for _ in range(5):
            await asyncio.sleep(10.2)  # a window and the widened margin
            limiter.delay(asyncio.get_running_loop().time())
        at_429 = limiter.limit
        limiter.slow_down()
        for _ in range(9):
            await asyncio.sleep(10.2)  # a window and the widened margin
            limiter.delay(asyncio.get_running_loop().time())
        return at_429, limiter.limit

    at_429, later = run_virtual(main)
    assert later == at_429 - 1  # climbs back only to just below the limit that drew a 429


def test_a_late_send_counts_in_the_window_when_it_went_out() -> None:
    """Admitted at 0 but sent at 0.4 (a commit, a busy loop): the service sees it at 0.4,
    so the window that may hold only `limit` sends ends 0.4 s later too."""
    from tests.virtual_time import run_virtual

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        limiter = SlidingWindowLimiter(2, 1.0, margin=0.0, burst=2)
        first = await limiter.acquire()
        await asyncio.sleep(0.4)
        limiter.sent_late(first, loop.time())
        await asyncio.sleep(0.1)
        second = await limiter.acquire()
        third = await limiter.acquire()
        return [t - start for t in (first, second, third)]

    first, second, third = run_virtual(main)
    assert first == 0.0 and second == pytest.approx(0.5)
    assert third == pytest.approx(1.4), "the late send's window, not its admission's"


def test_a_send_later_than_a_whole_window_still_counts() -> None:
    """Review finding: a request admitted at 0 but written only at 3.0 (a slow connect,
    a slow fsync) was dropped from the count once its admission had left the window, so
    `limit` more could follow it inside the service's window."""
    now = [0.0]
    limiter = SlidingWindowLimiter(2, 1.0, margin=0.0, burst=2, clock=lambda: now[0])
    assert limiter.delay(0.0) == 0.0
    limiter.prime([0.0])  # admitted at 0
    now[0] = 3.0
    assert limiter.delay(3.0) == 0.0  # the admission at 0 has left the window
    limiter.sent_late(0.0, 3.0)  # ... but the request only went out now
    limiter.prime([3.0])  # one more, admitted now
    assert limiter.delay(3.0) > 0.0, "two went out inside this window already"
