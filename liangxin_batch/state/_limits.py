"""An account's rate limits shared by the workers of every batch in a database (issue
18): one row per limit, named by the account's fingerprint, in a schema of their own
(`liangxin_limits.limits`, made by the first worker that needs it), since the service
counts an account's requests whichever batch sends them: two batches on one key pace
as one. All their SQL is here.

GCRA, as the in-process limiter paces (run/_ratelimit.py): the row keeps the theoretical
arrival time (`tat`) of the next evenly paced admission. A worker reserves the next slot
in ONE statement that advances `tat` by its spacing and returns how long to wait for it,
so the admissions of every worker on every machine are spaced `(window + margin) /
limit` apart whatever their number: at most `limit` in any window, while each request
leaves within `margin` of its slot. Times are the database server's (`clock_timestamp`),
so the machines' clocks never need to agree (`statement_timestamp`: the same instant
in every part of a statement). A 429 pauses the limit for everyone
(`blocked_until`); a request that left late pushes the following slots back by as much.

Its own connection, used from one worker thread (`run/_shared_limiter.py`): a
reservation is a network round trip and never waits on the event loop's thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading

from liangxin_batch.errors import StateError
from liangxin_batch.state._pg import PgConnection

__all__ = ["LIMITS_SCHEMA", "SharedLimits"]

#: The schema every batch's workers share their accounts' limits in.
LIMITS_SCHEMA = "liangxin_limits"

#: GCRA's theoretical arrival time of a limit's next admission, a 429's pause and the
#: last reservation's slot, in the database server's clock (seconds since the epoch);
#: every role may use them (see `SharedLimits.open`).
_MAKE = (
    f"CREATE SCHEMA IF NOT EXISTS {LIMITS_SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {LIMITS_SCHEMA}.limits ("
    " name TEXT PRIMARY KEY,"  # an account's fingerprint, then :create or :poll
    " tat DOUBLE PRECISION NOT NULL,"
    " blocked_until DOUBLE PRECISION NOT NULL,"
    " last_slot DOUBLE PRECISION NOT NULL)",
    f"GRANT USAGE ON SCHEMA {LIMITS_SCHEMA} TO PUBLIC",
    f"GRANT SELECT, INSERT, UPDATE ON {LIMITS_SCHEMA}.limits TO PUBLIC",
)


#: One instant per statement (the server's), so its parts agree with each other.
_NOW = "EXTRACT(EPOCH FROM statement_timestamp())"


def _table_exists(db: PgConnection) -> bool:
    row = db.execute("SELECT to_regclass(?) IS NOT NULL", (f"{LIMITS_SCHEMA}.limits",))
    return bool(row.fetchone()[0])


class SharedLimits:
    """The shared `limits` rows, over a connection of their own."""

    def __init__(self, db: PgConnection) -> None:
        self._db = db
        self._lock = threading.Lock()  # one statement at a time on the connection

    @classmethod
    def open(cls, db: PgConnection) -> SharedLimits:
        """The limits on `db` (a connection of their own). The first worker of a
        database makes their schema and table, under a lock (two workers of two batches
        may both be first: CREATE ... IF NOT EXISTS alone races in PostgreSQL's
        catalog), and lets every role use them: batches of one database may run as
        several roles, and the rows hold only fingerprints and times. StateError, saying
        what to grant, when this role can neither find nor make them."""
        try:
            if not _table_exists(db):
                db.execute("BEGIN")
                try:
                    db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (LIMITS_SCHEMA,))
                    if not _table_exists(db):
                        for statement in _MAKE:
                            db.execute(statement)
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):  # a lost connection: say why
                        db.execute("ROLLBACK")
                    raise
            db.execute(f"SET search_path TO {LIMITS_SCHEMA}")
            db.execute("SELECT 1 FROM limits LIMIT 1").fetchall()  # may this role read it?
        except sqlite3.Error as err:
            raise StateError(
                f"{db.where}: the accounts' shared limits (schema {LIMITS_SCHEMA}) cannot be "
                f"used: {err}. The first batch of a database makes them, which needs CREATE "
                "on the database: grant it to this role, or start one batch as a role that "
                "has it (every role may use them after). Nothing was sent."
            ) from None
        return cls(db)

    def reserve(self, name: str, spacing: float, tolerance: float) -> tuple[float, float, float]:
        """Take the next slot of limit `name`: seconds until it (0: now), and until the
        slot after it (what the next reservation of any worker gets at the earliest);
        and the slot itself, in the server's epoch seconds (what tests compare).
        `tolerance`: how far ahead of its even pace an admission may come (a burst).

        One statement, so no two workers take one slot: the slot is the later of the
        pace (`tat` less the tolerance), now and a 429's pause; `tat` moves one spacing
        past it (SET reads the row as it was; `last_slot` hands the slot to RETURNING)."""
        with self._lock:
            row = self._db.execute(
                "INSERT INTO limits (name, tat, blocked_until, last_slot)"
                f" VALUES (?, {_NOW} + ?, 0, {_NOW}) ON CONFLICT (name) DO UPDATE SET"
                f" last_slot = GREATEST(limits.tat - ?, {_NOW}, limits.blocked_until),"
                f" tat = GREATEST(limits.tat, {_NOW}, limits.blocked_until) + ?"
                f" RETURNING last_slot - {_NOW}, tat - {_NOW}, last_slot",
                (name, spacing, tolerance, spacing),
            ).fetchone()
        return max(0.0, float(row[0])), max(0.0, float(row[1])), float(row[2])

    def block(self, name: str, seconds: float) -> None:
        """Admit nobody for `seconds` from now (a 429's Retry-After, for every worker)."""
        with self._lock:
            self._db.execute(
                "UPDATE limits SET blocked_until = GREATEST(blocked_until, "
                f"{_NOW} + ?) WHERE name = ?",
                (seconds, name),
            )

    def push_back(self, name: str, seconds: float) -> None:
        """A request left `seconds` after its slot: the slots not yet taken move back
        by as much, so no window holds one more than the limit."""
        with self._lock:
            self._db.execute("UPDATE limits SET tat = tat + ? WHERE name = ?", (seconds, name))

    def close(self) -> None:
        # Not under the lock: a reservation stuck on the network must not hold the end
        # of the run (closing the connection ends it).
        self._db.close()
