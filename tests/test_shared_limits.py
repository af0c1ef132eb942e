"""An account's limit shared by the workers of a batch (issue 18): one row per limit in
a schema every batch of the database shares, GCRA slots taken in one statement
(state/_limits.py), and the limiter the workers pace by (run/_shared_limiter.py). A real
server; each worker its own connection. The limiter waits in real time here (it is what
is measured), briefly."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from liangxin_batch.errors import StateError
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


#: Long enough that no pause of a loaded machine between two reservations lets the
#: pace catch up with the clock (nothing here waits for a slot).
SLOW = 60.0


def test_two_batches_on_one_account_share_its_pace(tmp_path: Path, pg_url: str) -> None:
    """The service counts an account's requests whichever batch sends them: two batches
    in one database take their slots from one row, and a 429 in one pauses the other."""
    folders = [tmp_path / "a", tmp_path / "b"]
    for f in folders:
        open_state(f, url=pg_url).close()
    with contextlib.ExitStack() as stack:
        a, b = (
            stack.enter_context(contextlib.closing(open_shared_limits(f, pg_url))) for f in folders
        )
        *_, first = a.reserve("acct:create", SLOW, 0.0)
        *_, second = b.reserve("acct:create", SLOW, 0.0)
        assert second == pytest.approx(first + SLOW, abs=1e-6)
        b.block("acct:create", 10 * SLOW)
        *_, paused = a.reserve("acct:create", SLOW, 0.0)
        assert paused >= first + 10 * SLOW, "the other batch waits for the pause too"


def test_workers_of_new_batches_arriving_at_once_make_one_table(
    tmp_path: Path, pg_url: str
) -> None:
    """The first workers of a database all find the shared limits missing and make them
    at once: one makes them, the others use them (no duplicate-schema error)."""
    folders = [tmp_path / str(i) for i in range(4)]
    for f in folders:
        open_state(f, url=pg_url).close()
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(folders)) as pool:
        futures = [pool.submit(open_shared_limits, f, pg_url) for f in folders]
        for future in futures:  # every one opened is closed, whichever failed
            if future.exception() is None:
                stack.callback(future.result().close)
        opened = [future.result() for future in futures]
        slots = sorted(limits.reserve("acct:create", SLOW, 0.0)[2] for limits in opened)
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert gaps == pytest.approx([SLOW] * 3, abs=1e-6)


@pytest.fixture
def roles(pg_url: str) -> Iterator[Callable[..., str]]:
    """Make login roles on the test server (cluster-wide: random names, dropped after);
    each call returns the test database's URL as that role."""
    psycopg = pytest.importorskip("psycopg")
    made: list[str] = []
    database = pg_url.rsplit("/", 1)[1]

    def make(*, create_on_database: bool) -> str:
        name = f"r_{secrets.token_hex(4)}"
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {name} LOGIN")
            made.append(name)
            if create_on_database:
                admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO {name}')
        return pg_url.replace("postgresql://postgres@", f"postgresql://{name}@")

    yield make
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for name in made:
            admin.execute(f"DROP OWNED BY {name} CASCADE")
            admin.execute(f"DROP ROLE {name}")


def test_batches_of_two_roles_share_the_limits(tmp_path: Path, roles: Callable[..., str]) -> None:
    """Batches of one database run as several roles: the limits the first role made are
    every role's to use."""
    alice, bob = roles(create_on_database=True), roles(create_on_database=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    open_state(tmp_path / "a", url=alice).close()
    open_state(tmp_path / "b", url=bob).close()
    with contextlib.ExitStack() as stack:
        mine = stack.enter_context(contextlib.closing(open_shared_limits(tmp_path / "a", alice)))
        *_, first = mine.reserve("acct:create", SLOW, 0.0)
        theirs = stack.enter_context(contextlib.closing(open_shared_limits(tmp_path / "b", bob)))
        *_, second = theirs.reserve("acct:create", SLOW, 0.0)
        theirs.block("acct:create", 1.0)
        theirs.push_back("acct:create", 1.0)
    assert second == pytest.approx(first + SLOW, abs=1e-6)


def test_a_role_that_cannot_make_the_limits_is_told_what_to_grant(
    tmp_path: Path, pg_url: str, roles: Callable[..., str]
) -> None:
    open_state(tmp_path, url=pg_url).close()  # the batch, made by the database's owner
    carol = roles(create_on_database=False)
    with pytest.raises(StateError) as caught:
        open_shared_limits(tmp_path, carol)
    said = str(caught.value)
    assert "liangxin_limits" in said and "permission denied" in said
    assert "grant it to this role" in said and "Nothing was sent" in said
    assert "Traceback" not in said


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
