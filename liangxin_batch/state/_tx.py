"""The store's transactions: `BEGIN IMMEDIATE`, nested ones joining the outermost.

Every write lands in one of these, so a full disk is recognised in one place and said
one way (DiskFullError), whichever write hit it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from liangxin_batch.errors import DiskFullError

__all__ = ["Transaction", "disk_full"]


def disk_full(path: Path, err: sqlite3.OperationalError) -> DiskFullError:
    return DiskFullError(
        f"the disk under {path.parent} is full ({err}): free some space, then run the "
        "same command again to continue (everything committed so far is kept)"
    )


class Transaction:
    """Re-entrant: the outermost `with` begins, and commits or rolls back."""

    __slots__ = ("_db", "_depth", "_path")

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path
        self._depth = 0

    def __enter__(self) -> sqlite3.Connection:
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        return self._db

    def __exit__(self, exc_type: object, exc: object, _tb: object) -> None:
        self._depth -= 1
        if self._depth:
            return
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
            raise disk_full(self._path, exc) from None
        if isinstance(exc, sqlite3.OperationalError) and exc_type is None:
            raise exc
