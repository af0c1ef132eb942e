"""Workers of one batch in a shared PostgreSQL state (issue 18): claims, leases, the end
of a dead worker. A real server; each worker its own connection, as its own process
would have; leases measured on an injected clock."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liangxin_batch.core._states import Event, JobState
from liangxin_batch.errors import StateError
from liangxin_batch.state import _migrations
from liangxin_batch.state._backends import open_state
from liangxin_batch.state._db import Connection
from liangxin_batch.state._store import StateStore
from tests import cli_support
from tests.state_support import drive

LEASE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def rows(n: int) -> list[tuple[str, int, str, str, str, str]]:
    return [
        (f"j{i:04d}", i, "z-image", json.dumps({"prompt": f"p{i}"}), "{}", f"h{i}")
        for i in range(n)
    ]


@pytest.fixture
def batch(tmp_path: Path, pg_url: str) -> Iterator[tuple[Path, str, Clock]]:
    clock = Clock()
    with contextlib.closing(open_state(tmp_path, url=pg_url, wall_clock=clock)) as first:
        first.upsert_jobs(rows(40))
    yield tmp_path, pg_url, clock


def worker(batch: tuple[Path, str, Clock], name: str) -> StateStore:
    folder, url, clock = batch
    store = open_state(folder, url=url, wall_clock=clock)
    store.register_worker(name, host="h", pid=1, lease=LEASE)
    store.holder = name
    return store


def test_claims_are_disjoint_and_in_manifest_order(batch: tuple[Path, str, Clock]) -> None:
    a, b = worker(batch, "a"), worker(batch, "b")
    with contextlib.closing(a), contextlib.closing(b):
        first = a.claim("a", [JobState.PENDING], 5)
        second = b.claim("b", [JobState.PENDING], 5)
        assert [j.job_id for j in first] == [f"j{i:04d}" for i in range(5)]
        assert [j.job_id for j in second] == [f"j{i:04d}" for i in range(5, 10)]


def test_concurrent_claims_never_take_a_job_twice(batch: tuple[Path, str, Clock]) -> None:
    stores = [worker(batch, f"w{i}") for i in range(4)]
    taken: dict[str, list[str]] = {f"w{i}": [] for i in range(4)}

    def work(i: int) -> None:
        while got := stores[i].claim(f"w{i}", [JobState.PENDING], 3):
            taken[f"w{i}"] += [j.job_id for j in got]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    every = [job for jobs in taken.values() for job in jobs]
    assert sorted(every) == [f"j{i:04d}" for i in range(40)]  # each exactly once


def test_a_worker_submits_only_what_it_holds_within_its_lease(
    batch: tuple[Path, str, Clock],
) -> None:
    _, _, clock = batch
    a, b = worker(batch, "a"), worker(batch, "b")
    with contextlib.closing(a), contextlib.closing(b):
        (mine,) = a.claim("a", [JobState.PENDING], 1)
        assert not b.begin_attempt(mine.job_id, 1), "another worker's job"
        assert not a.begin_attempt("j0039", 1), "a free job, not claimed"
        assert a.begin_attempt(mine.job_id, 1)
        (next_one,) = a.claim("a", [JobState.PENDING], 1)
        clock.now += LEASE + 1  # a's lease ran out without a renewal
        assert not a.begin_attempt(next_one.job_id, 1)
        assert a.claim("a", [JobState.PENDING], 1) == []


def test_a_dead_workers_submits_become_unknown_and_its_jobs_free(
    batch: tuple[Path, str, Clock],
) -> None:
    _, _, clock = batch
    a, b = worker(batch, "a"), worker(batch, "b")
    with contextlib.closing(a), contextlib.closing(b):
        held = a.claim("a", [JobState.PENDING], 3)
        assert a.begin_attempt(held[0].job_id, 1)  # then the POST, then SIGKILL
        assert a.begin_attempt(held[1].job_id, 1)
        drive(a, held[1].job_id, JobState.SUBMITTED, task_id="t-1")
        clock.now += LEASE / 2
        assert b.renew("b", LEASE)
        assert b.expire_workers() == [], "a's lease has not run out yet"
        clock.now += LEASE / 2 + 1
        assert b.renew("b", LEASE)
        (gone,) = b.expire_workers()
        assert (gone.worker, gone.parked_unknown, gone.freed) == ("a", 1, 2)
        assert b.get(held[0].job_id).state is JobState.UNKNOWN  # type: ignore[union-attr]
        assert not a.renew("a", LEASE), "a finds it was ended"
        adopted = b.claim("b", [JobState.SUBMITTED], 10)
        assert [(j.job_id, j.task_id) for j in adopted] == [(held[1].job_id, "t-1")]
        assert [j.job_id for j in b.claim("b", [JobState.PENDING], 1)] == [held[2].job_id]
        assert b.live_workers() == [("b", "h", 1, clock.now + LEASE)]


def test_the_last_worker_to_end_knows_it(batch: tuple[Path, str, Clock]) -> None:
    a, b = worker(batch, "a"), worker(batch, "b")
    with contextlib.closing(a), contextlib.closing(b):
        a.claim("a", [JobState.PENDING], 2)
        assert b.held_by_others("b") == 2
        assert a.release("a", how="finished") == 1
        assert b.held_by_others("b") == 0
        assert b.release("b", how="finished") == 0
        assert a.transition("j0000", Event.SUBMIT, attempt=1), "no holder: no lease check"


def test_a_task_created_after_the_lease_ran_out_is_still_recorded(
    batch: tuple[Path, str, Clock],
) -> None:
    """The POST was out when another worker parked the job unknown: the taskId that
    comes back is the job's task (paid for), recorded, never dropped."""
    _, _, clock = batch
    a, b = worker(batch, "a"), worker(batch, "b")
    with contextlib.closing(a), contextlib.closing(b):
        (job,) = a.claim("a", [JobState.PENDING], 1)
        assert a.begin_attempt(job.job_id, 1)
        clock.now += LEASE + 1  # a stalls past its lease, its POST in flight
        assert b.renew("b", LEASE)
        assert [e.parked_unknown for e in b.expire_workers()] == [1]
        assert a.record_created(job.job_id, 1, "t-late", submitted_at=clock.now)
        found = a.get(job.job_id)
        assert found is not None
        assert (found.state, found.task_id, found.attempt) == (JobState.SUBMITTED, "t-late", 1)
        assert not a.record_created(job.job_id, 2, "t-other", submitted_at=clock.now)


