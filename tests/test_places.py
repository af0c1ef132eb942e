"""Places for createTask POSTs: two, more only when the round trip needs them."""

from __future__ import annotations

import asyncio

from liangxin_batch.run._places import CreatePlaces
from tests.virtual_time import run_virtual


def test_two_places_keep_a_default_account_and_more_come_only_for_long_round_trips() -> None:
    places = CreatePlaces(rate=2.0, ceiling=8)
    places.observe(0.3)  # 2/s x 0.3 s: two are plenty
    assert places.limit == 2
    fast = CreatePlaces(rate=20.0, ceiling=8)
    for _ in range(20):
        fast.observe(0.15)  # 20/s x 0.15 s = 3 in progress on average
    assert 4 <= fast.limit <= 6
    for _ in range(20):
        fast.observe(2.0)
    assert fast.limit == 8, "never past the ceiling: what a crash may leave unknown"


def test_a_waiter_is_admitted_when_a_place_frees_or_the_limit_grows() -> None:
    async def main() -> list[str]:
        places = CreatePlaces(rate=20.0, ceiling=4)
        order: list[str] = []

        async def take(name: str) -> None:
            await places.acquire()
            order.append(name)

        await take("a")
        await take("b")
        waiting = asyncio.ensure_future(take("c"))
        await asyncio.sleep(1)
        assert order == ["a", "b"], "a third POST must wait while two are out"
        places.observe(0.2)  # 20/s x 0.2 s: room for more
        await asyncio.sleep(0)
        await waiting
        cancelled = asyncio.ensure_future(take("d"))
        places.limit = places.in_use  # full again
        await asyncio.sleep(1)
        cancelled.cancel()
        await asyncio.sleep(0)
        places.release()
        await take("e")
        return order

    assert run_virtual(main) == ["a", "b", "c", "e"]
