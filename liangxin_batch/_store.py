"""The state file: one SQLite database per output folder (`DIR/state.db`).

stdlib sqlite3 in WAL mode, called straight from the event loop: a commit costs about
15 µs here, less than a thread hop, and one connection means one writer. Every state
transition is its own committed transaction, made before anything depends on it.
Schema changes are numbered migrations, each applied in the transaction that records it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import StateError
from ._lifecycle import JobState

__all__ = ["BILLED_STATES", "MIGRATIONS", "JobRow", "StateStore", "billed_credits"]

STATE_FILE = "state.db"


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and a migration must share the transaction
    # that records it.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE jobs (
            job_id        TEXT PRIMARY KEY,
            idx           INTEGER NOT NULL,
            model         TEXT NOT NULL,
            input_json    TEXT NOT NULL,
            columns_json  TEXT NOT NULL,
            content_hash  TEXT NOT NULL,
            in_manifest   INTEGER NOT NULL DEFAULT 1,
            state         TEXT NOT NULL,
            attempt       INTEGER NOT NULL DEFAULT 0,
            task_id       TEXT,
            submitted_at  REAL,
            completed_at  REAL,
            result_urls   TEXT,
            error_code    TEXT,
            error_message TEXT,
            credits       REAL,
            cost_time     REAL,
            finished_by   TEXT,
            polls         INTEGER NOT NULL DEFAULT 0,
            updated_at    REAL NOT NULL
        );
        CREATE INDEX jobs_by_state ON jobs (state, idx);
        CREATE UNIQUE INDEX jobs_by_task ON jobs (task_id) WHERE task_id IS NOT NULL;
        CREATE TABLE attempts (
            job_id        TEXT NOT NULL,
            attempt       INTEGER NOT NULL,
            task_id       TEXT,
            outcome       TEXT NOT NULL,
            error_code    TEXT,
            error_message TEXT,
            started_at    REAL NOT NULL,
            ended_at      REAL,
            PRIMARY KEY (job_id, attempt)
        );
        CREATE TABLE events (
            id      INTEGER PRIMARY KEY AUTOINCREMENT,
            at      REAL NOT NULL,
            job_id  TEXT,
            kind    TEXT NOT NULL,
            detail  TEXT NOT NULL
        );
        CREATE TABLE files (
            job_id  TEXT NOT NULL,
            n       INTEGER NOT NULL,
            url     TEXT NOT NULL,
            path    TEXT,
            sha256  TEXT,
            size    INTEGER,
            PRIMARY KEY (job_id, n)
        );
        """,
    )


#: Append only. A state file records which of these it has had.
MIGRATIONS: Sequence[tuple[str, Callable[[sqlite3.Connection], None]]] = (
    ("001_initial", _m001_initial),
)


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    idx: int
    model: str
    input: Mapping[str, Any]
    state: JobState
    attempt: int
    task_id: str | None
    submitted_at: float | None
    completed_at: float | None
    result_urls: tuple[str, ...]
    error_code: str | None
    error_message: str | None
    credits: float | None
    polls: int
    content_hash: str
    columns: Mapping[str, str]
    cost_time: float | None = None
    finished_by: str | None = None


_JOB_COLUMNS = (
    "job_id, idx, model, input_json, state, attempt, task_id, submitted_at, completed_at, "
    "result_urls, error_code, error_message, credits, polls, content_hash, columns_json, "
    "cost_time, finished_by"
)


def _row_to_job(row: Sequence[Any]) -> JobRow:
    return JobRow(
        job_id=row[0],
        idx=row[1],
        model=row[2],
        input=json.loads(row[3]),
        state=JobState(row[4]),
        attempt=row[5],
        task_id=row[6],
        submitted_at=row[7],
        completed_at=row[8],
        result_urls=tuple(json.loads(row[9])) if row[9] else (),
        error_code=row[10],
        error_message=row[11],
        credits=row[12],
        polls=row[13],
        content_hash=row[14],
        columns=json.loads(row[15]),
        cost_time=row[16],
        finished_by=row[17],
    )


#: States whose old content must finish before --allow-changed may start a job over.
_KEEP_WHEN_CHANGED = frozenset(
    s.value
    for s in (
        JobState.SUBMITTING,
        JobState.SUBMITTED,
        JobState.SUCCEEDED,
        JobState.TIMED_OUT,
        JobState.UNKNOWN,
    )
)


#: Billed: every generation that succeeded, its files fetched or not.
BILLED_STATES = ("succeeded", "done", "download_failed")


