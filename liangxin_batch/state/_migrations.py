"""The state's schema as numbered migrations, each applied in the transaction that
records it (append only: a state file records which it has had)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

__all__ = ["MIGRATIONS", "TABLES"]

#: The tables a state must have once migrated.
TABLES = frozenset({"meta", "jobs", "attempts", "events", "files"})


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


def _m002_keys_and_evidence(db: sqlite3.Connection) -> None:
    """Unique, indexed walk keys; charged vs estimated credits; POSTs sent; file mtimes."""
    _run_script(
        db,
        """
        DROP INDEX IF EXISTS jobs_by_state;
        CREATE INDEX jobs_by_state ON jobs (state, idx, job_id);
        CREATE INDEX jobs_by_position ON jobs (in_manifest, idx, job_id);
        ALTER TABLE jobs ADD COLUMN credits_estimated REAL;
        ALTER TABLE jobs ADD COLUMN sends INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE files ADD COLUMN mtime_ns INTEGER;
        ALTER TABLE events ADD COLUMN event TEXT;
        ALTER TABLE events ADD COLUMN from_state TEXT;
        ALTER TABLE events ADD COLUMN to_state TEXT;
        UPDATE jobs SET sends = attempt - (SELECT COUNT(*) FROM attempts a
            WHERE a.job_id = jobs.job_id AND a.outcome = 'not_created');
        UPDATE jobs SET sends = 0 WHERE sends < 0
        """,
    )


#: Append only. A state file records which of these it has had.
MIGRATIONS: Sequence[tuple[str, Callable[[sqlite3.Connection], None]]] = (
    ("001_initial", _m001_initial),
    ("002_keys_and_evidence", _m002_keys_and_evidence),
)
