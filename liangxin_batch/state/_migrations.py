"""The state's schema as numbered migrations, each applied in the transaction that
records it (append only: a state file records which it has had)."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

from liangxin_batch.errors import StateError
from liangxin_batch.state._db import Connection, dialect

__all__ = [
    "ALIVE_WORKER_SQL",
    "GENERATED_STATES_SQL",
    "MIGRATIONS",
    "REPORT_SECONDS",
    "SEGMENT_JOBS",
    "TABLES",
    "applied_migrations",
    "check_migrations",
    "migrate",
    "report_seconds",
]

#: The tables a state must have once migrated.
TABLES = frozenset({"meta", "jobs", "attempts", "events", "files"})


def _run_script(db: Connection, script: str) -> None:
    # Not executescript(): it commits first, and a migration must share the transaction
    # that records it. Split at the `;` that end statements (not those inside a
    # trigger's BEGIN ... END). Each statement goes through `db.execute`, which says it
    # in PostgreSQL's words there (`_pg.pg_sql`); triggers are made by `_triggers`.
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                db.execute(statement)
            statement = ""
    if statement.strip(" \n;"):
        raise ValueError(f"incomplete statement in a migration: {statement[:80]!r}")


class Trigger(NamedTuple):
    """A row trigger: `body` (SQLite's statements, each ending in `;`) runs `when` (say
    "AFTER UPDATE OF a, b") a row of `table` changes."""

    name: str
    when: str
    table: str
    body: str


def _triggers(db: Connection, *triggers: Trigger) -> None:
    """Make these triggers: SQLite's `CREATE TRIGGER ... BEGIN ... END`, or on
    PostgreSQL a PL/pgSQL function of the same name (its search_path pinned to the
    batch's schema, where it is made) and a row trigger that calls it."""
    for t in triggers:
        if dialect(db) == "sqlite":
            db.execute(f"CREATE TRIGGER {t.name} {t.when} ON {t.table} BEGIN {t.body} END")
            continue
        body = t.body.replace(" AS INTEGER)", " AS BIGINT)")
        db.execute(
            f"CREATE FUNCTION {t.name}() RETURNS trigger LANGUAGE plpgsql"
            f" SET search_path FROM CURRENT AS $$ BEGIN {body} RETURN NULL; END $$"
        )
        db.execute(
            f"CREATE TRIGGER {t.name} {t.when} ON {t.table}"
            f" FOR EACH ROW EXECUTE FUNCTION {t.name}()"
        )


def _m001_initial(db: Connection) -> None:
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


def _m002_keys_and_evidence(db: Connection) -> None:
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


def _m003_generation_seconds(db: Connection) -> None:
    # Learned latencies come from the service's own clock, not ours minus theirs.
    db.execute("ALTER TABLE jobs ADD COLUMN generation_seconds REAL")


def _m004_path_keys(db: Connection) -> None:
    """Who holds an output path is asked of the state (an index), not of a map of every
    path in memory (~312 bytes a file: 311 MB at a million). Paths compare casefolded,
    which SQLite's NOCASE (ASCII only) cannot do: the key is computed here."""
    db.execute("ALTER TABLE files ADD COLUMN path_key TEXT")
    rows = db.execute("SELECT job_id, n, path FROM files WHERE path IS NOT NULL").fetchall()
    db.executemany(
        "UPDATE files SET path_key = ? WHERE job_id = ? AND n = ?",
        [(p.casefold(), j, n) for j, n, p in rows],
    )
    db.execute("CREATE INDEX files_by_path_key ON files (path_key) WHERE path_key IS NOT NULL")


def _m005_walk_indexes(db: Connection) -> None:
    """An index for every walk of the state (tests/test_query_plans.py): without them a
    page of a full walk scanned and sorted the table, O(n^2 / 1000) for a pass."""
    _run_script(
        db,
        """
        CREATE INDEX jobs_by_idx ON jobs (idx, job_id);
        CREATE INDEX jobs_by_model_state ON jobs (model, state);
        CREATE INDEX jobs_by_membership_state ON jobs (in_manifest, state);
        CREATE INDEX jobs_in_flight ON jobs (state, submitted_at);
        CREATE INDEX jobs_by_completion ON jobs (completed_at)
            WHERE generation_seconds IS NOT NULL AND completed_at IS NOT NULL;
        CREATE INDEX events_by_kind ON events (kind, id);
        CREATE INDEX attempts_by_start ON attempts (started_at);
        """,
    )


def _micro(expr: str) -> str:
    """Credits as whole millionths: sums of 0.1 and 0.8 added and taken away a million
    times stay exact (REAL sums drifted to -1e-16 once every job had moved on)."""
    return f"CAST(ROUND(({expr}) * 1000000) AS INTEGER)"


def _estimated(prefix: str) -> str:
    """Our estimate, counted only where the service did not say what it charged."""
    return (
        f"CASE WHEN {prefix}credits IS NULL THEN COALESCE({prefix}credits_estimated, 0) ELSE 0 END"
    )


def _tally_delta(row: str, sign: str) -> str:
    """One trigger statement: add (`+`) or take away (`-`) `row` (NEW or OLD)."""
    return f"""
        INSERT INTO tallies (model, state, in_manifest, finished_by, n, credits, estimated)
        VALUES ({row}.model, {row}.state, {row}.in_manifest, COALESCE({row}.finished_by, ''),
                {sign}1, {sign}{_micro(f"COALESCE({row}.credits, 0)")},
                {sign}{_micro(_estimated(row + "."))})
        ON CONFLICT (model, state, in_manifest, finished_by) DO UPDATE SET
            n = tallies.n + excluded.n,
            credits = tallies.credits + excluded.credits,
            estimated = tallies.estimated + excluded.estimated;"""


def _m006_tallies(db: Connection) -> None:
    """`status` at a million jobs read every row (1.95 s). Counts and credit sums per
    (model, state, membership, finished_by) are kept by triggers, in the same transaction
    as the row that changed, so they can never disagree with the jobs. A later migration
    that rebuilds `jobs` (create, copy, drop, rename) drops these triggers: make them
    again there."""
    columns = "model, state, in_manifest, finished_by, credits, credits_estimated"
    _run_script(
        db,
        f"""
        CREATE TABLE tallies (
            model       TEXT NOT NULL,
            state       TEXT NOT NULL,
            in_manifest INTEGER NOT NULL,
            finished_by TEXT NOT NULL,
            n           INTEGER NOT NULL,
            credits     INTEGER NOT NULL,  -- millionths of a credit (exact sums)
            estimated   INTEGER NOT NULL,
            PRIMARY KEY (model, state, in_manifest, finished_by)
        );
        INSERT INTO tallies
            SELECT model, state, in_manifest, COALESCE(finished_by, ''), COUNT(*),
                   SUM({_micro("COALESCE(credits, 0)")}),
                   SUM({_micro(_estimated(""))})
            FROM jobs GROUP BY 1, 2, 3, 4;
        """,
    )
    _triggers(
        db,
        Trigger("jobs_tally_insert", "AFTER INSERT", "jobs", _tally_delta("NEW", "+")),
        Trigger("jobs_tally_delete", "AFTER DELETE", "jobs", _tally_delta("OLD", "-")),
        Trigger(
            "jobs_tally_update",
            f"AFTER UPDATE OF {columns}",
            "jobs",
            _tally_delta("OLD", "-") + _tally_delta("NEW", "+"),
        ),
    )


#: The generation time report.html's p50/p95 read (`generation_seconds` in
#: outputs/_report.py: costTime, else completion - submission), as SQL: the index below
#: and the queries that use it must spell it alike.
REPORT_SECONDS = "COALESCE(cost_time / 1000.0, MAX(0.0, completed_at - submitted_at))"
#: The same on PostgreSQL, whose GREATEST(0.0, NULL) is 0.0 where SQLite's MAX is NULL.
_REPORT_SECONDS_PG = (
    "COALESCE(cost_time / 1000.0, CASE WHEN completed_at - submitted_at < 0.0 THEN 0.0"
    " ELSE completed_at - submitted_at END)"
)


def report_seconds(db: Connection) -> str:
    """`REPORT_SECONDS` as `db` says it (the index and its queries must agree)."""
    return REPORT_SECONDS if dialect(db) == "sqlite" else _REPORT_SECONDS_PG


#: A worker at work: not ended, its lease not run out (a SIGKILLed one nobody has ended
#: yet is past its lease). One parameter: now.
ALIVE_WORKER_SQL = "ended_at IS NULL AND lease_until > ?"

#: The jobs whose generation succeeded (BILLED_STATES), as the index below names them.
GENERATED_STATES_SQL = "state IN ('succeeded', 'done', 'download_failed')"


def _m007_report_seconds(db: Connection) -> None:
    """report.html's p50/p95 per model without reading every job: an index of the
    manifest's generated jobs by (model, generation time), so a percentile is one
    index search and an offset (a million jobs: no row of `jobs` read, no sort)."""
    db.execute(
        f"CREATE INDEX jobs_report_seconds ON jobs (model, {report_seconds(db)})"
        f" WHERE in_manifest = 1 AND {GENERATED_STATES_SQL}"
    )


#: Jobs per segment of results.csv (by `idx`, manifest order): outputs/_segments.py caches
#: each segment's rows; the triggers below number the segments with it (changing it
#: takes a migration that renumbers `result_segments`).
SEGMENT_JOBS = 10_000
#: The columns of `jobs` a row of results.csv may read: all but the poll counter and the
#: row's own timestamp, which change at every poll and never change a row.
_ROW_COLUMNS = (
    "job_id, idx, model, input_json, columns_json, content_hash, in_manifest, state,"
    " attempt, task_id, submitted_at, completed_at, result_urls, error_code, error_message,"
    " credits, cost_time, finished_by, credits_estimated, sends, generation_seconds"
)


def _bump(segment: str, table: str = "result_segments") -> str:
    """One trigger statement: segment `segment` (an SQL expression) has changed. Only a
    clean segment is written (made dirty, its version raised): the changes that follow,
    until results.csv is written again, leave the row and its page as they are (a page
    of the WAL per transaction of a run was 9% of the bytes a job wrote)."""
    return f"""
        INSERT INTO {table} (seg, version, dirty)
            SELECT {segment}, 1, 1 WHERE {segment} IS NOT NULL
        ON CONFLICT (seg) DO UPDATE SET version = {table}.version + 1, dirty = 1
            WHERE {table}.dirty = 0;"""


def _of_job(row: str) -> str:
    return f"(SELECT idx / {SEGMENT_JOBS} FROM jobs WHERE job_id = {row}.job_id)"


#: The columns of `files` a row of results.csv may read.
_FILE_COLUMNS = "job_id, n, url, path, sha256, size"


def _segment_versions(db: Connection, table: str, name: str, file_columns: str) -> None:
    """A table of segment versions (results.csv's, migration 008; the report's, 010):
    one row per segment, clean, and the triggers (`jobs_<name>_*`, `files_<name>_*`)
    that bump a segment in the transaction of any change of one of its jobs
    (`_ROW_COLUMNS`) or of their files (`file_columns`)."""
    n = SEGMENT_JOBS
    bump = functools.partial(_bump, table=table)
    _run_script(
        db,
        f"""
        CREATE TABLE {table} (
            seg     INTEGER PRIMARY KEY,  -- idx / SEGMENT_JOBS
            version INTEGER NOT NULL,
            dirty   INTEGER NOT NULL      -- changed since the cache's writer read it
        );
        -- Clean: nothing is cached yet, so every segment is made at its first writing
        -- (by a run, or by a `report`, which may cache a clean segment).
        INSERT INTO {table} SELECT DISTINCT idx / {n}, 1, 0 FROM jobs;
        """,
    )
    _triggers(
        db,
        Trigger(f"jobs_{name}_insert", "AFTER INSERT", "jobs", bump(f"NEW.idx / {n}")),
        Trigger(f"jobs_{name}_delete", "AFTER DELETE", "jobs", bump(f"OLD.idx / {n}")),
        Trigger(
            f"jobs_{name}_update",
            f"AFTER UPDATE OF {_ROW_COLUMNS}",
            "jobs",
            bump(f"OLD.idx / {n}") + bump(f"NEW.idx / {n}"),
        ),
        Trigger(f"files_{name}_insert", "AFTER INSERT", "files", bump(_of_job("NEW"))),
        Trigger(f"files_{name}_delete", "AFTER DELETE", "files", bump(_of_job("OLD"))),
        Trigger(
            f"files_{name}_update",
            f"AFTER UPDATE OF {file_columns}",
            "files",
            bump(_of_job("OLD")) + bump(_of_job("NEW")),
        ),
    )


def _m008_result_segments(db: Connection) -> None:
    """results.csv is kept by segments of SEGMENT_JOBS jobs in manifest order. Triggers
    mark a segment dirty, in the same transaction as any change of one of its jobs or
    their files, raising its version when it was clean; the writer of results.csv marks
    it clean (`clean_result_segment`) before it reads its rows. A segment cached at a
    version is current while the state holds that version, clean (the cache lives
    outside the state: a state opened read-only is never written). A later migration
    that rebuilds `jobs` or `files` must make these triggers again."""
    _segment_versions(db, "result_segments", "segment", _FILE_COLUMNS)


def _m009_local_inputs(db: Connection) -> None:
    """Local files as model inputs (core/_local_files.py). `local_files`: the bytes a
    job's file token names, and where the manifest last said they are (a job's input
    holds only the token, so a moved file is the same job). `uploads`: the latest upload
    of those bytes per account, with the URL the service gave and when it stops serving
    it; one row per content, so 300 jobs on one photo share one upload.
    `events_input_refresh`: a job's input refreshes, counted by an index probe."""
    _run_script(
        db,
        """
        CREATE TABLE local_files (
            sha256      TEXT PRIMARY KEY,
            path        TEXT NOT NULL,     -- absolute: what is uploaded
            written     TEXT NOT NULL,     -- as the manifest wrote it: what reports show
            size        INTEGER NOT NULL,
            media_type  TEXT NOT NULL      -- sniffed from the bytes
        );
        CREATE TABLE uploads (
            sha256       TEXT NOT NULL,
            account      TEXT NOT NULL,    -- which key and upload host (never the key)
            url          TEXT NOT NULL,    -- the answer's downloadUrl: what a task is given
            uploaded_at  REAL NOT NULL,
            expires_at   REAL NOT NULL,    -- the answer's expiresAt, or uploaded_at + lifetime
            PRIMARY KEY (sha256, account)
        );
        -- How often a job's uploads were refreshed (asked for each failed task of a
        -- batch with local files): that job's few refresh events, never a walk.
        CREATE INDEX events_input_refresh ON events (job_id) WHERE event = 'input_refresh';
        """,
    )


def _m010_report_data(db: Connection) -> None:
    """The report's data files (outputs/_report_data.py) are kept by segments too, with
    versions of their own: `report_segments` is `result_segments` for report.html's
    shards, bumped by the same changes and also by a file's preview. The shards and
    results.csv are written apart (a run refreshes the report while it runs), so each
    cache marks its own segments clean.

    `files.width`/`height`: the pixels of an output image, from the download check (the
    grid lays out cards by aspect without opening a file). `files.thumb`: its preview,
    relative to DIR; '' when none can be made (not an image, unreadable, too large);
    NULL when not tried yet (made by the next report)."""
    _run_script(
        db,
        """
        ALTER TABLE files ADD COLUMN width INTEGER;
        ALTER TABLE files ADD COLUMN height INTEGER;
        ALTER TABLE files ADD COLUMN thumb TEXT;
        """,
    )
    _segment_versions(db, "report_segments", "report", f"{_FILE_COLUMNS}, width, height, thumb")


def _m011_preview_todo(db: Connection) -> None:
    """The files whose preview is not made yet (`thumb IS NULL`), found by a partial
    index: a report rebuild asks for them every time, and in a finished folder there are
    none, so the question costs an empty index, not a walk of a million files. A file
    recorded with its preview (the common path of a run) never enters it."""
    db.execute("CREATE INDEX files_preview_todo ON files (job_id, n) WHERE thumb IS NULL")


def _m012_manifest_sources(db: Connection) -> None:
    """Where each job was written: the manifest file (`manifest_sources`, one row per
    distinct file name, so a million jobs hold a small integer each, not a path) and the
    line in it (CSV: the row's first line). Each output's provenance sidecar names them
    (outputs/_sidecars.py).

    Jobs synced before this have none: the manifest's fingerprint is forgotten so the
    next run reads the manifest once more and records where each job came from (a job
    whose sources were written is then skipped again, as an unchanged job is)."""
    _run_script(
        db,
        """
        CREATE TABLE manifest_sources (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        ALTER TABLE jobs ADD COLUMN source_id INTEGER;
        ALTER TABLE jobs ADD COLUMN source_line INTEGER;
        DELETE FROM meta WHERE key = 'manifest_fingerprint';
        """,
    )


def _m013_accounts(db: Connection) -> None:
    """Which account created each job's task (and each attempt's): its polls, downloads
    and uploads use that account's key. NULL (rows from before): the `default` account,
    the one LIANGXIN_API_KEY names. Portable SQL (the PostgreSQL backend runs it too)."""
    _run_script(
        db,
        """
        ALTER TABLE jobs ADD COLUMN account TEXT;
        ALTER TABLE attempts ADD COLUMN account TEXT;
        """,
    )


def _m014_workers(db: Connection) -> None:
    """Several workers on one batch (a shared PostgreSQL state, state/_workers.py): each
    registers a row and renews its lease; `jobs.worker` names the one holding a job (NULL:
    free to claim). A worker whose lease ran out is ended by the next one to look, and
    its jobs are freed (its interrupted submits parked `unknown` first)."""
    _run_script(
        db,
        """
        CREATE TABLE workers (
            id          TEXT PRIMARY KEY,
            host        TEXT NOT NULL,
            pid         INTEGER NOT NULL,
            started_at  REAL NOT NULL,
            seen_at     REAL NOT NULL,     -- its last renewal
            lease_until REAL NOT NULL,     -- its jobs are its own until then
            ended_at    REAL,              -- a clean end, or when another found it dead
            ended_how   TEXT               -- finished, stopped, lease expired
        );
        ALTER TABLE jobs ADD COLUMN worker TEXT;
        -- A worker's jobs; the free ones are found by jobs_by_state (few are held).
        CREATE INDEX jobs_by_worker ON jobs (worker, state) WHERE worker IS NOT NULL;
        -- Output names taken by workers' downloads in progress (outputs/_layout.py
        -- PathClaims): two workers never write one path, whatever their timing.
        CREATE TABLE stems (
            stem    TEXT PRIMARY KEY,  -- the path less its extension, casefolded
            job_id  TEXT NOT NULL,
            n       INTEGER NOT NULL
        );
        -- An account's limit shared by its workers: GCRA's theoretical arrival time
        -- of the next admission, and a 429's pause, in the database server's clock
        -- (seconds since the epoch). No longer used: the limits now live in a
        -- schema every batch of the database shares (state/_limits.py); the table is
        -- kept, so workers of an older version running beside a newer one go on.
        CREATE TABLE limits (
            name          TEXT PRIMARY KEY,  -- account:create, account:poll
            tat           REAL NOT NULL,
            blocked_until REAL NOT NULL,
            last_slot     REAL NOT NULL      -- the slot the last reservation took
        );
        """,
    )


#: Append only. A state file records which of these it has had.
MIGRATIONS: Sequence[tuple[str, Callable[[Connection], None]]] = (
    ("001_initial", _m001_initial),
    ("002_keys_and_evidence", _m002_keys_and_evidence),
    ("003_generation_seconds", _m003_generation_seconds),
    ("004_path_keys", _m004_path_keys),
    ("005_walk_indexes", _m005_walk_indexes),
    ("006_tallies", _m006_tallies),
    ("007_report_seconds", _m007_report_seconds),
    ("008_result_segments", _m008_result_segments),
    ("009_local_inputs", _m009_local_inputs),
    ("010_report_data", _m010_report_data),
    ("011_preview_todo", _m011_preview_todo),
    ("012_manifest_sources", _m012_manifest_sources),
    ("013_accounts", _m013_accounts),
    ("014_workers", _m014_workers),
)


def applied_migrations(db: Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]


def check_migrations(db: Connection, path: Path | str, *, readonly: bool) -> set[str]:
    """The migrations `path` has had; StateError if this version cannot use it."""
    try:
        applied = {r[0] for r in db.execute("SELECT name FROM _migrations")}
    except sqlite3.OperationalError:
        applied = set()
    known = {name for name, _ in MIGRATIONS}
    if applied - known:
        newer = ", ".join(sorted(applied - known))
        raise StateError(
            f"{path} was written by a newer liangxin-batch (migrations {newer}); "
            "upgrade liangxin-batch to use it"
        )
    if readonly and applied != known:
        raise StateError(
            f"{path} was written by an older liangxin-batch: run it once "
            "(`liangxin-batch run`) to bring it up to date"
        )
    return applied


def migrate(
    db: Connection,
    path: Path | str,
    transaction: AbstractContextManager[Connection],
    *,
    now: Callable[[], float],
) -> None:
    """Apply the missing migrations, each in the transaction that records it."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, at REAL)")
    applied = check_migrations(db, path, readonly=False)
    tables = _tables(db)
    if applied and not tables >= TABLES:
        raise StateError(
            f"{path} is missing tables ({', '.join(sorted(TABLES - tables))}):"
            " it is damaged or not a liangxin-batch state. Restore it from a backup or "
            "use another --out folder. Nothing was sent."
        )
    pending = [name for name, _ in MIGRATIONS if name not in applied]
    if pending and "workers" in tables:
        _refuse_under_running_workers(db, path, pending, now())
    for name, step in MIGRATIONS:
        if name in applied:
            continue
        with transaction:
            step(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, now()))


def _refuse_under_running_workers(
    db: Connection, path: Path | str, pending: list[str], now: float
) -> None:
    """Workers of an older version still run this batch (a shared PostgreSQL state; the
    caller holds the schema's migration lock): a migration could change what they read
    and write under them, so this version refuses until they end. A worker whose lease ran
    out is dead and does not count."""
    running = db.execute(
        f"SELECT host, pid FROM workers WHERE {ALIVE_WORKER_SQL} ORDER BY started_at",
        (now,),
    ).fetchall()
    if running:
        who = ", ".join(f"{host} (pid {pid})" for host, pid in running[:5])
        raise StateError(
            f"{path}: this version of liangxin-batch must bring the batch's state up to "
            f"date ({', '.join(pending)}), but {len(running)} worker(s) of an older version "
            f"still run it: {who}. Let them finish (or stop them), then start this "
            "version. Nothing was sent."
        )


def _tables(db: Connection) -> set[str]:
    if dialect(db) == "sqlite":
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {
        r[0]
        for r in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }
