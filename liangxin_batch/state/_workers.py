"""Several workers on one batch: leases and claims (migration 014). All their SQL is here.

A worker (a `run` process sharing a PostgreSQL state) registers a row in `workers` and
renews its lease (`lease_until`) every third of the lease time. It holds the jobs whose
`jobs.worker` names it: it claims free ones in small batches (`claim`: `FOR UPDATE SKIP
LOCKED`, so two workers never take the same job and never wait on each other), and it
may start a createTask only for a job it holds while its lease is current (the store's
`transition` checks both in the transaction of the intent, `StateStore.holder`).

A worker whose lease has run out is dead to the others: the first to look ends it
(`expire_workers`), parks its interrupted submits as `unknown` (a crash's money rule:
the task may exist) and frees its jobs, whose tasks the others then claim and poll to
the end. A worker that finds its own row ended (`renew` says False) has lost its jobs
and must stop working them at once.

Leases are measured on the workers' own wall clocks: machines that share a batch keep
them within a second or two of each other (NTP), well inside a lease (default 60 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from liangxin_batch.core._states import Event, JobState
from liangxin_batch.state._db import Connection, dialect
from liangxin_batch.state._migrations import ALIVE_WORKER_SQL
from liangxin_batch.state._queries import marks
from liangxin_batch.state._rows import JOB_COLUMNS, JobRow, row_to_job
from liangxin_batch.state._tx import Transaction

__all__ = ["Expired", "WorkerStore"]


class Expired(NamedTuple):
    """A worker found dead, and what became of its jobs."""

    worker: str
    parked_unknown: int  # its submits that may have reached the service
    freed: int  # its other jobs, free for the others to claim


#: Row locks: the claim skips rows another worker is claiming; SQLite has one writer.
_SKIP_LOCKED = {"sqlite": "", "postgres": " FOR UPDATE SKIP LOCKED"}
#: Serialises the workers' ends: the last one to end sees no other alive.
_END_LOCK = {"sqlite": "", "postgres": "SELECT pg_advisory_xact_lock(hashtext('lx-workers-end'))"}


class WorkerStore:
    """Mixed into StateStore: the worker rows and the jobs' holders."""

    db: Connection
    _now: Callable[[], float]
    #: The worker this connection works as (None: the only one, no leases checked):
    #: set once it starts working (a registered worker may still be syncing).
    holder: str | None = None

    def transaction(self, *, durable: bool = True) -> Transaction:
        raise NotImplementedError  # StateStore's

    def transition(
        self,
        job_id: str,
        event: Event,
        *,
        message: str | None = None,
        attempt: int | None = None,
        outcome: str | None = None,
        **fields: Any,
    ) -> bool:
        raise NotImplementedError  # StateStore's

    @contextlib.contextmanager
    def batch_lock(self, name: str, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """One holder at a time among the batch's workers (PostgreSQL: a session
        advisory lock on the schema and `name`); SQLite has one writer anyway.
        `on_wait` is called once before waiting when another worker holds it (a sync of
        a million rows holds it for minutes: the user is told why nothing moves)."""
        if dialect(self.db) != "postgres":
            yield
            return
        key = "hashtext(current_schema() || ?)"
        got = self.db.execute(f"SELECT pg_try_advisory_lock({key})", (":" + name,)).fetchone()
        if not got[0]:
            if on_wait is not None:
                on_wait()
            self.db.execute(f"SELECT pg_advisory_lock({key})", (":" + name,))
        try:
            yield
        finally:
            self.db.execute(f"SELECT pg_advisory_unlock({key})", (":" + name,))

    def register_worker(self, worker: str, *, host: str, pid: int, lease: float) -> None:
        now = self._now()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO workers (id, host, pid, started_at, seen_at, lease_until)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (worker, host, pid, now, now, now + lease),
            )

    def renew(self, worker: str, lease: float) -> bool:
        """Extend the lease; False when another worker has ended this one (its jobs are
        no longer its own)."""
        now = self._now()
        with self.transaction(durable=False) as db:
            cur = db.execute(
                "UPDATE workers SET seen_at = ?, lease_until = ? WHERE id = ? AND ended_at IS NULL",
                (now, now + lease, worker),
            )
            return cur.rowcount == 1

    def holds(self, db: Connection) -> bool:
        """Inside a transaction, before the job's row is read: may this store's holder
        start a createTask now? Alive, with at least half its lease left (a POST takes
        a while; renewals come every third of the lease). True without a holder.

        Locks are taken in one order everywhere, the worker's row then its jobs' (here,
        `expire_workers`, `release`): on PostgreSQL this row is share-locked until the
        transaction ends, so a concurrent expiry of this worker waits, or is waited for."""
        if self.holder is None:
            return True
        lock = " FOR SHARE" if dialect(db) == "postgres" else ""
        row = db.execute(
            f"SELECT seen_at, lease_until FROM workers WHERE id = ? AND ended_at IS NULL{lock}",
            (self.holder,),
        ).fetchone()
        if row is None:
            return False
        seen, until = float(row[0]), float(row[1])
        return until - self._now() >= (until - seen) / 2

    def expire_workers(self) -> list[Expired]:
        """End every worker whose lease has run out: its `submitting` jobs become
        `unknown` (the POST may have reached the service), and all its jobs are freed."""
        now = self._now()
        found: list[Expired] = []
        dead = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM workers WHERE ended_at IS NULL AND lease_until < ?", (now,)
            )
        ]
        for worker in dead:
            with self.transaction() as db:
                ended = db.execute(
                    "UPDATE workers SET ended_at = ?, ended_how = 'lease expired'"
                    " WHERE id = ? AND ended_at IS NULL AND lease_until < ?",
                    (now, worker, now),
                ).rowcount
                if not ended:  # renewed meanwhile, or another worker ended it first
                    continue
                parked = self._park_submitting(db, worker, "died during createTask")
                freed = db.execute(
                    "UPDATE jobs SET worker = NULL WHERE worker = ?", (worker,)
                ).rowcount
                found.append(Expired(worker, parked, freed - parked))
        return found

    def _park_submitting(self, db: Connection, worker: str, what: str) -> int:
        """The worker's `submitting` jobs become `unknown`: their POST may have reached
        the service (the rule for a crash: never sent again without the user's say)."""
        submitting = [
            r[0]
            for r in db.execute(
                "SELECT job_id FROM jobs WHERE worker = ? AND state = ?",
                (worker, JobState.SUBMITTING.value),
            )
        ]
        for job_id in submitting:
            self.transition(
                job_id,
                Event.INTERRUPTED_SUBMIT,
                message=f"worker {worker} {what}: parked as unknown",
                error_message="its worker ended while submitting; the task may exist",
            )
        return len(submitting)

    def claim(self, worker: str, states: Sequence[JobState], limit: int) -> list[JobRow]:
        """Take up to `limit` free jobs of the manifest in these states, in manifest
        order, for `worker` (nothing while it is not alive); their rows."""
        if limit <= 0:
            return []
        values = [s.value for s in states]
        with self.transaction(durable=False) as db:  # a lost claim is claimed again
            if self.holder != worker or not self.holds(db):
                return []
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT job_id FROM jobs WHERE worker IS NULL AND in_manifest = 1"
                    f" AND state IN ({marks(values)}) ORDER BY state, idx, job_id LIMIT ?"
                    f"{_SKIP_LOCKED[dialect(db)]}",
                    (*values, limit),
                )
            ]
            if not ids:
                return []
            db.execute(f"UPDATE jobs SET worker = ? WHERE job_id IN ({marks(ids)})", (worker, *ids))
            rows = db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id IN ({marks(ids)})", ids
            ).fetchall()
        return sorted((row_to_job(r) for r in rows), key=lambda j: (j.idx, j.job_id))

    def release(self, worker: str, *, how: str) -> int:
        """`worker` ends: its jobs are freed and its row ended. Returns how many other
        workers are still alive (0: this is the last, which writes the reports)."""
        now = self._now()
        with self.transaction() as db:
            lock = _END_LOCK[dialect(db)]
            if lock:
                db.execute(lock)
            db.execute(  # the worker's row first, then its jobs (see `holds`)
                "UPDATE workers SET ended_at = ?, ended_how = ? WHERE id = ? AND ended_at IS NULL",
                (now, how, worker),
            )
            self._park_submitting(db, worker, "ended during createTask")
            db.execute("UPDATE jobs SET worker = NULL WHERE worker = ?", (worker,))
            # A worker past its lease is not at work, ended or not (a SIGKILL no one
            # has noticed yet): it must not keep the last one from writing the reports.
            (alive,) = db.execute(
                f"SELECT COUNT(*) FROM workers WHERE {ALIVE_WORKER_SQL} AND id <> ?",
                (now, worker),
            ).fetchone()
        self.holder = None
        return int(alive)

    def record_created(
        self, job_id: str, attempt: int, task_id: str, *, submitted_at: float
    ) -> bool:
        """The taskId of the job's createTask, recorded: `submitting` -> `submitted`; or,
        when its worker's lease ran out while the POST was out and another worker parked
        the job `unknown`, the same attempt reconciled with its task (it was paid for).
        False (nothing written) when the job holds another attempt."""
        fields: dict[str, Any] = {
            "task_id": task_id,
            "submitted_at": submitted_at,
            "error_code": None,
        }
        if self.transition(
            job_id,
            Event.CREATED,
            message=f"submitted as task {task_id}",
            attempt=attempt,
            error_message=None,
            **fields,
        ):
            return True
        row = self.db.execute(
            "SELECT state, attempt FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        if row is None or (row[0], int(row[1])) != (JobState.UNKNOWN.value, attempt):
            return False
        return self.transition(
            job_id,
            Event.RECONCILED,
            message=f"task {task_id} answered after its worker's lease ran out: recorded",
            attempt=attempt,
            error_message=None,
            **fields,
        )

    def reserve_stem(self, stem: str, job_id: str, n: int) -> bool:
        """Take an output name for file `n` of `job_id` across all workers; False when
        another file has it."""
        with self.transaction(durable=False) as db:  # lost in a crash: taken again
            db.execute(
                "INSERT OR IGNORE INTO stems (stem, job_id, n) VALUES (?, ?, ?)", (stem, job_id, n)
            )
            row = db.execute("SELECT job_id, n FROM stems WHERE stem = ?", (stem,)).fetchone()
        return (row[0], int(row[1])) == (job_id, n)

    def live_workers(self, *, besides: str | None = None) -> list[tuple[str, str, int, float]]:
        """(id, host, pid, lease_until) of the workers not ended, oldest first."""
        rows = self.db.execute(
            "SELECT id, host, pid, lease_until FROM workers WHERE ended_at IS NULL"
            " AND id <> ? ORDER BY started_at",
            (besides or "",),
        ).fetchall()
        return [(r[0], r[1], int(r[2]), float(r[3])) for r in rows]

    def held_by_others(self, worker: str) -> int:
        """Jobs of the manifest held by live workers other than `worker`, not finished
        (what an idle worker waits on: if one of them dies, its jobs come free)."""
        (n,) = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE worker IS NOT NULL AND worker <> ?"
            " AND state IN (?, ?, ?, ?)",
            (
                worker,
                JobState.PENDING.value,
                JobState.SUBMITTING.value,
                JobState.SUBMITTED.value,
                JobState.SUCCEEDED.value,
            ),
        ).fetchone()
        return int(n)
