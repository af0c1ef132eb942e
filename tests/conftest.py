"""Shared pytest configuration."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.apt_support import APT_TIMEOUT_SECONDS
from tests.pg_support import PgServer, find_bin_dir, fresh_database, running_server


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server for the whole session (tests/pg_support.py): installed
    where it can be, else the test is skipped with the reason."""
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's server: `postgresql://USER@127.0.0.1:PORT/t_…`."""
    with fresh_database(pg_server) as url:
        yield url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the server is marked `postgres` (so `-m "not postgres"` leaves
    them out). Where the server still has to be installed, they get the time apt-get may
    take: the first one's setup runs it, inside its timeout."""
    users = [item for item in items if "pg_server" in getattr(item, "fixturenames", ())]
    if not users:
        return
    installing = find_bin_dir() is None
    for item in users:
        item.add_marker(pytest.mark.postgres)
        if installing:
            item.add_marker(pytest.mark.timeout(APT_TIMEOUT_SECONDS * 2 + 120), append=False)


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest) -> str | None:
    """Each backend of the state in turn: None (DIR/state.db), then a fresh PostgreSQL
    database (the store's tests run on both, issue 18)."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """For tests whose simulator serves from this process on a real-time window: by the
    end of the suite the heap holds 334,000 objects (measured), and one full garbage
    collection of them paused the simulator's thread for 235 ms, longer than the shared
    limit's 200-ms margin, and the requests that queued meanwhile were read as one burst
    (two 429s, ten seconds later, when the window reached them). Frozen, they are not
    scanned until the test ends (no pause over 10 ms measured in these tests, during a
    whole-suite run)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
