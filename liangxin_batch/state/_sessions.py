"""How long a batch has run, over all its sessions (a run, a resume, another resume).

Kept in the state's `meta` as one small JSON value: the closed sessions' sum and count,
the last one's length, and the open session's start. A session that crashed never
records its end; the next one closes it at that session's last event, the last moment
it is known to have worked (never at the crash's unknown time, never at the restart).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["SESSIONS_KEY", "SessionTimes", "begun", "ended", "times"]

SESSIONS_KEY = "sessions"


@dataclass(frozen=True)
class SessionTimes:
    #: Seconds over every session, the open one up to now.
    total: float
    count: int
    #: The latest session's seconds (the open one's so far); None before the first.
    last: float | None


def _load(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:  # a hand-edited value: time is not worth refusing a state for
        value = {}
    return value if isinstance(value, dict) else {}


def _closed(doc: dict[str, Any], end: float) -> dict[str, Any]:
    """`doc` with its open session (if any) closed at `end`."""
    start = doc.get("open")
    if not isinstance(start, int | float):
        return doc
    length = max(0.0, end - start)
    return {
        "total": float(doc.get("total", 0.0)) + length,
        "count": int(doc.get("count", 0)) + 1,
        "last": length,
    }


def begun(raw: str | None, now: float, last_event_at: float | None) -> str:
    """The value after a session starts at `now` (a crashed one closed at its last event)."""
    doc = _load(raw)
    start = doc.get("open")
    if isinstance(start, int | float):
        doc = _closed(doc, max(start, last_event_at or start))
    return json.dumps({**doc, "open": now})


def ended(raw: str | None, now: float) -> str:
    return json.dumps(_closed(_load(raw), now))


def times(raw: str | None, now: float) -> SessionTimes:
    """What the value says, an open session counted up to `now` (a reader mid-run)."""
    doc = _closed(_load(raw), now)
    last = doc.get("last")
    return SessionTimes(
        total=float(doc.get("total", 0.0)),
        count=int(doc.get("count", 0)),
        last=float(last) if isinstance(last, int | float) else None,
    )
