"""What a run did: counts by state, credits, polls, callbacks, and the exit code they mean."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_STOPPED", "RunSummary"]

#: What a run's outcome means as an exit code (the CLI's table of errors adds 2 and 3).
EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_STOPPED = 3
EXIT_INTERRUPTED = 130


@dataclass
class RunSummary:
    #: Jobs per status, in the reports' words (`REPORT_STATUSES`: `succeeded` means
    #: generated and files verified, `downloading` generated and not on disk yet), as
    #: results.csv and `read_status` say them.
    counts: dict[str, int]
    #: Credits charged for the batch's generations that succeeded (estimates included
    #: where the service did not say; `credits_estimated` is that part). Jobs no longer
    #: in the manifest are not in it: `removed_credits`.
    credits: float
    wall_seconds: float
    stopped_reason: str | None = None
    interrupted: bool = False
    unknown_jobs: list[str] = field(default_factory=list)
    polls: int = 0
    tasks_finished: int = 0  # in this run
    finished_by_callback: int = 0  # in this run
    removed_jobs: int = 0  # in the state but no longer in the manifest: kept, not counted
    #: What those removed jobs were charged: apart from `credits`, never in it.
    removed_credits: float = 0.0
    callbacks_received: int = 0
    credits_estimated: float = 0.0
    #: Local input files uploaded in this run (a file uploaded again before its expiry,
    #: or after a fetch failure, counts again), and their bytes.
    uploads: int = 0
    upload_bytes: int = 0
    #: Accounts (by name, never by key) that ran out of credits (402) in this run.
    accounts_to_top_up: list[str] = field(default_factory=list)
    #: Tasks in flight whose creating account is not among this run's: not polled, by
    #: the name of that account.
    accounts_missing: dict[str, int] = field(default_factory=dict)

    #: Whether the run downloads outputs; without, a generated job is counted `succeeded`
    #: (see `report_counts`).
    downloads: bool = False
    #: False when an interrupted big run left results.csv and report.html as they were.
    reports_written: bool = True
    #: Workers of the same batch still at work when this one ended (a shared state):
    #: the last of them writes results.csv and report.html.
    other_workers: int = 0

    @property
    def succeeded(self) -> int:
        return self.counts.get("succeeded", 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.stopped_reason:
            return EXIT_STOPPED
        return EXIT_OK if self.succeeded == self.total else EXIT_INCOMPLETE
