"""Checks made before a state file is trusted: a damaged, empty or missing state beside
the outputs of an earlier run is refused before anything is sent (starting over there
would pay for the batch again)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from liangxin_batch.errors import StateError

__all__ = ["BATCH_ID_FILE", "refuse_untrusted"]

#: Beside state.db: the id of the batch the folder holds, so a state file copied in from
#: another batch (or an empty one left by a full disk) is recognised before anything is sent.
BATCH_ID_FILE = "batch.id"
#: Things in DIR that only a run leaves: with any of them, a new state is refused.
_RUN_TRACES = ("outputs", "results.csv", "report.html", BATCH_ID_FILE)


def refuse_untrusted(path: Path, out_dir: Path, *, readonly: bool) -> None:
    """StateError (nothing changed) for a damaged state (when opened to write), or an
    empty or missing one in a folder where a run already left something; an empty file
    in a clean folder is removed (a failed first write) so the state starts clean."""
    fresh = not path.exists() or path.stat().st_size == 0
    if fresh and not readonly:
        traces = [name for name in _RUN_TRACES if _nonempty(out_dir / name)]
        if traces:
            what = "empty" if path.exists() else "missing"
            raise StateError(
                f"{path} is {what}, but {out_dir} holds the {', '.join(traces)} of an "
                "earlier run: starting a new state here could pay for finished jobs "
                "again. Restore state.db from a backup (with its -wal file), or move "
                f"{', '.join(traces)} aside to start this batch over. Nothing was sent."
            )
        if path.exists():
            path.unlink()
    if not fresh and not readonly:
        # Only before a run (it may pay): the scan reads every page, seconds at a million
        # jobs, and a reader that meets a bad page gets SQLite's error, having sent nothing.
        _check_integrity(path)


def _nonempty(path: Path) -> bool:
    if path.is_dir():
        return any(True for _ in path.iterdir())
    return path.exists()


def read_only_uri(path: Path) -> str:
    """An SQLite URI that opens `path` read-only. The path is percent-encoded: a folder
    named with `#` or `?` cut a bare URI short (mode=ro lost: SQLite created an empty
    file), and `%41` was read as an escape."""
    return f"file:{quote(str(path.absolute()))}?mode=ro"


def _check_integrity(path: Path) -> None:
    """A damaged state (a bad page, a torn copy) is refused before anything is sent."""
    try:
        db = sqlite3.connect(read_only_uri(path), uri=True, timeout=10.0)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        rows = [(str(err),)]
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        raise StateError(
            f"{path} is damaged ({'; '.join(problems[:3])}). Nothing was sent. Restore it "
            "from a backup, or recover what SQLite can read: sqlite3 state.db '.recover' | "
            "sqlite3 recovered.db, then put recovered.db in its place."
        )