def billed_credits(db: sqlite3.Connection) -> float:
    """Credits of the generations that succeeded (the service charged them)."""
    marks = ",".join("?" * len(BILLED_STATES))
    row = db.execute(
        f"SELECT COALESCE(SUM(credits), 0) FROM jobs WHERE state IN ({marks})", BILLED_STATES
    ).fetchone()
    return float(row[0])


class StateStore:
    """The one writer of a state file. Not thread-safe: use it from one thread (the loop)."""

    def __init__(self, path: Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = wall_clock
        self._tx_depth = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit (a taskId, say) survives power loss too, not just a killed
            # process. At a few commits per job the fsyncs cost nothing measurable.
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise StateError(f"{path}: cannot use this state file: {err}") from None

    @classmethod
    def in_dir(cls, out_dir: Path, **kw: Any) -> StateStore:
        return cls(out_dir / STATE_FILE, **kw)

    def close(self) -> None:
        self.db.close()

    # -- migrations -----------------------------------------------------------------

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, at REAL)")
        applied = {r[0] for r in self.db.execute("SELECT name FROM _migrations")}
        known = {name for name, _ in MIGRATIONS}
        if applied - known:
            newer = ", ".join(sorted(applied - known))
            raise StateError(
                f"{self.path} was written by a newer liangxin-batch (migrations {newer}); "
                "upgrade liangxin-batch to use it"
            )
        for name, step in MIGRATIONS:
            if name in applied:
                continue
            with self.transaction():
                step(self.db)
                self.db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, self._now()))

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM _migrations ORDER BY name")]

    # -- transactions ---------------------------------------------------------------

    class _Tx:
        """One transaction; nested ones join the outermost, which commits or rolls back."""

        def __init__(self, store: StateStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            if self.store._tx_depth == 0:
                self.store.db.execute("BEGIN IMMEDIATE")
            self.store._tx_depth += 1
            return self.store.db

        def __exit__(self, exc_type: object, *_: object) -> None:
            self.store._tx_depth -= 1
            if self.store._tx_depth == 0:
                self.store.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def transaction(self) -> StateStore._Tx:
        return StateStore._Tx(self)

    # -- meta -----------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    # -- jobs -----------------------------------------------------------------------

    def existing_hashes(self, job_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """content_hash and in_manifest for the given ids that already exist."""
        out: dict[str, tuple[str, int]] = {}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for job_id, h, idx in self.db.execute(
                f"SELECT job_id, content_hash, idx FROM jobs WHERE job_id IN ({marks})", chunk
            ):
                out[job_id] = (h, idx)
        return out

    def upsert_jobs(self, rows: Iterable[tuple[str, int, str, str, str, str]]) -> None:
        """Insert new jobs (job_id, idx, model, input_json, columns_json, hash) as pending;
        for known ids refresh order and columns (content changes are handled by the caller)."""
        now = self._now()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO jobs (job_id, idx, model, input_json, columns_json, content_hash,"
                " state, updated_at, in_manifest) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, 1)"
                " ON CONFLICT(job_id) DO UPDATE SET idx = excluded.idx,"
                " columns_json = excluded.columns_json, in_manifest = 1",
                [(*r, now) for r in rows],
            )

    def replace_content(
        self, job_id: str, model: str, input_json: str, content_hash: str
    ) -> tuple[int, list[str]] | None:
        """--allow-changed: the job starts over with new content (its history is kept).

        Returns the attempt it had and the paths of its files (the caller sets them aside;
        their rows are dropped here). None, and nothing changed, while the old content
        still has something live or paid for that only its state can reach: a task in
        flight or timed out (it may still finish), a result not yet downloaded, or an
        `unknown` submission a callback may still reconcile. Those finish first.
        """
        with self.transaction() as db:
            row = db.execute(
                "SELECT state, attempt FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None or row[0] in _KEEP_WHEN_CHANGED:
                return None
            paths = [
                r[0]
                for r in db.execute(
                    "SELECT path FROM files WHERE job_id = ? AND path IS NOT NULL ORDER BY n",
                    (job_id,),
                )
            ]
            db.execute("DELETE FROM files WHERE job_id = ?", (job_id,))
            db.execute(
                "UPDATE jobs SET model = ?, input_json = ?, content_hash = ?, state = 'pending',"
                " task_id = NULL, result_urls = NULL, error_code = NULL, error_message = NULL,"
                " submitted_at = NULL, completed_at = NULL, cost_time = NULL, finished_by = NULL,"
                " polls = 0, updated_at = ? WHERE job_id = ?",
                (model, input_json, content_hash, self._now(), job_id),
            )
            db.execute(
                "INSERT INTO events (at, job_id, kind, detail) VALUES (?, ?, 'note', ?)",
                (self._now(), job_id, "content changed (--allow-changed): starts over"),
            )
        return int(row[1]), paths

    def forget_manifest_membership(self) -> None:
        """Before a manifest load: every job counts as absent until the load sees it."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET in_manifest = 0")

    def get(self, job_id: str) -> JobRow | None:
        row = self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return _row_to_job(row) if row else None

    def by_task_id(self, task_id: str) -> JobRow | None:
        row = self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE task_id = ?", (task_id,)
        ).fetchone()
        return _row_to_job(row) if row else None

    def iter_jobs(
        self, states: Iterable[JobState] | None = None, *, in_manifest: bool | None = None
    ) -> Iterator[JobRow]:
        """Jobs in manifest order, streamed in pages so a million rows stay cheap."""
        where: list[str] = []
        params: list[Any] = []
        if states is not None:
            values = [s.value for s in states]
            where.append(f"state IN ({','.join('?' * len(values))})")
            params.extend(values)
        if in_manifest is not None:
            where.append("in_manifest = ?")
            params.append(int(in_manifest))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        last = -1
        while True:
            rows = self.db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs {clause}"
                f" {'AND' if clause else 'WHERE'} idx > ? ORDER BY idx LIMIT 1000",
                [*params, last],
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _row_to_job(row)
            last = rows[-1][1]

    def counts(self, *, in_manifest: bool | None = None) -> dict[str, int]:
        """Jobs per state (only those in, or out of, the manifest when asked)."""
        where = "" if in_manifest is None else f"WHERE in_manifest = {int(in_manifest)}"
        return dict(self.db.execute(f"SELECT state, COUNT(*) FROM jobs {where} GROUP BY state"))

    def removed_count(self) -> int:
        """Jobs in the state that the manifest no longer has."""
        return int(self.db.execute("SELECT COUNT(*) FROM jobs WHERE in_manifest = 0").fetchone()[0])

    # -- transitions (each one committed before returning) ---------------------------

    def update(self, job_id: str, *, event: str | None = None, **fields: Any) -> None:
        """Set columns of one job in its own transaction; optionally log an event."""
        if "state" in fields and isinstance(fields["state"], JobState):
            fields["state"] = fields["state"].value
        if "result_urls" in fields and not isinstance(fields["result_urls"], str | None):
            fields["result_urls"] = json.dumps(list(fields["result_urls"]))
        fields["updated_at"] = self._now()
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*fields.values(), job_id])
            if event:
                db.execute(
                    "INSERT INTO events (at, job_id, kind, detail) VALUES (?, ?, ?, ?)",
                    (fields["updated_at"], job_id, fields.get("state", "note"), event),
                )

    def begin_attempt(self, job_id: str, attempt: int) -> bool:
        """Record the intent to submit BEFORE the POST leaves.

        Only a `pending` job can start an attempt; False (nothing written) otherwise, so a
        job another writer already took is never sent twice.
        """
        now = self._now()
        with self.transaction() as db:
            taken = db.execute(
                "UPDATE jobs SET state = ?, attempt = ?, task_id = NULL, result_urls = NULL,"
                " error_code = NULL, error_message = NULL, updated_at = ?"
                " WHERE job_id = ? AND state = ?",
                (JobState.SUBMITTING.value, attempt, now, job_id, JobState.PENDING.value),
            ).rowcount
            if not taken:
                return False
            db.execute(
                "INSERT OR REPLACE INTO attempts (job_id, attempt, outcome, started_at)"
                " VALUES (?, ?, 'submitting', ?)",
                (job_id, attempt, now),
            )
        return True

    def end_attempt(
        self,
        job_id: str,
        attempt: int,
        outcome: str,
        *,
        task_id: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE attempts SET outcome = ?, task_id = COALESCE(?, task_id), error_code = ?,"
                " error_message = ?, ended_at = ? WHERE job_id = ? AND attempt = ?",
                (outcome, task_id, error_code, error_message, self._now(), job_id, attempt),
            )

    def record_event(self, kind: str, detail: str, job_id: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO events (at, job_id, kind, detail) VALUES (?, ?, ?, ?)",
                (self._now(), job_id, kind, detail),
            )
