"""An account's rate limits shared by the workers of a batch (issue 18): one row per
limit in the batch's PostgreSQL schema (`limits`, migration 014). All their SQL is here.

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

import threading

from liangxin_batch.state._pg import PgConnection

__all__ = ["SharedLimits"]

#: One instant per statement (the server's), so its parts agree with each other.
_NOW = "EXTRACT(EPOCH FROM statement_timestamp())"


class SharedLimits:
    """The `limits` rows of one batch, over a connection of their own."""

    def __init__(self, db: PgConnection) -> None:
        self._db = db
        self._lock = threading.Lock()  # one statement at a time on the connection

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
