"""The store's transactions: `BEGIN IMMEDIATE`, nested ones joining the outermost.

Every write lands in one of these, so a full disk is recognised in one place and said
one way (DiskFullError), whichever write hit it.

Two durabilities. A durable transaction (the default) commits with `synchronous=FULL`:
the WAL is fsynced, so it survives power loss, not only a killed process. Bookkeeping a
restart re-derives by asking again (a poll's answer, a file on disk) may commit with
`synchronous=NORMAL`: it survives a killed process, and power loss can only lose the
last few of them, and the next durable commit fsyncs them too (one WAL). SQLite lets
the level change only between transactions, so the outermost one decides.

A connection two threads share (PostgreSQL's: the loop and the store's thread) is held
from BEGIN to COMMIT, and a `with` takes the lock before it looks whether a transaction
is open: one thread's statement never joins another's transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from liangxin_batch.errors import DiskFullError
from liangxin_batch.state._db import Connection, lock_of

__all__ = ["Transaction", "disk_full"]


def disk_full(where: str, disk: Path | None, err: sqlite3.OperationalError) -> DiskFullError:
    """`disk`: the folder of a state file; None for a database server's own disk."""
    place = (
        f"the disk under {disk}" if disk is not None else f"the disk of the state database {where}"
    )
    return DiskFullError(
        f"{place} is full ({err}): free some space, then run the "
        "same command again to continue (everything committed so far is kept)"
    )


class Transaction:
    """Re-entrant: the outermost `with` begins, and commits or rolls back."""

    __slots__ = (
        "_asked",
        "_db",
        "_depth",
        "_disk",
        "_durable",
        "_lock",
        "_owner",
        "_synchronous",
        "_where",
    )

    def __init__(self, db: Connection, where: str, *, disk: Path | None) -> None:
        self._db = db
        self._where = where
        self._disk = disk
        self._depth = 0
        self._asked = threading.local()  # what a thread's next `with` asks (`durable`)
        self._durable = True  # what the open transaction is
        self._synchronous = ""  # the connection's level, as last set here
        self._lock: Any = lock_of(db)
        self._owner: int | None = None  # the thread in the open transaction

    def held_here(self) -> bool:
        """This thread is inside a transaction (it must not wait on another thread's)."""
        return self._owner == threading.get_ident()

    def durable(self, durable: bool) -> Transaction:
        """Ask for this durability in the next `with` (see the module docstring)."""
        self._asked.durable = durable
        return self

    def __enter__(self) -> Connection:
        self._lock.__enter__()
        try:
            return self._begin()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def __exit__(self, exc_type: object, exc: object, _tb: object) -> None:
        try:
            self._end(exc_type, exc)
        finally:
            self._lock.__exit__(None, None, None)

    def _begin(self) -> Connection:
        wanted = getattr(self._asked, "durable", True)
        self._asked.durable = True
        if self._depth == 0:
            level = "FULL" if wanted else "NORMAL"
            if level != self._synchronous:
                self._db.execute(f"PRAGMA synchronous={level}")
                self._synchronous = level
            self._durable = wanted
            self._db.execute("BEGIN IMMEDIATE")
            self._owner = threading.get_ident()
        elif wanted and not self._durable:
            raise AssertionError("a durable write inside a bookkeeping transaction")
        self._depth += 1
        return self._db

    def _end(self, exc_type: object, exc: object) -> None:
        self._depth -= 1
        if self._depth:
            return
        self._owner = None
        db = self._db
        if exc_type is None:
            try:
                db.execute("COMMIT")
                return
            except sqlite3.OperationalError as err:
                exc = err
        if db.in_transaction:  # a failed COMMIT may leave it open
            db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            raise disk_full(self._where, self._disk, exc) from None
        if isinstance(exc, sqlite3.OperationalError) and exc_type is None:
            raise exc
