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
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._run import run_batch_async
from liangxin_batch.simulator import SimConfig, create_app
from liangxin_batch.state._pg import PgConnection
from tests.runner_harness import KEY, make_jobs, records_for
from tests.virtual_time import VirtualTimeLoop

_EXECUTE = PgConnection.execute


async def run_on_sim(
    app: Any, out: Path, jobs: int, models: tuple[str, ...], settings: RunSettings, **more: Any
) -> RunSummary:
    """`jobs` jobs of `models` run into `out` against the in-process simulator `app`."""
    return await run_batch_async(
        records_for(make_jobs(jobs, models=models)),
        out_dir=out,
        catalog=default_catalog(),
        settings=settings,
        api_key=KEY,
        base_url="http://sim",
        transport=httpx.ASGITransport(app=app),
        download_transport=httpx.ASGITransport(app=app),
        **more,
    )


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
        models = ("z-image", "google/nano-banana")
        settings = RunSettings(state_url=url, report_every=0)
        summary = await run_on_sim(app, tmp_path / f"out{jobs}", jobs, models, settings)
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


def test_a_stop_during_the_intents_round_trip_sends_nothing(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the intent commits on the store's thread while the loop goes on: a
    Ctrl-C that lands meanwhile must still keep that job's createTask from leaving (the
    stop is looked at again once the intent is written), and the job goes back to
    pending, not to `unknown`."""
    from liangxin_batch.run._run import RunHandle
    from liangxin_batch.state._backends import open_state
    from liangxin_batch.state._store import StateStore
    from tests.sim_support import sim_of

    handle = RunHandle()
    loop = VirtualTimeLoop(start=1_000.0)
    app = create_app(SimConfig(api_key=KEY, seed=5), clock=loop.time)
    begin = StateStore.begin_attempt
    stopped = threading.Event()

    def ctrl_c() -> None:
        handle.interrupt()
        stopped.set()

    def begin_then_ctrl_c(self: StateStore, *args: Any, **kwargs: Any) -> bool:
        took = begin(self, *args, **kwargs)
        if not stopped.is_set():  # the first intent: Ctrl-C lands while it is written
            loop.call_soon_threadsafe(ctrl_c)
            assert stopped.wait(10)
        return took

    monkeypatch.setattr(StateStore, "begin_attempt", begin_then_ctrl_c)

    async def main() -> None:
        settings = RunSettings(state_url=pg_url, report_every=0)
        await run_on_sim(app, tmp_path / "out", 3, ("z-image",), settings, handle=handle)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert stopped.is_set()
    assert sim_of(app).ledger.create_attempts() == []
    store = open_state(tmp_path / "out", url=pg_url, readonly=True)
    try:
        assert {j.state.value for j in store.iter_jobs()} == {"pending"}
    finally:
        store.close()


@pytest.mark.slow
def test_a_turn_whose_slot_passed_during_the_intent_takes_a_new_one(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a shared limit, the slots after a turn's are other workers' (or this worker's
    other places'): an intent whose commit waited behind the store's queue past its
    slot must not send on it (the window would hold one more than the limit: the
    service's 429). It takes a new slot; nothing is sent twice, nothing refused.

    In real time (the shared limits keep the database's clock): 2 creates per 0.5 s,
    the first intent's answer a second late."""
    from liangxin_batch.state._store import StateStore
    from tests.sim_support import sim_of

    call = StateStore.call_urgent
    slowed: list[str] = []

    async def slow_first_intent(self: StateStore, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        result = await call(self, fn, *args, **kwargs)
        if getattr(fn, "__name__", "") == "begin_attempt" and not slowed:
            slowed.append(args[0])  # a database busy with other work: answered late
            await asyncio.sleep(1.0)
        return result

    monkeypatch.setattr(StateStore, "call_urgent", slow_first_intent)
    limit, window = 2, 0.5

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        config = SimConfig(
            api_key=KEY,
            seed=5,
            create_limit=limit,
            create_window=window,
            poll_limit=50,
            latency_scale=0.01,
        )
        app = create_app(config, clock=loop.time)
        settings = RunSettings(
            state_url=pg_url,
            report_every=0,
            create_limit=limit,
            create_window=window,
            poll_scale=0.01,
        )
        summary = await run_on_sim(app, tmp_path / "out", 8, ("z-image",), settings)
        assert summary.counts.get("succeeded") == 8, summary.counts
        return sim_of(app).ledger

    ledger = asyncio.run(main())
    assert slowed
    assert [e for e in ledger.create_attempts() if e.outcome == "429"] == []
    assert len(ledger.creates()) == 8 and ledger.duplicates() == {}


@pytest.mark.slow
def test_a_failure_while_a_late_turn_waits_for_its_next_slot_leaves_the_job_pending(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The late turn's job goes back to pending before the wait for a new slot: the
    shared limit's database failing there (or a kill) leaves no job `submitting` with
    nothing sent, which the next run would park as unknown."""
    from liangxin_batch.run._shared_limiter import SharedLimiter
    from liangxin_batch.state._backends import open_state
    from liangxin_batch.state._store import StateStore

    call = StateStore.call_urgent
    acquire = SharedLimiter.acquire
    slowed: list[str] = []
    answered: list[str] = []

    async def slow_first_intent(self: StateStore, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        result = await call(self, fn, *args, **kwargs)
        if getattr(fn, "__name__", "") == "begin_attempt" and not slowed:
            slowed.append(args[0])
            await asyncio.sleep(1.0)
            answered.append(args[0])
        return result

    async def failing_after_the_late_turn(self: SharedLimiter) -> float:
        if answered:  # the late intent is in: the next slot is not to be had
            raise RuntimeError("the shared limits' database went away")
        return await acquire(self)

    monkeypatch.setattr(StateStore, "call_urgent", slow_first_intent)
    monkeypatch.setattr(SharedLimiter, "acquire", failing_after_the_late_turn)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        config = SimConfig(api_key=KEY, seed=5, create_limit=2, create_window=0.5)
        app = create_app(config, clock=loop.time)
        settings = RunSettings(state_url=pg_url, report_every=0, create_limit=2, create_window=0.5)
        await run_on_sim(app, tmp_path / "out", 4, ("z-image",), settings)

    with pytest.raises(RuntimeError, match="went away"):
        asyncio.run(main())
    assert slowed
    store = open_state(tmp_path / "out", url=pg_url, readonly=True)
    try:
        states = {j.job_id: j.state.value for j in store.iter_jobs()}
    finally:
        store.close()
    assert states[slowed[0]] == "pending", states
    assert "submitting" not in states.values(), states
