"""`status DIR`: what a state file says, read-only, safe while a run is writing it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from liangxin_batch.core._states import report_counts
from liangxin_batch.state._backends import missing_state, open_state
from liangxin_batch.state._store import STATE_FILE

__all__ = ["StatusReport", "credits_line", "format_status", "read_status", "removed_line"]


def credits_line(total: float, estimated: float, when: str = "") -> str:
    """ "credits charged", and which part of it is our estimate (the service did not say)."""
    line = f"credits charged{' ' + when if when else ''}: {total:,.1f}"
    if estimated:
        line += f" (of which estimated: {estimated:,.1f}; the service did not report them)"
    return line


def removed_line(jobs: int, credits: float) -> str:
    """The jobs that left the manifest, said apart from the batch's counts and credits."""
    return (
        f"{jobs} job{'' if jobs == 1 else 's'} no longer in the manifest "
        f"({credits:,.1f} credits): kept, not counted above"
    )


#: State meta: the accounts the last run found out of credits, by name, comma-separated.
TOP_UP_KEY = "accounts_to_top_up"


@dataclass
class StatusReport:
    path: Path | str  # the state file, or the database and batch
    #: Jobs per status in the reports' words (`REPORT_STATUSES`), like results.csv.
    by_state: dict[str, int]
    by_model: dict[str, dict[str, int]]
    oldest_in_flight: list[tuple[str, str, float]] = field(default_factory=list)
    recent_errors: list[tuple[float, str | None, str, str]] = field(default_factory=list)
    credits: float = 0.0
    credits_estimated: float = 0.0
    finished_by: dict[str, int] = field(default_factory=dict)
    manifest: str | None = None
    #: Jobs in the state no longer in the manifest, and their credits: kept, and never
    #: in the counts or credits above (as in a run's summary and the report).
    removed_jobs: int = 0
    removed_credits: float = 0.0
    #: Accounts (by name) the last run found out of credits (402).
    accounts_to_top_up: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


def read_status(
    out_dir: Path | str, *, now: float | None = None, state_url: str | None = None
) -> StatusReport:
    """`state_url`: the batch's PostgreSQL database (None: DIR/state.db)."""
    out_dir = Path(out_dir)
    path = out_dir / STATE_FILE
    if state_url is None and not path.exists():
        raise missing_state(out_dir)
    now = time.time() if now is None else now
    store = open_state(out_dir, url=state_url, readonly=True)
    with contextlib.closing(store), store.reading():
        credits = store.credits(in_manifest=True)
        removed = store.credits(in_manifest=False)
        return StatusReport(
            path=path if state_url is None else store.where,
            # The reports' words (what results.csv says), not the state file's. A state
            # does not record how its runs were driven; `run` and `run_batch` always
            # download, so a generated job without its files is `downloading`.
            by_state=report_counts(store.counts(in_manifest=True)),
            by_model={
                m: report_counts(c) for m, c in store.counts_by_model(in_manifest=True).items()
            },
            oldest_in_flight=[
                (job_id, task_id, now - (at or now))
                for job_id, task_id, at in store.oldest_in_flight()
            ],
            recent_errors=store.recent_problems(),
            credits=credits.total,
            credits_estimated=credits.estimated,
            finished_by=store.finished_by_counts(),
            manifest=store.get_meta("manifest"),
            removed_jobs=store.removed_count(),
            removed_credits=removed.total,
            accounts_to_top_up=[a for a in (store.get_meta(TOP_UP_KEY) or "").split(",") if a],
        )


#: The order `status` lists them in: finished first, then work in flight, then problems.
_ORDER = (
    "succeeded",
    "downloading",
    "submitted",
    "submitting",
    "pending",
    "failed",
    "timed_out",
    "unknown",
    "download_failed",
)


def format_status(report: StatusReport) -> str:
    lines = [f"{report.path}  ({report.total} jobs; manifest {report.manifest or '?'})"]
    states = [s for s in _ORDER if report.by_state.get(s)]
    lines.append("  " + "  ".join(f"{s}: {report.by_state[s]}" for s in states))
    lines.append("by model:")
    for model, counts in sorted(report.by_model.items()):
        parts = ", ".join(f"{s} {counts[s]}" for s in _ORDER if counts.get(s))
        lines.append(f"  {model}: {parts}")
    lines.append(credits_line(report.credits, report.credits_estimated, "so far"))
    if report.removed_jobs:
        lines.append(removed_line(report.removed_jobs, report.removed_credits))
    if report.accounts_to_top_up:
        lines.append("accounts out of credits (top up): " + ", ".join(report.accounts_to_top_up))
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
