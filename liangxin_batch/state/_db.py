"""What the store asks of a database connection, whichever backend holds the state.

The store speaks the part of Python's DB-API that stdlib `sqlite3` offers (`execute`,
`executemany`, cursors that iterate and fetch, `in_transaction`) in SQLite's SQL. SQLite
is the embedded default and is used as it is; PostgreSQL (`_pg.PgConnection`) adapts to
the same surface and rewrites the few SQLite spellings the store uses (`_pg_sql`). The
statements no rewrite can carry (triggers, JSON functions) ask `dialect(db)` and say
each backend's own.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol

__all__ = ["Connection", "Cursor", "DatabaseError", "Dialect", "dialect", "lock_of"]

Dialect = Literal["sqlite", "postgres"]

#: What a statement may raise on either backend (PostgreSQL's arrive as sqlite3's
#: subclasses, `_pg`): for callers outside this package, which never import sqlite3.
DatabaseError = sqlite3.Error


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...


def dialect(db: object) -> Dialect:
    """The SQL a connection speaks: a PgConnection says so; anything else is SQLite."""
    found: Dialect = getattr(db, "dialect", "sqlite")
    return found


def lock_of(db: object) -> contextlib.AbstractContextManager[Any]:
    """What a thread holds to use the connection: a PgConnection's lock (the loop and
    the store's thread share it); SQLite's is used from the loop alone, so nothing."""
    lock: contextlib.AbstractContextManager[Any] = getattr(db, "lock", contextlib.nullcontext())
    return lock
