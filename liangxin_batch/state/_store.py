"""The state: one SQLite database per output folder (`DIR/state.db`), or a batch's schema
in PostgreSQL (`_backends`). All SQL is here.

stdlib sqlite3 in WAL mode, called straight from the event loop: a commit costs about
15 µs here, less than a thread hop, and one connection means one writer. PostgreSQL's
round trips are made on the store's own thread (`_calls`). A job's state
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
    KEEP_WHEN_CHANGED,
    REDERIVED_EVENTS,
    Event,
    JobState,
    sources_of,
    target_of,
)
from liangxin_batch.errors import StateError
from liangxin_batch.state._calls import OffLoopCalls
from liangxin_batch.state._checks import BATCH_ID_FILE, read_only_uri, refuse_untrusted
from liangxin_batch.state._db import Connection, dialect
from liangxin_batch.state._local_files import LocalFileStore
from liangxin_batch.state._migrations import (
    MIGRATIONS,
    applied_migrations,
    check_migrations,
    migrate,
)
from liangxin_batch.state._previews import PreviewStore, PreviewTodo, PreviewUpdate
from liangxin_batch.state._provenance import ProvenanceStore
from liangxin_batch.state._queries import StoreQueries, marks
from liangxin_batch.state._rows import (
    FILE_COLUMNS,
    AttemptRow,
    Credits,
    EventRow,
    FileRow,
    JobRow,
    ReportFile,
    ReportJob,
)
from liangxin_batch.state._sessions import SESSIONS_KEY, SessionTimes, begun, ended, times
from liangxin_batch.state._tx import Transaction
from liangxin_batch.state._uploads import UploadStore
from liangxin_batch.state._workers import WorkerStore

__all__ = [
    "MIGRATIONS",
    "AttemptRow",
    "Credits",
    "EventRow",
    "FileRow",
    "JobRow",
    "PreviewTodo",
    "PreviewUpdate",
    "ReportFile",
    "ReportJob",
    "SessionTimes",
    "StateStore",
]

STATE_FILE = "state.db"


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


#: The job row a transition reads stays as read until its COMMIT (see `transition`).
_LOCK_ROW = {"sqlite": "", "postgres": " FOR UPDATE"}
#: An upsert of a file row sets every column, as a replacement of the row would.
_REPLACE_FILE = ", ".join(
    f"{c} = excluded.{c}" for c in [*FILE_COLUMNS.split(", ")[2:], "path_key"]
)


class TransitionRefused(StateError):
    """A job was not in a state the event may start from: nothing was written."""


class StateStore(
    OffLoopCalls,
    UploadStore,
    LocalFileStore,
    PreviewStore,
    ProvenanceStore,
    WorkerStore,
    StoreQueries,
):
    """The one writer of a state file. Used from the event loop; on PostgreSQL the
    run's per-job calls go through `call`, on the store's own thread (`_calls`).

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
        self.path: Path | None = path
        self.where = str(path)
        self.readonly = readonly
        self._now = wall_clock
        try:
            if readonly:
                if not path.exists() or path.stat().st_size == 0:
                    raise StateError(f"no state in {path} (missing or empty)")
                self.db: Connection = sqlite3.connect(read_only_uri(path), uri=True, timeout=10.0)
                self.db.execute("PRAGMA busy_timeout=10000")
                check_migrations(self.db, path, readonly=True)
                self._tx = Transaction(self.db, self.where, disk=path.parent)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            # The synchronous level is set per transaction (FULL unless bookkeeping): _tx.
            self.db.execute("PRAGMA busy_timeout=10000")
            self._tx = Transaction(self.db, self.where, disk=path.parent)
            migrate(self.db, path, self._tx, now=self._now)
        except sqlite3.DatabaseError as err:
            raise StateError(f"{path}: cannot use this state file: {err}") from None

    @classmethod
    def on_connection(
        cls,
        db: Connection,
        where: str,
        *,
        wall_clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> StateStore:
        """The store over an open connection of another backend (`_backends`), its
        schema already migrated by the caller (under the lock that keeps two workers
        from migrating at once); `where` names it in messages."""
        store = cls.__new__(cls)
        store.path = None
        store.where = where
        store.readonly = readonly
        store._now = wall_clock
        store.db = db
        store._tx = Transaction(db, where, disk=None)
        try:
            check_migrations(db, where, readonly=True)
        except BaseException:
            db.close()
            raise
        return store

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

    @classmethod
    def peek_meta(cls, out_dir: Path, key: str) -> str | None:
        """One meta value of the state in `out_dir`, read-only; None when there is no
        usable state (what opening it for a run would say is left to that moment)."""
        try:
            store = cls(out_dir / STATE_FILE, readonly=True)
        except (StateError, OSError):
            return None
        try:
            with store.reading():
                return store.get_meta(key)
        except StateError:
            return None
        finally:
            store.close()

    def close(self) -> None:
        self._stop_thread()
        self.db.close()

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The SQLite connection itself (its query plans, its trace hook): for tests
        and benches of the SQLite backend."""
        if not isinstance(self.db, sqlite3.Connection):
            raise TypeError(f"{self.where} is not a SQLite state")
        return self.db

    @contextlib.contextmanager
    def reading(self) -> Iterator[StateStore]:
        """Reads whose SQLite errors (a file damaged under a reader) become StateError."""
        try:
            yield self
        except sqlite3.Error as err:
            raise StateError(f"{self.where}: cannot read: {err}") from None

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
                f"{self.where} belongs to batch {mine}, but {id_file.parent} holds batch "
                f"{theirs}: was a state file copied in from another folder? Put back this "
                "folder's own state.db, or use another --out folder. Nothing was sent."
            )

    def applied_migrations(self) -> list[str]:
        return applied_migrations(self.db)

    # -- transactions ---------------------------------------------------------------

    def transaction(self, *, durable: bool = True) -> Transaction:
        """One transaction; nested ones join the outermost, which commits or rolls back.

        `durable=False` for bookkeeping a restart re-derives (see `_tx`): it commits
        without an fsync of its own.
        """
        return self._tx.durable(durable)

    def clean_result_segments(self, segs: Iterable[int]) -> dict[int, int]:
        """Mark these segments of results.csv clean, before their rows are read: any
        change from here on makes one dirty at a higher version. Their versions."""
        return self._clean_segments("result_segments", segs)

    def clean_report_segments(self, segs: Iterable[int]) -> dict[int, int]:
        """`clean_result_segments` for the report's data files (migration 010)."""
        return self._clean_segments("report_segments", segs)

    def _clean_segments(self, table: str, segs: Iterable[int]) -> dict[int, int]:
        wanted = list(segs)
        with self.transaction(durable=False) as db:  # lost in a crash: they stay dirty
            db.executemany(f"UPDATE {table} SET dirty = 0 WHERE seg = ?", [(s,) for s in wanted])
            found = dict(db.execute(f"SELECT seg, version FROM {table}"))
        return {seg: int(found[seg]) for seg in wanted if seg in found}

    # -- meta -----------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def delete_meta(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (key,))

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    # -- sessions: the batch's time over its runs ---------------------------------------

    def begin_session(self) -> None:
        """A run starts (a crashed run before it is closed at its last event)."""
        row = self.db.execute("SELECT at FROM events ORDER BY id DESC LIMIT 1").fetchone()
        value = begun(self.get_meta(SESSIONS_KEY), self._now(), row[0] if row else None)
        self.set_meta({SESSIONS_KEY: value})

    def end_session(self) -> None:
        self.set_meta({SESSIONS_KEY: ended(self.get_meta(SESSIONS_KEY), self._now())})

    def session_times(self) -> SessionTimes:
        return times(self.get_meta(SESSIONS_KEY), self._now())

    # -- jobs: manifest sync ----------------------------------------------------------

    def existing_hashes(
        self, job_ids: Sequence[str]
    ) -> dict[str, tuple[str, int, str, int, int | None, int | None]]:
        """content_hash, idx, columns_json, in_manifest, source_id and source_line of the
        given ids that exist."""
        out: dict[str, tuple[str, int, str, int, int | None, int | None]] = {}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i : i + 500]
            for job_id, *known in self.db.execute(
                "SELECT job_id, content_hash, idx, columns_json, in_manifest, source_id,"
                f" source_line FROM jobs WHERE job_id IN ({marks(chunk)})",
                chunk,
            ):
                out[job_id] = tuple(known)
        return out

    def start_membership(self) -> None:
        """Before a manifest's sync: nothing seen yet (a temporary table, this
        connection's own; `mark_seen` fills it, `end_membership` reads it)."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS sync_seen (job_id TEXT PRIMARY KEY)")
        self.db.execute("DELETE FROM temp.sync_seen")

    def mark_seen(self, job_ids: Sequence[str]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO temp.sync_seen VALUES (?)", [(j,) for j in job_ids]
        )

    def end_membership(self) -> int:
        """Jobs the manifest no longer has leave it (only those rows are written);
        returns how many jobs are out of the manifest now."""
        with self.transaction() as db:
            db.execute(
                "UPDATE jobs SET in_manifest = 0 WHERE in_manifest = 1"
                " AND job_id NOT IN (SELECT job_id FROM temp.sync_seen)"
            )
        self.db.execute("DELETE FROM temp.sync_seen")
        return self.removed_count()

    def upsert_jobs(
        self,
        rows: Iterable[tuple[str, int, str, str, str, str]],
        *,
        sources: Sequence[tuple[int | None, int | None]] | None = None,
    ) -> None:
        """Insert new jobs (job_id, idx, model, input_json, columns_json, hash) as pending;
        for known ids refresh order and columns (content changes are handled by the caller).

        `sources`: each row's (manifest source id, line) (`source_ids`), written in the
        same statement; without it a known job keeps the sources it had."""
        now = self._now()
        with self.transaction() as db:
            if sources is None:
                db.executemany(
                    "INSERT INTO jobs (job_id, idx, model, input_json, columns_json,"
                    " content_hash, state, updated_at, in_manifest)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, 1)"
                    " ON CONFLICT(job_id) DO UPDATE SET idx = excluded.idx,"
                    " columns_json = excluded.columns_json, in_manifest = 1",
                    [(*r, now) for r in rows],
                )
                return
            db.executemany(
                "INSERT INTO jobs (job_id, idx, model, input_json, columns_json, content_hash,"
                " source_id, source_line, state, updated_at, in_manifest)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, 1)"
                " ON CONFLICT(job_id) DO UPDATE SET idx = excluded.idx,"
                " columns_json = excluded.columns_json, source_id = excluded.source_id,"
                " source_line = excluded.source_line, in_manifest = 1",
                [(*r, *src, now) for r, src in zip(rows, sources, strict=True)],
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

    # -- files: writing ---------------------------------------------------------------

    def record_file(self, row: FileRow) -> None:
        with self.transaction(durable=False) as db:  # the file is checked again on resume
            db.execute(
                f"INSERT INTO files ({FILE_COLUMNS}, path_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, n) DO UPDATE SET"
                f" {_REPLACE_FILE}",
                (
                    *(row.job_id, row.n, row.url, row.path, row.sha256, row.size, row.mtime_ns),
                    *(row.width, row.height, row.thumb),
                    row.path.casefold() if row.path is not None else None,
                ),
            )

    def set_preview(
        self, job_id: str, n: int, *, thumb: str, width: int | None, height: int | None
    ) -> None:
        """File `n`'s preview (relative to DIR; '' none can be made) and pixels, once
        made: the report then neither opens nor decodes that file again."""
        self.set_previews([PreviewUpdate(job_id, n, thumb, width, height)])

    def finish_download(self, job_id: str, files: int, *, result_urls: Sequence[str]) -> bool:
        """Every file of the job is recorded: the job is `done` (an earlier error note
        cleared) and rows of an earlier task with more files go, together; False and
        nothing written when the job is no longer `succeeded`."""
        with self.transaction(durable=False) as db:
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
        with self.transaction(durable=False) as db:
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
            raise StateError(f"{self.where} is open read-only")
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
            durable = event not in REDERIVED_EVENTS
            # Nobody moves the job meanwhile: SQLite's IMMEDIATE transaction has the one
            # writer; PostgreSQL's row lock holds off the other workers until COMMIT.
            with self.transaction(durable=durable) as db:
                submit = event is Event.SUBMIT
                if submit and not self.holds(db):  # before the job's row: one lock order
                    return False  # a worker sends only within its lease
                row = db.execute(
                    f"SELECT state, worker FROM jobs WHERE job_id = ?{_LOCK_ROW[dialect(db)]}",
                    (job_id,),
                ).fetchone()
                if row is None or row[0] not in sources:
                    return False
                if submit and self.holder is not None and row[1] != self.holder:
                    return False  # ... and only what it holds
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
        db: Connection,
        job_id: str,
        attempt: int,
        event: Event,
        outcome: str,
        fields: Mapping[str, Any],
    ) -> None:
        now = fields["updated_at"]
        if event is Event.SUBMIT:
            db.execute(
                # A new attempt's row, in place of one a crash left (its fields gone).
                "INSERT INTO attempts (job_id, attempt, outcome, started_at, account)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, attempt) DO UPDATE SET"
                " outcome = excluded.outcome, started_at = excluded.started_at,"
                " account = excluded.account, task_id = NULL, error_code = NULL,"
                " error_message = NULL, ended_at = NULL",
                (job_id, attempt, outcome, now, fields.get("account")),
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

    def begin_attempt(self, job_id: str, attempt: int, *, account: str | None = None) -> bool:
        """Record the intent to submit BEFORE the POST leaves, with the account whose key
        sends it (on the job and the attempt, in the same transaction).

        Only a `pending` job can start an attempt; False (nothing written) otherwise, so a
        job another writer already took is never sent twice.
        """
        return self.transition(
            job_id,
            Event.SUBMIT,
            attempt=attempt,
            outcome="submitting",
            account=account,
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
