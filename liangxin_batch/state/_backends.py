"""Where a batch's state lives: `DIR/state.db` (SQLite, the default) or a PostgreSQL
database named by a URL (`--state`, `LIANGXIN_STATE_URL`), where one database holds many
batches, each in its own schema (`_pg`).

A PostgreSQL batch is still known by its folder: `DIR/batch.id` names it, so `run`,
`status`, `report` and `export` given the same DIR and URL find the same batch, on any
machine that shares DIR. The first worker to arrive makes the batch's schema, migrates
it, and only then publishes `batch.id` (an atomic link: of two workers arriving at once,
one id wins and the other drops the schema it made), so a `batch.id` whose schema is
missing means the state is not in this database (a wrong URL, or a dropped schema):
that is refused, as an empty state.db beside outputs is, before anything is sent.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from liangxin_batch.errors import ConfigError, StateError
from liangxin_batch.state._checks import _RUN_TRACES, BATCH_ID_FILE, _nonempty
from liangxin_batch.state._limits import SharedLimits
from liangxin_batch.state._migrations import migrate
from liangxin_batch.state._pg import PgConnection, is_postgres_url, redact, schema_of
from liangxin_batch.state._store import STATE_FILE, StateStore
from liangxin_batch.state._tx import Transaction

__all__ = [
    "ENV_STATE_URL",
    "missing_state",
    "open_shared_limits",
    "open_state",
    "peek_state_meta",
    "state_url",
]

ENV_STATE_URL = "LIANGXIN_STATE_URL"


def state_url(given: str | None, *, flag: str = "--state") -> str | None:
    """The state URL from `--state`, then LIANGXIN_STATE_URL; None for DIR/state.db.
    ConfigError (exit 2) for anything but a postgresql:// URL."""
    url = (given or os.environ.get(ENV_STATE_URL) or "").strip()
    if not url:
        return None
    if not is_postgres_url(url):
        source = flag if given else ENV_STATE_URL
        raise ConfigError(
            f"{source} takes a postgresql://user@host:port/database URL (the default "
            f"state is DIR/{STATE_FILE}), not {redact(url)!r}"
        )
    return url


def missing_state(out_dir: Path) -> StateError:
    """What a reader says of a folder without DIR/state.db (and no --state)."""
    said = f"no state file at {out_dir / STATE_FILE}"
    if (out_dir / BATCH_ID_FILE).is_file():
        return StateError(
            f"{said}, but {out_dir} holds a batch ({BATCH_ID_FILE}): if it keeps its state "
            f"in PostgreSQL, pass --state postgresql://… (or set {ENV_STATE_URL})"
        )
    return StateError(f"{said}: is {out_dir} the --out folder of a run?")


def open_state(
    out_dir: Path,
    *,
    url: str | None = None,
    readonly: bool = False,
    wall_clock: Callable[[], float] = time.time,
) -> StateStore:
    """The state of the batch in `out_dir`: SQLite's `StateStore.in_dir`, or the batch's
    schema in the PostgreSQL database at `url`, checked and migrated."""
    if url is None:
        return StateStore.in_dir(out_dir, readonly=readonly, wall_clock=wall_clock)
    if readonly:
        batch_id = _read_id(out_dir)
        if batch_id is None:
            raise StateError(
                f"no batch in {out_dir} (no {BATCH_ID_FILE}): is it the --out folder of a run?"
            )
        return _open_schema(url, batch_id, readonly=True, wall_clock=wall_clock)
    _refuse_sqlite_folder(out_dir)
    batch_id = _read_id(out_dir)
    if batch_id is None:
        _refuse_traces(out_dir, url)
        batch_id = _create_batch(out_dir, url, wall_clock)
    return _open_schema(url, batch_id, readonly=False, wall_clock=wall_clock)


def open_shared_limits(out_dir: Path, url: str) -> SharedLimits:
    """The rate limits the PostgreSQL batch in `out_dir` shares with every batch in its
    database, on a connection of their own (for a thread of their own:
    run/_shared_limiter.py)."""
    if _read_id(out_dir) is None:
        raise StateError(f"no batch in {out_dir} (no {BATCH_ID_FILE}): open its state first")
    db = PgConnection.connect(url, schema=None)
    try:
        return SharedLimits.open(db)
    except BaseException:
        db.close()
        raise


