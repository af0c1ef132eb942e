"""An account's limit shared by the workers of a batch (issue 18): one row per limit in
the batch's PostgreSQL schema, GCRA slots taken in one statement (state/_limits.py), and
the limiter the workers pace by (run/_shared_limiter.py). A real server; each worker its
own connection. The limiter waits in real time here (it is what is measured), briefly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from liangxin_batch.run._shared_limiter import SharedLimiter
from liangxin_batch.state._backends import open_shared_limits, open_state


@pytest.fixture
def folder(tmp_path: Path, pg_url: str) -> Path:
    open_state(tmp_path, url=pg_url).close()
    return tmp_path


def test_slots_from_many_connections_are_evenly_apart(folder: Path, pg_url: str) -> None:
    """Three connections reserving at once never share a slot, nor come closer than the
    spacing (the slots in the server's clock: exact, however loaded the machine)."""
    spacing, per_worker, workers = 0.02, 10, 3
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        limits = open_shared_limits(folder, pg_url)
        with contextlib.closing(limits):
            for _ in range(per_worker):
                _wait, _after, slot = limits.reserve("acct:create", spacing, 0.0)
                with lock:
                    slots.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots.sort()
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert len(slots) == per_worker * workers
    assert min(gaps) >= spacing - 1e-6, gaps


def test_two_batches_on_one_account_share_its_pace(tmp_path: Path, pg_url: str) -> None:
    """The service counts an account's requests whichever batch sends them: two batches
    in one database take their slots from one row, and a 429 in one pauses the other."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for f in folders:
        open_state(f, url=pg_url).close()
    a, b = (open_shared_limits(f, pg_url) for f in folders)
    with contextlib.closing(a), contextlib.closing(b):
        *_, first = a.reserve("acct:create", 0.5, 0.0)
        *_, second = b.reserve("acct:create", 0.5, 0.0)
        assert second == pytest.approx(first + 0.5, abs=1e-6)
        b.block("acct:create", 3.0)
        *_, paused = a.reserve("acct:create", 0.5, 0.0)
        assert paused >= first + 3.0, "the other batch waits for the pause too"


def test_workers_of_new_batches_arriving_at_once_make_one_table(
    tmp_path: Path, pg_url: str
) -> None:
    """The first workers of a database all find the shared limits missing and make them
    at once: one makes them, the others use them (no duplicate-schema error)."""
    folders = [tmp_path / str(i) for i in range(4)]
    for f in folders:
        open_state(f, url=pg_url).close()
    with ThreadPoolExecutor(len(folders)) as pool:
        opened = list(pool.map(lambda f: open_shared_limits(f, pg_url), folders))
    slots = []
    for limits in opened:
        with contextlib.closing(limits):
            slots.append(limits.reserve("acct:create", 0.25, 0.0)[2])
    gaps = [b - a for a, b in itertools.pairwise(sorted(slots))]
    assert gaps == pytest.approx([0.25] * 3, abs=1e-6)


def test_a_429_pauses_every_worker(folder: Path, pg_url: str) -> None:
    a, b = open_shared_limits(folder, pg_url), open_shared_limits(folder, pg_url)
    with contextlib.closing(a), contextlib.closing(b):
        *_, first = a.reserve("acct:create", 0.01, 0.0)
        a.block("acct:create", 2.0)
        *_, paused = b.reserve("acct:create", 0.01, 0.0)
        assert paused >= first + 2.0, "the other worker waits for the pause too"
        b.push_back("acct:create", 1.0)
        *_, pushed = a.reserve("acct:create", 0.01, 0.0)
        assert pushed == pytest.approx(paused + 0.01 + 1.0, abs=1e-6), "moved back by 1 s"
        assert a.reserve("other:create", 0.01, 0.0)[0] == 0.0, "limits are apart by name"


def test_two_workers_limiters_keep_the_window_together(folder: Path, pg_url: str) -> None:
    """Two workers of one account, 10 per 0.5 s between them: no 0.5 s window (plus the
    margin) holds more than 10 admissions, and the pace is the account's, not twice it."""
    limit, window = 10, 0.5
    executors = [ThreadPoolExecutor(1), ThreadPoolExecutor(1)]
    stores = [open_shared_limits(folder, pg_url) for _ in executors]
    admitted: list[float] = []

    async def main() -> None:
        limiters = [
            SharedLimiter(limit, window, name="acct:create", limits=s, executor=e, margin=0.02)
            for s, e in zip(stores, executors, strict=True)
        ]

        async def take(limiter: SharedLimiter) -> None:
            for _ in range(15):
                await limiter.acquire()
                admitted.append(time.time())

        await asyncio.gather(*(take(lim) for lim in limiters))

    try:
        asyncio.run(main())
    finally:
        for s, e in zip(stores, executors, strict=True):
            e.shutdown()
            s.close()
    admitted.sort()
    for i in range(len(admitted) - limit):
        assert admitted[i + limit] - admitted[i] >= window, (i, admitted)
    spacing = (window + 0.02) / limit
    assert admitted[-1] - admitted[0] == pytest.approx(spacing * 29, abs=0.15)


def test_the_soonest_limit_is_the_one_the_others_have_used_least(folder: Path, pg_url: str) -> None:
    """Which account a worker sends the next job to follows the shared pace: after
    another worker took slots of one account, this worker sees it later than the other."""
    executor = ThreadPoolExecutor(1)
    mine, theirs = open_shared_limits(folder, pg_url), open_shared_limits(folder, pg_url)
    try:
        for _ in range(5):  # another worker takes account a's next five slots
            theirs.reserve("a:create", 0.1, 0.0)

        async def main() -> tuple[float, float]:
            a, b = (
                SharedLimiter(10, 1.0, name=f"{n}:create", limits=mine, executor=executor)
                for n in "ab"
            )
            await b.acquire()  # free: now
            await a.acquire()  # after their five: half a second on
            now = asyncio.get_running_loop().time()
            return a.delay(now), b.delay(now)

        delay_a, delay_b = asyncio.run(main())
    finally:
        executor.shutdown()
        mine.close()
        theirs.close()
    assert delay_a > delay_b
