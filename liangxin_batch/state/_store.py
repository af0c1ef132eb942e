"""The state file: one SQLite database per output folder (`DIR/state.db`). All SQL is here.

stdlib sqlite3 in WAL mode, called straight from the event loop: a commit costs about
15 µs here, less than a thread hop, and one connection means one writer. A job's state
changes only through `transition()`, which checks the from-state against the one table
(`_lifecycle.TRANSITIONS`) in its `WHERE` clause and writes the job row, the attempt row
and the event in one committed transaction, made before anything depends on it.
Schema changes are numbered migrations, each applied in the transaction that records it.
A state file is checked when opened (integrity, schema, the batch it belongs to), and
`status`, `report` and `export` open it read-only.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from liangxin_batch.core._states import (
    BILLED_STATES,
    KEEP_WHEN_CHANGED,
    PROBLEM_STATES,
    Event,
    JobState,
    sources_of,
    target_of,
)
from liangxin_batch.errors import DiskFullError, StateError
from liangxin_batch.state._checks import BATCH_ID_FILE, refuse_untrusted
from liangxin_batch.state._migrations import MIGRATIONS, TABLES
from liangxin_batch.state._rows import (
    FILE_COLUMNS,
    JOB_COLUMNS,
    AttemptRow,
    Credits,
    EventRow,
    FileRow,
    JobRow,
    row_to_job,
)

__all__ = [
    "MIGRATIONS",
    "AttemptRow",
    "Credits",
    "EventRow",
    "FileRow",
    "JobRow",
    "StateStore",
]

STATE_FILE = "state.db"


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


#: How an event changes `sends`, the createTask POSTs that may have created a task: the
#: intent counts one, and an answer proving that nothing was created takes it back.
_SENDS_DELTA = {
    Event.SUBMIT: 1,
    Event.NOT_CREATED: -1,
    Event.CREATE_GAVE_UP: -1,
    Event.CREATE_REFUSED: -1,
}


#: Events recorded as notes rather than under their target state (status lists the
#: states' events as problems; a retry or a restart is not one).
_NOTE_EVENTS = frozenset(
    {
        Event.SUBMIT,
        Event.RETRY,
        Event.CONTENT_CHANGED,
        Event.REPOLL,
        Event.RETRY_DOWNLOAD,
        Event.OUTPUT_MISSING,
    }
)


class TransitionRefused(StateError):
    """A job was not in a state the event may start from: nothing was written."""


class StateStore:
    """The one writer of a state file. Not thread-safe: use it from one thread (the loop).

    `readonly=True` opens it for reading only (status, report, export): safe while a
    run writes it, and nothing a reader does can change it.
    """

    def __init__(
        self,
        path: Path,
        *,
        wall_clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self._now = wall_clock
        self._tx_depth = 0
        try:
            if readonly:
                if not path.exists() or path.stat().st_size == 0:
                    raise StateError(f"no state in {path} (missing or empty)")
                self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
                self.db.execute("PRAGMA busy_timeout=10000")
                self._check_migrations()
                return
            path.parent.mkdir(parents=True, exist_ok=True)
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
        """The state of the batch in `out_dir`, checked before anything relies on it.

        Refused (StateError, nothing changed): a damaged file, a file of another batch,
        and an empty or missing state in a folder where a run already left outputs
        (a full disk or a bad copy): starting over there would pay for the batch again.
        """
        path = out_dir / STATE_FILE
        readonly = bool(kw.get("readonly"))
        refuse_untrusted(path, out_dir, readonly=readonly)
        store = cls(path, **kw)
        if not readonly:
            try:
                store._check_batch(out_dir / BATCH_ID_FILE)
            except BaseException:
                store.close()
                raise
        return store

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def reading(self) -> Iterator[StateStore]:
        """Reads whose SQLite errors (a file damaged under a reader) become StateError."""
        try:
            yield self
        except sqlite3.Error as err:
            raise StateError(f"{self.path}: cannot read: {err}") from None

    # -- checks ---------------------------------------------------------------------

    def _check_batch(self, id_file: Path) -> None:
        """state.db and DIR/batch.id name the same batch (written together on creation)."""
        mine = self.get_meta("batch_id")
        try:
            theirs = id_file.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            theirs = None
        if mine is None:
            mine = secrets.token_hex(8)
            self.set_meta({"batch_id": mine})
        if theirs is None:
            id_file.write_text(mine + "\n", encoding="utf-8")
        elif theirs != mine:
            raise StateError(
                f"{self.path} belongs to batch {mine}, but {id_file.parent} holds batch "
                f"{theirs}: was a state file copied in from another folder? Put back this "
                "folder's own state.db, or use another --out folder. Nothing was sent."
            )

    # -- migrations -----------------------------------------------------------------

    def _check_migrations(self) -> set[str]:
        try:
            applied = {r[0] for r in self.db.execute("SELECT name FROM _migrations")}
        except sqlite3.OperationalError:
            applied = set()
        known = {name for name, _ in MIGRATIONS}
        if applied - known:
            newer = ", ".join(sorted(applied - known))
            raise StateError(
                f"{self.path} was written by a newer liangxin-batch (migrations {newer}); "
                "upgrade liangxin-batch to use it"
            )
        if self.readonly and applied != known:
            raise StateError(
                f"{self.path} was written by an older liangxin-batch: run it once "
                "(`liangxin-batch run`) to bring it up to date"
            )
        return applied

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, at REAL)")
        applied = self._check_migrations()
        if applied and not self._tables() >= TABLES:
            raise StateError(
                f"{self.path} is missing tables ({', '.join(sorted(TABLES - self._tables()))}):"
                " it is damaged or not a liangxin-batch state. Restore it from a backup or "
                "use another --out folder. Nothing was sent."
            )
        for name, step in MIGRATIONS:
            if name in applied:
                continue
            with self.transaction():
                step(self.db)
                self.db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, self._now()))

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

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

        def __exit__(self, exc_type: object, exc: object, _tb: object) -> None:
            store = self.store
            store._tx_depth -= 1
            if store._tx_depth:
                return
            if exc_type is None:
                try:
                    store.db.execute("COMMIT")
                    return
                except sqlite3.OperationalError as err:
                    exc = err
            if store.db.in_transaction:  # a failed COMMIT may leave it open
                store.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                # Every write lands here: a full disk is one error, said one way.
                raise _disk_full(store.path, exc) from None
            if isinstance(exc, sqlite3.OperationalError) and exc_type is None:
                raise exc

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

    # -- jobs: manifest sync ----------------------------------------------------------

    def existing_hashes(self, job_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """content_hash and idx for the given ids that already exist."""
        out: dict[str, tuple[str, int]] = {}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i : i + 500]
            for job_id, h, idx in self.db.execute(
                f"SELECT job_id, content_hash, idx FROM jobs WHERE job_id IN ({_marks(chunk)})",
                chunk,
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
        still has something live or paid for (`KEEP_WHEN_CHANGED`): those finish first.
        """
        with self.transaction() as db:
            row = db.execute(
                "SELECT state, attempt FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            if row is None or JobState(row[0]) in KEEP_WHEN_CHANGED:
                return None
            paths = [f.path for f in self.files_of(job_id) if f.path]
            db.execute("DELETE FROM files WHERE job_id = ?", (job_id,))
            db.execute(
                "UPDATE jobs SET model = ?, input_json = ?, content_hash = ? WHERE job_id = ?",
                (model, input_json, content_hash, job_id),
            )
            self.transition(
                job_id,
                Event.CONTENT_CHANGED,
                message="content changed (--allow-changed): starts over",
                task_id=None,
                result_urls=None,
                error_code=None,
                error_message=None,
                submitted_at=None,
                completed_at=None,
                cost_time=None,
                finished_by=None,
                credits=None,
                credits_estimated=None,
                polls=0,
            )
        return int(row[1]), paths

    def forget_manifest_membership(self) -> None:
        """Before a manifest load: every job counts as absent until the load sees it."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET in_manifest = 0")

    # -- jobs: reading ----------------------------------------------------------------

    def get(self, job_id: str) -> JobRow | None:
        row = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return row_to_job(row) if row else None

    def by_task_id(self, task_id: str) -> JobRow | None:
        row = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE task_id = ?", (task_id,)
        ).fetchone()
        return row_to_job(row) if row else None

    def iter_jobs(
        self, states: Iterable[JobState] | None = None, *, in_manifest: bool | None = None
    ) -> Iterator[JobRow]:
        """Jobs in manifest order, streamed in pages.

        Pages follow the unique key (idx, job_id), so jobs that share a position (an
        edited manifest) are never skipped, and rows changed while walking are safe.
        """
        manifest = "" if in_manifest is None else f"in_manifest = {int(in_manifest)} AND "
        wanted = None if states is None else [JobState(s).value for s in dict.fromkeys(states)]
        if wanted is None:
            yield from self._walk(manifest, [])
        elif len(wanted) == 1:  # the runner's walks: one state, by its index
            yield from self._walk(f"state = ? AND {manifest}", wanted)
        else:  # reports: manifest order, filtered
            yield from self._walk(f"state IN ({_marks(wanted)}) AND {manifest}", wanted)

    def _walk(self, where: str, params: list[Any]) -> Iterator[JobRow]:
        last: tuple[int, str] = (-(2**62), "")
        while True:
            rows = self.db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE {where} (idx, job_id) > (?, ?)"
                " ORDER BY idx, job_id LIMIT 1000",
                [*params, *last],
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield row_to_job(row)
            last = (rows[-1][1], rows[-1][0])

    def job_ids(self, state: JobState, *, in_manifest: bool = True, limit: int = 50) -> list[str]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT job_id FROM jobs WHERE state = ? AND in_manifest = ?"
                " ORDER BY idx, job_id LIMIT ?",
                (state.value, int(in_manifest), limit),
            )
        ]

    def counts(self, *, in_manifest: bool | None = None) -> dict[str, int]:
        """Jobs per state (only those in, or out of, the manifest when asked)."""
        where = "" if in_manifest is None else f"WHERE in_manifest = {int(in_manifest)}"
        return dict(self.db.execute(f"SELECT state, COUNT(*) FROM jobs {where} GROUP BY state"))

    def counts_by_model(self) -> dict[str, dict[str, int]]:
        by_model: dict[str, dict[str, int]] = {}
        for model, state, n in self.db.execute(
            "SELECT model, state, COUNT(*) FROM jobs GROUP BY model, state"
        ):
            by_model.setdefault(model, {})[state] = n
        return by_model

    def removed_count(self) -> int:
        """Jobs in the state that the manifest no longer has."""
        return int(self.db.execute("SELECT COUNT(*) FROM jobs WHERE in_manifest = 0").fetchone()[0])

    def credits(self) -> Credits:
        """Credits of the generations that succeeded: charged, and estimated where the
        service did not say."""
        states = [s.value for s in BILLED_STATES]
        charged, estimated = self.db.execute(
            "SELECT COALESCE(SUM(credits), 0),"
            " COALESCE(SUM(CASE WHEN credits IS NULL THEN credits_estimated END), 0)"
            f" FROM jobs WHERE state IN ({_marks(states)})",
            states,
        ).fetchone()
        return Credits(float(charged), float(estimated))

    def oldest_in_flight(self, limit: int = 5) -> list[tuple[str, str, float | None]]:
        return list(
            self.db.execute(
                "SELECT job_id, COALESCE(task_id, ''), submitted_at FROM jobs"
                " WHERE state = 'submitted' ORDER BY submitted_at LIMIT ?",
                (limit,),
            )
        )

    def recent_problems(self, limit: int = 5) -> list[tuple[float, str | None, str, str]]:
        kinds = [s.value for s in PROBLEM_STATES] + [JobState.PENDING.value]
        return list(
            self.db.execute(
                "SELECT at, job_id, kind, detail FROM events"
                f" WHERE kind IN ({_marks(kinds)}) ORDER BY id DESC LIMIT ?",
                (*kinds, limit),
            )
        )

    def submits_since(self, wall_time: float) -> list[float]:
        """When createTask intents were committed since `wall_time` (for the limiter)."""
        return [
            r[0]
            for r in self.db.execute(
                "SELECT started_at FROM attempts WHERE started_at >= ? ORDER BY started_at",
                (wall_time,),
            )
        ]

    def attempts(self, job_id: str | None = None) -> list[AttemptRow]:
        """Every createTask attempt (of one job), in order."""
        where, params = ("WHERE job_id = ?", (job_id,)) if job_id else ("", ())
        return [
            AttemptRow(*r)
            for r in self.db.execute(
                "SELECT job_id, attempt, task_id, outcome, error_code, error_message"
                f" FROM attempts {where} ORDER BY job_id, attempt",
                params,
            )
        ]

    def events(self, job_id: str | None = None) -> list[EventRow]:
        """The history, oldest first (of one job)."""
        where, params = ("WHERE job_id = ?", (job_id,)) if job_id else ("", ())
        return [
            EventRow(*r)
            for r in self.db.execute(
                f"SELECT at, job_id, kind, detail FROM events {where} ORDER BY id", params
            )
        ]

    def all_files(self) -> list[FileRow]:
        """Every recorded file, by job and number."""
        return [
            FileRow(*r)
            for r in self.db.execute(f"SELECT {FILE_COLUMNS} FROM files ORDER BY job_id, n")
        ]

    def transitions_taken(self) -> Iterator[tuple[str, str, str, str]]:
        """(job_id, from-state, to-state, event) of every transition, oldest first."""
        yield from self.db.execute(
            "SELECT job_id, from_state, to_state, event FROM events"
            " WHERE event IS NOT NULL ORDER BY id"
        )

    def finished_by_counts(self) -> dict[str, int]:
        return dict(
            self.db.execute(
                "SELECT finished_by, COUNT(*) FROM jobs WHERE finished_by IS NOT NULL"
                " GROUP BY finished_by"
            ).fetchall()
        )

    def column_names(self) -> Iterator[str]:
        """Manifest column names of every job in the manifest, in manifest order."""
        for (text,) in self.db.execute(
            "SELECT columns_json FROM jobs WHERE in_manifest = 1 ORDER BY idx, job_id"
        ):
            yield from json.loads(text)

    # -- files ------------------------------------------------------------------------

    def files_of(self, job_id: str) -> list[FileRow]:
        return [
            FileRow(*r)
            for r in self.db.execute(
                f"SELECT {FILE_COLUMNS} FROM files WHERE job_id = ? ORDER BY n", (job_id,)
            )
        ]

    def files_for(self, job_ids: Sequence[str]) -> dict[str, list[FileRow]]:
        found: dict[str, list[FileRow]] = {}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i : i + 500]
            for r in self.db.execute(
                f"SELECT {FILE_COLUMNS} FROM files WHERE job_id IN ({_marks(chunk)})"
                " ORDER BY job_id, n",
                chunk,
            ):
                found.setdefault(r[0], []).append(FileRow(*r))
        return found

    def claimed_paths(self) -> Iterator[tuple[str, str, int]]:
        """(path, job_id, n) of every file that has one."""
        yield from self.db.execute("SELECT path, job_id, n FROM files WHERE path IS NOT NULL")

    def record_file(self, row: FileRow) -> None:
        with self.transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO files ({FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.job_id, row.n, row.url, row.path, row.sha256, row.size, row.mtime_ns),
            )

    def finish_download(self, job_id: str, files: int, *, result_urls: Sequence[str]) -> bool:
        """Every file of the job is recorded: the job is `done` (an earlier error note
        cleared) and rows of an earlier task with more files go, together; False and
        nothing written when the job is no longer `succeeded`."""
        with self.transaction() as db:
            moved = self.transition(
                job_id,
                Event.DOWNLOADED,
                message=f"{files} file(s) downloaded and verified",
                result_urls=result_urls,
                error_code=None,
                error_message=None,
            )
            if moved:
                db.execute("DELETE FROM files WHERE job_id = ? AND n >= ?", (job_id, files))
            return moved

    def set_file_mtime(self, job_id: str, n: int, mtime_ns: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE files SET mtime_ns = ? WHERE job_id = ? AND n = ?", (mtime_ns, job_id, n)
            )

    # -- transitions (each one committed before returning) ---------------------------

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
        """Move one job by `event`, only from a state the table allows for it.

        In ONE transaction: the job row (its new state and `fields`), the attempt row
        (when `attempt` is given: `outcome`, taskId and error), and an event. Returns
        False, with nothing written, when the job is not in a source state of `event`
        (another writer moved it first). A taskId another job already holds raises
        TransitionRefused, with nothing written.
        """
        if self.readonly:
            raise StateError(f"{self.path} is open read-only")
        if "state" in fields:
            raise ValueError("a job's state changes only by its event")
        target = target_of(event)
        sources = [s.value for s in sources_of(event)]
        if event is Event.SUBMIT:
            fields["attempt"] = attempt
        if "result_urls" in fields and not isinstance(fields["result_urls"], str | None):
            fields["result_urls"] = json.dumps(list(fields["result_urls"]))
        now = self._now()
        fields["updated_at"] = now
        sets = ", ".join(f"{k} = ?" for k in fields)
        sends = _SENDS_DELTA.get(event)
        if sends:
            sets += f", sends = MAX(0, sends + {sends})"
        try:
            with self.transaction() as db:  # BEGIN IMMEDIATE: nobody moves it meanwhile
                row = db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
                if row is None or row[0] not in sources:
                    return False
                db.execute(
                    f"UPDATE jobs SET state = ?, {sets} WHERE job_id = ? AND state = ?",
                    [target.value, *fields.values(), job_id, row[0]],
                )
                if attempt is not None:
                    self._write_attempt(db, job_id, attempt, event, outcome or target.value, fields)
                db.execute(
                    "INSERT INTO events (at, job_id, kind, detail, event, from_state, to_state)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        now,
                        job_id,
                        "note" if event in _NOTE_EVENTS else target.value,
                        message or event.value,
                        event.value,
                        row[0],
                        target.value,
                    ),
                )
        except sqlite3.IntegrityError as err:
            raise TransitionRefused(f"{job_id}: {event.value} refused: {err}") from None
        return True

    def _write_attempt(
        self,
        db: sqlite3.Connection,
        job_id: str,
        attempt: int,
        event: Event,
        outcome: str,
        fields: Mapping[str, Any],
    ) -> None:
        now = fields["updated_at"]
        if event is Event.SUBMIT:
            db.execute(
                "INSERT OR REPLACE INTO attempts (job_id, attempt, outcome, started_at)"
                " VALUES (?, ?, ?, ?)",
                (job_id, attempt, outcome, now),
            )
            return
        db.execute(
            "UPDATE attempts SET outcome = ?, task_id = COALESCE(?, task_id), error_code = ?,"
            " error_message = ?, ended_at = ? WHERE job_id = ? AND attempt = ?",
            (
                outcome,
                fields.get("task_id"),
                fields.get("error_code"),
                fields.get("error_message"),
                now,
                job_id,
                attempt,
            ),
        )

    def update(self, job_id: str, **fields: Any) -> None:
        """Set columns other than the state (poll counts, say) of one job."""
        if "state" in fields:
            raise ValueError("a job's state changes only through transition()")
        fields["updated_at"] = self._now()
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*fields.values(), job_id])

    def begin_attempt(self, job_id: str, attempt: int) -> bool:
        """Record the intent to submit BEFORE the POST leaves.

        Only a `pending` job can start an attempt; False (nothing written) otherwise, so a
        job another writer already took is never sent twice.
        """
        return self.transition(
            job_id,
            Event.SUBMIT,
            attempt=attempt,
            outcome="submitting",
            task_id=None,
            result_urls=None,
            error_code=None,
            error_message=None,
        )

    def record_event(self, kind: str, detail: str, job_id: str | None = None) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO events (at, job_id, kind, detail) VALUES (?, ?, ?, ?)",
                (self._now(), job_id, kind, detail),
            )


def _disk_full(path: Path, err: sqlite3.OperationalError) -> DiskFullError:
    return DiskFullError(
        f"the disk under {path.parent} is full ({err}): free some space, then run the "
        "same command again to continue (everything committed so far is kept)"
    )