def peek_state_meta(out_dir: Path, key: str, *, url: str | None = None) -> str | None:
    """One meta value, read-only; None when there is no usable state."""
    if url is None:
        return StateStore.peek_meta(out_dir, key)
    try:
        store = open_state(out_dir, url=url, readonly=True)
    except (StateError, OSError):
        return None
    with contextlib.closing(store), store.reading():
        return store.get_meta(key)


def _open_schema(
    url: str, batch_id: str, *, readonly: bool, wall_clock: Callable[[], float]
) -> StateStore:
    schema = schema_of(batch_id)
    where = f"{redact(url)} (batch {batch_id})"
    db = PgConnection.connect(url, schema=schema, readonly=readonly)
    try:
        if not _schema_exists(db, schema):
            raise StateError(
                f"{where}: this database has no state for the batch in the folder (its "
                f"{BATCH_ID_FILE} names batch {batch_id}): is --state the URL the batch "
                "was started with? Nothing was sent."
            )
        if not readonly:
            _migrate(db, schema, where, wall_clock)
    except BaseException:
        db.close()
        raise
    return StateStore.on_connection(db, where, wall_clock=wall_clock, readonly=readonly)


def _migrate(db: PgConnection, schema: str, where: str, now: Callable[[], float]) -> None:
    """Bring the schema up to date, one worker at a time (a session lock on its name:
    the others wait here, then find nothing left to do)."""
    db.execute("SELECT pg_advisory_lock(hashtext(?))", (schema,))
    try:
        migrate(db, where, Transaction(db, where, disk=None), now=now)
    finally:
        db.execute("SELECT pg_advisory_unlock(hashtext(?))", (schema,))


def _create_batch(out_dir: Path, url: str, now: Callable[[], float]) -> str:
    """A new batch: its schema made and migrated, then its id published in
    `DIR/batch.id`. Of two workers doing this at once, the first link wins; the other
    drops its own (empty) schema and joins the winner's batch."""
    mine = secrets.token_hex(8)
    schema = schema_of(mine)
    where = f"{redact(url)} (batch {mine})"
    db = PgConnection.connect(url, schema=None)
    try:
        db.execute(f"CREATE SCHEMA {schema}")
        db.execute(f"SET search_path TO {schema}")
        _migrate(db, schema, where, now)
        tx = Transaction(db, where, disk=None)
        with tx:
            db.execute("INSERT INTO meta VALUES ('batch_id', ?)", (mine,))
        winner = _publish_id(out_dir, mine)
        if winner != mine:
            db.execute(f"DROP SCHEMA {schema} CASCADE")
        return winner
    finally:
        db.close()


def _publish_id(out_dir: Path, batch_id: str) -> str:
    """Write `DIR/batch.id` unless another worker did first; the id that holds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / BATCH_ID_FILE
    temp = out_dir / f".{BATCH_ID_FILE}.{batch_id}"
    temp.write_text(batch_id + "\n", encoding="utf-8")
    try:
        os.link(temp, final)  # fails if it exists: atomic, on NFS too
    except FileExistsError:
        pass
    finally:
        temp.unlink(missing_ok=True)
    found = _read_id(out_dir)
    if found is None:
        raise StateError(f"{final} is empty or unreadable: remove it only if no run used it")
    return found


def _read_id(out_dir: Path) -> str | None:
    try:
        text = (out_dir / BATCH_ID_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def _schema_exists(db: PgConnection, schema: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM information_schema.schemata WHERE schema_name = ?", (schema,)
    ).fetchone()
    return row is not None


def _refuse_sqlite_folder(out_dir: Path) -> None:
    path = out_dir / STATE_FILE
    if path.exists() and path.stat().st_size > 0:
        raise StateError(
            f"{out_dir} holds a SQLite state ({STATE_FILE}): its batch's state is there, "
            "and moving a batch between backends is not supported. Run without --state "
            "to continue it, or use a new --out folder for a PostgreSQL batch. Nothing "
            "was sent."
        )


def _refuse_traces(out_dir: Path, url: str) -> None:
    traces = [name for name in _RUN_TRACES if _nonempty(out_dir / name)]
    if traces:
        raise StateError(
            f"{out_dir} holds the {', '.join(traces)} of an earlier run but no "
            f"{BATCH_ID_FILE}: starting a new batch in {redact(url)} here could pay for "
            "finished jobs again. Move them aside to start this batch over. Nothing was "
            "sent."
        )