def test_a_submit_needs_half_a_lease_left(batch: tuple[Path, str, Clock]) -> None:
    """A POST may take a while: it starts only with time to spare before the lease
    runs out (renewals come every third of it)."""
    _, _, clock = batch
    a = worker(batch, "a")
    with contextlib.closing(a):
        first, second = a.claim("a", [JobState.PENDING], 2)
        clock.now += LEASE * 0.4
        assert a.begin_attempt(first.job_id, 1)
        clock.now += LEASE * 0.2  # 40% left
        assert not a.begin_attempt(second.job_id, 1)
        assert a.renew("a", LEASE)
        assert a.begin_attempt(second.job_id, 1)


def test_a_submit_and_the_end_of_its_worker_do_not_deadlock(
    batch: tuple[Path, str, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A's intent and B's expiry of A, interleaved: one lock order (the worker's row,
    then its jobs'), so one waits for the other and neither is aborted."""
    _, _, clock = batch
    a, b = worker(batch, "a"), worker(batch, "b")
    a.claim("a", [JobState.PENDING], 3)
    clock.now += LEASE * 0.45
    in_a, b_done = threading.Event(), threading.Event()
    real_holds = StateStore.holds

    def holds(self: StateStore, db: Connection) -> bool:
        if self is a:
            in_a.set()
            b_done.wait(1.0)  # B gets its locks while A is inside its transaction
        return real_holds(self, db)

    monkeypatch.setattr(StateStore, "holds", holds)
    out: dict[str, object] = {}

    def run_a() -> None:
        try:
            out["a"] = a.begin_attempt("j0000", 1)
        except Exception as err:  # reported below
            out["a"] = err

    def run_b() -> None:
        in_a.wait(5)
        clock.now += LEASE  # now a's lease has run out (and b's renewal keeps b alive)
        b.renew("b", LEASE)
        try:
            out["b"] = [e.worker for e in b.expire_workers()]
        except Exception as err:  # reported below
            out["b"] = err
        b_done.set()

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()
    assert out == {"a": False, "b": ["a"]} or out == {"a": True, "b": ["a"]}, out


def test_the_last_to_end_does_not_wait_on_a_dead_worker(batch: tuple[Path, str, Clock]) -> None:
    """A SIGKILLed worker holding nothing is not 'still at work': the survivor that ends
    last writes the reports."""
    _, _, clock = batch
    a, b = worker(batch, "a"), worker(batch, "b")
    with contextlib.closing(a), contextlib.closing(b):
        clock.now += LEASE + 1  # a died without a word
        assert b.renew("b", LEASE)
        assert b.release("b", how="finished") == 0


class FlakyLeases:
    """A worker's side of the state whose renewals fail now and then (a restarting
    database), then say the worker was ended."""

    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.renewals = 0

    def renew(self, worker: str, lease: float) -> bool:
        self.renewals += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)

    def expire_workers(self) -> list[object]:
        return []

    def claim(self, worker: str, states: object, limit: int) -> list[object]:
        return []

    async def call(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)  # as SQLite's store: inline


def test_the_heartbeat_outlives_a_failed_renewal_and_stops_on_a_lost_lease() -> None:
    import sqlite3

    from liangxin_batch.core._settings import RunSettings
    from liangxin_batch.errors import WorkerLostError
    from liangxin_batch.run._control import Interrupt, LoopClock, RunControl
    from liangxin_batch.run._progress import NullObserver
    from liangxin_batch.run._worker import Worker
    from tests.virtual_time import run_virtual

    leases = FlakyLeases([True, sqlite3.OperationalError("server restarting"), True, False])

    async def main() -> RunControl:
        control = RunControl(settings=RunSettings(), observer=NullObserver(), interrupt=Interrupt())
        worker = Worker(
            leases,  # type: ignore[arg-type]
            lease=30.0,
            claim_size=5,
            clock=LoopClock(),
            observer=NullObserver(),
        )
        await worker.heartbeat(control)
        return control

    control = run_virtual(main)
    assert leases.renewals == 4, "the failed renewal was tried again at the next beat"
    assert isinstance(control.failure, WorkerLostError)
    assert control.downloads_halted and control.interrupted


def test_a_worker_waiting_for_anothers_sync_is_told_then_goes_on(
    batch: tuple[Path, str, Clock],
) -> None:
    """The sync's lock: taken at once when free (nothing said); held by another worker,
    the waiter is told once why nothing moves, and goes on when it is let go."""
    a, b = worker(batch, "a"), worker(batch, "b")
    told: list[str] = []
    entered = threading.Event()
    with contextlib.closing(a), contextlib.closing(b):
        with a.batch_lock("sync", on_wait=lambda: told.append("a")):
            assert told == []

            def wait_for_it() -> None:
                with b.batch_lock("sync", on_wait=lambda: told.append("b")):
                    entered.set()

            waiter = threading.Thread(target=wait_for_it)
            waiter.start()
            # Told before it waits: once told, it is blocked on the lock a holds.
            cli_support.wait_for(lambda: bool(told), "the waiter told")
            assert told == ["b"]
            assert not entered.is_set()
        waiter.join(timeout=10)
        assert entered.is_set() and told == ["b"]
        with a.batch_lock("sync", on_wait=lambda: told.append("again")):
            assert told == ["b"], "free again: taken at once"
        # Each session let go of what it took, however it took it.
        held = a.db.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert held.fetchone()[0] == 0


def test_a_newer_version_does_not_migrate_under_running_workers(
    batch: tuple[Path, str, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration changes what the workers already running read and write: with one
    pending, a newer version refuses while a worker's lease holds (nothing migrated),
    and migrates once that worker is dead or ended."""
    folder, url, clock = batch
    running = worker(batch, "older")
    next_step = ("999_next", lambda db: db.execute("CREATE TABLE next_thing (x INTEGER)"))
    monkeypatch.setattr(_migrations, "MIGRATIONS", (*_migrations.MIGRATIONS, next_step))
    with contextlib.closing(running):
        with pytest.raises(StateError) as caught:
            open_state(folder, url=url, wall_clock=clock)
        said = str(caught.value)
        assert "999_next" in said and "h (pid 1)" in said and "Nothing was sent" in said
        applied = {r[0] for r in running.db.execute("SELECT name FROM _migrations")}
        assert "999_next" not in applied
        clock.now += LEASE + 1  # its lease ran out: it is dead
        open_state(folder, url=url, wall_clock=clock).close()
        applied = {r[0] for r in running.db.execute("SELECT name FROM _migrations")}
        assert "999_next" in applied
