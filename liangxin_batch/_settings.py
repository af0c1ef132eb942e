"""Run settings: keyword-only, with the service's documented limits as defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RunSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    #: createTask: the service accepts 20 per 10 s per account and rejects the rest.
    create_limit: int = 20
    create_window: float = 10.0
    #: Extra seconds on the create window for send->arrival jitter (the service counts
    #: arrivals); None: 2% of the window, at least 50 ms.
    create_margin: float | None = None
    #: recordInfo: 10 per second per key.
    poll_limit: int = 10
    poll_window: float = 1.0
    #: Tasks submitted and not yet finished ("typically 100+" run at once).
    max_in_flight: int = 100
    #: HTTP calls at once; kept well below the client's connection pool.
    max_concurrent_creates: int = 8
    max_concurrent_polls: int = 16
    #: Tries for a create the service provably did not take (500/455/connect failed).
    create_retries: int = 8
    #: The service says to stop polling and investigate after 10–15 minutes.
    image_timeout: float = 900.0
    video_timeout: float = 3600.0
    task_timeout: float | None = None
    #: recordInfo may not know a task for a moment after createTask answered.
    not_found_grace: float = 60.0
    retry_failed: bool = False
    resubmit_unknown: bool = False
    allow_changed: bool = False
    max_credits: float | None = None
    #: Output file names under DIR/outputs/ (see _layout.py); None = {model}/{job_id}.
    layout: str | None = None
    max_file_size: int = 500 * 1024 * 1024
    download_concurrency: int = 4
    #: Multiplies every poll delay: >1 when callbacks do the work and polling is only the
    #: safety net; <1 against the simulator, whose latencies are scaled down.
    poll_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "create_limit",
            "poll_limit",
            "max_in_flight",
            "max_concurrent_creates",
            "max_concurrent_polls",
            "create_retries",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("create_window", "poll_window", "image_timeout", "video_timeout"):
            if not getattr(self, name) > 0:  # `not >` also refuses NaN
                raise ValueError(f"{name} must be positive")
        if self.create_margin is not None and not 0 <= self.create_margin < math.inf:
            raise ValueError("create_margin must be zero or more seconds")
        if self.task_timeout is not None and not 0 < self.task_timeout < math.inf:
            raise ValueError("task_timeout must be a positive number of seconds")

    def timeout_for(self, kind: str) -> float:
        if self.task_timeout is not None:
            return self.task_timeout
        return self.video_timeout if kind == "video" else self.image_timeout
