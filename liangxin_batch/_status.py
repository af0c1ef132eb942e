"""`status DIR`: what a state file says, read-only, safe while a run is writing it."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import StateError
from ._lifecycle import JobState
from ._report import report_status
from ._store import STATE_FILE, billed_credits

__all__ = ["StatusReport", "format_status", "read_status"]


@dataclass
class StatusReport:
    path: Path
    by_state: dict[str, int]
    by_model: dict[str, dict[str, int]]
    oldest_in_flight: list[tuple[str, str, float]] = field(default_factory=list)
    recent_errors: list[tuple[float, str | None, str, str]] = field(default_factory=list)
    credits: float = 0.0
    finished_by: dict[str, int] = field(default_factory=dict)
    manifest: str | None = None

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


def read_status(out_dir: Path, *, now: float | None = None) -> StatusReport:
    path = out_dir / STATE_FILE
    if not path.exists():
        raise StateError(f"no state file at {path}: is {out_dir} the --out folder of a run?")
    now = time.time() if now is None else now
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as err:
        raise StateError(f"{path}: cannot open: {err}") from None
    try:
        by_state = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        by_model: dict[str, dict[str, int]] = {}
        for model, state, n in db.execute(
            "SELECT model, state, COUNT(*) FROM jobs GROUP BY model, state"
        ):
            by_model.setdefault(model, {})[state] = n
        oldest = [
            (job_id, task_id or "", now - (at or now))
            for job_id, task_id, at in db.execute(
                "SELECT job_id, task_id, submitted_at FROM jobs WHERE state = 'submitted'"
                " ORDER BY submitted_at LIMIT 5"
            )
        ]
        errors = db.execute(
            "SELECT at, job_id, kind, detail FROM events"
            " WHERE kind IN ('failed', 'unknown', 'timed_out', 'pending', 'download_failed')"
            " ORDER BY id DESC LIMIT 5"
        ).fetchall()
        credits = billed_credits(db)
        finished_by = dict(
            db.execute(
                "SELECT finished_by, COUNT(*) FROM jobs WHERE finished_by IS NOT NULL"
                " GROUP BY finished_by"
            ).fetchall()
        )
        row = db.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
    except sqlite3.Error as err:
        raise StateError(f"{path}: cannot read: {err}") from None
    finally:
        db.close()
    return StatusReport(
        path=path,
        by_state=by_state,
        by_model=by_model,
        oldest_in_flight=oldest,
        recent_errors=errors,
        credits=float(credits),
        finished_by=finished_by,
        manifest=row[0] if row else None,
    )


_ORDER = (
    "done",
    "succeeded",
    "submitted",
    "submitting",
    "pending",
    "failed",
    "timed_out",
    "unknown",
    "download_failed",
)


def _label(state: str) -> str:
    """The words of the reports: `succeeded` means generated AND files verified."""
    try:
        return report_status(JobState(state))
    except ValueError:
        return state


def format_status(report: StatusReport) -> str:
    lines = [f"{report.path}  ({report.total} jobs; manifest {report.manifest or '?'})"]
    states = [s for s in _ORDER if report.by_state.get(s)]
    lines.append("  " + "  ".join(f"{_label(s)}: {report.by_state[s]}" for s in states))
    lines.append("by model:")
    for model, counts in sorted(report.by_model.items()):
        parts = ", ".join(f"{_label(s)} {counts[s]}" for s in _ORDER if counts.get(s))
        lines.append(f"  {model}: {parts}")
    lines.append(f"credits used so far: {report.credits:,.1f}")
    if report.finished_by:
        lines.append(
            "finished by: " + ", ".join(f"{k} {v}" for k, v in sorted(report.finished_by.items()))
        )
    if report.oldest_in_flight:
        lines.append("oldest in flight:")
        for flight_id, task_id, age in report.oldest_in_flight:
            lines.append(f"  {flight_id}  task {task_id}  {age:.0f}s")
    if report.recent_errors:
        lines.append("recent problems:")
        for _at, problem_job, kind, detail in report.recent_errors:
            lines.append(f"  {problem_job or '-'} [{kind}] {detail}")
    return "\n".join(lines)
