"""A run on PostgreSQL never waits on a round trip for a job (issue 18): every per-job
statement is made on the store's thread, so the statements the event loop makes itself
(start-up, the sync, the summary) do not grow with the batch."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.run._run import run_batch_async
from liangxin_batch.simulator import SimConfig, create_app
from liangxin_batch.state._pg import PgConnection
from tests.runner_harness import KEY, make_jobs, records_for
from tests.virtual_time import VirtualTimeLoop

_EXECUTE = PgConnection.execute


def statements_on_the_loop(tmp_path: Path, url: str, jobs: int, monkeypatch: Any) -> Counter[str]:
    """Run `jobs` jobs to the end against the in-process simulator; the statements each
    thread made, by thread name (the loop's thread is "loop")."""
    made: Counter[str] = Counter()
    loop_thread: list[int] = []

    def counted(self: PgConnection, sql: str, parameters: Any = (), /) -> Any:
        here = threading.current_thread()
        made["loop" if loop_thread and here.ident == loop_thread[0] else here.name] += 1
        return _EXECUTE(self, sql, parameters)

    monkeypatch.setattr(PgConnection, "execute", counted)
    loop = VirtualTimeLoop(start=1_000.0)
    app = create_app(SimConfig(api_key=KEY, seed=5), clock=loop.time)

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        summary = await run_batch_async(
            records_for(make_jobs(jobs, models=("z-image", "google/nano-banana"))),
            out_dir=tmp_path / f"out{jobs}",
            catalog=default_catalog(),
            settings=RunSettings(state_url=url, report_every=0),
            api_key=KEY,
            base_url="http://sim",
            transport=httpx.ASGITransport(app=app),
            download_transport=httpx.ASGITransport(app=app),
        )
        assert summary.counts.get("succeeded") == jobs, summary.counts

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    return made


@pytest.mark.slow
def test_per_job_statements_never_run_on_the_event_loop(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    few = statements_on_the_loop(tmp_path, pg_url, 10, monkeypatch)
    many = statements_on_the_loop(tmp_path, pg_url, 40, monkeypatch)
    # The store's thread does the per-job work: it grows with the batch.
    assert many["liangxin-state_0"] > few["liangxin-state_0"] + 30 * 5, (few, many)
    # The loop's own statements: start-up, the sync and the end, about the same for both.
    assert many["loop"] <= few["loop"] + 10, (few, many)
