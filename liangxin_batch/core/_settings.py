"""Run settings: keyword-only, with the service's documented limits as defaults."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from liangxin_batch.core._uploads import DEFAULT_UPLOAD_LIFETIME, DEFAULT_UPLOAD_MARGIN
from liangxin_batch.errors import ConfigError

__all__ = ["UPLOAD_METHODS", "RunSettings", "parse_duration", "parse_size"]

#: How a local file is sent to the upload host: multipart streamed from disk (any size,
#: flat memory), or a JSON body of base64 (the whole file in memory: small files only).
UPLOAD_METHODS = ("stream", "base64")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    #: createTask: the service accepts 20 per 10 s per account and rejects the rest.
    create_limit: int = 20
    create_window: float = 10.0
    #: Extra seconds on the create window for send->arrival jitter (the service counts
    #: arrivals); None: 1% of the window, at least 50 ms. An isolated 429 doubles it.
    create_margin: float | None = None
    #: createTask admissions allowed back to back; the rest are paced evenly over the
    #: window, so a kill at any instant finds at most a couple of POSTs on the wire.
    create_burst: int = 2
    #: recordInfo: 10 per second per key.
    poll_limit: int = 10
    poll_window: float = 1.0
    #: Tasks running at the service at once ("typically 100+" per account), counted as
    #: expected from the learned latencies: a task past its kind's usual time counts by
    #: the chance it is still running, so results not yet polled do not hold submission
    #: back. The service may briefly run a few more. At most 3x this are followed at once.
    max_in_flight: int = 100
    #: createTask POSTs in progress at once, at most: two, more only while the measured
    #: round trip needs them to keep the create rate (each is one a crash could leave
    #: `unknown`). Polls in progress at once. Both well below the connection pool.
    max_concurrent_creates: int = 8
    max_concurrent_polls: int = 16
    #: Tries for a create the service provably did not take (500/455/connect failed);
    #: then that job fails with its last error and the others go on.
    create_retries: int = 8
    #: This many jobs in a row ending alike at createTask (retries used up, or parked
    #: unknown) stop submission: the fault is not the jobs'.
    stop_after_alike: int = 5
    #: Idempotent calls (recordInfo outside polling, credit, download-url): tries and
    #: the total time they may take.
    call_retries: int = 4
    call_retry_timeout: float = 60.0
    #: Finished tasks whose files are not on disk yet; the submitter waits while the
    #: queue is full, so a slow file host slows submission instead of letting URLs expire.
    max_download_backlog: int = 32
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
    #: Also write a copy of each output image with its prompt and parameters inside
    #: (PNG text chunk, JPEG/WebP EXIF UserComment) under DIR/with-metadata/; the
    #: originals are never rewritten (outputs/_embed.py).
    embed_metadata: bool = False
    max_file_size: int = 500 * 1024 * 1024
    #: Downloads stop (the run ends, exit 3) rather than leave less than this many bytes
    #: free on the disk under DIR: the state's own commits, a taskId just paid for above
    #: all, must always find room.
    min_free_disk: int = 50 * 1024 * 1024
    download_concurrency: int = 4
    #: A file moving fewer than `stall_bytes` in `stall_window` seconds is stalled; every
    #: file must finish within 120 s plus its size at 100 KB/s (see `DownloadLimits`).
    stall_bytes: int = 10_000
    stall_window: float = 30.0
    min_download_rate: int = 100_000
    #: Images over this many pixels get no thumbnail and are verified without a full
    #: decode (a 10,000 x 10,000 PNG takes ~400 MB to decode).
    max_image_pixels: int = 40_000_000
    #: results.csv: prefix formula-like cells with ' (see `export`).
    csv_safe: bool = False
    #: Seconds between refreshes of report.html while a run goes on (its changed data
    #: files only, a few hundred jobs per turn of the event loop); 0: only at the end.
    report_every: float = 30.0
    #: Where the batch's state lives: None for DIR/state.db (SQLite); a postgresql://
    #: URL puts it in that database (state/_backends.py), where many batches can live.
    #: Not in the settings' repr: it may hold a password.
    state_url: str | None = field(default=None, repr=False)
    #: Workers of a shared batch (state_url): how long a worker's jobs stay its own
    #: without a renewal (renewed every third of it), and how many pending jobs it
    #: claims at a time.
    worker_lease: float = 60.0
    claim_size: int = 20
    #: Our seconds per second of the service: below 1 against a simulator whose latencies
    #: and windows are scaled down (every poll delay and learned time is scaled by it).
    poll_scale: float = 1.0
    #: Local input files (core/_uploads.py): how long an upload serves when the answer
    #: gives no expiry, and how much of that must be left for a createTask to use it
    #: (at most half the lifetime, so a fresh upload is always usable).
    upload_lifetime: float = DEFAULT_UPLOAD_LIFETIME
    upload_margin: float = DEFAULT_UPLOAD_MARGIN
    #: Uploads in progress at once, and their own rate (never createTask's places).
    upload_concurrency: int = 4
    upload_limit: int = 10
    upload_window: float = 1.0
    upload_method: str = "stream"
    #: Uploads are idempotent (named by content): tries of one upload (5xx, timeouts,
    #: dropped connections) and the total time they may take, with jittered backoff.
    upload_retries: int = 5
    upload_retry_timeout: float = 300.0

    def __post_init__(self) -> None:
        for name in (
            "create_limit",
            "poll_limit",
            "max_in_flight",
            "max_concurrent_creates",
            "max_concurrent_polls",
            "create_retries",
            "create_burst",
            "stop_after_alike",
            "call_retries",
            "max_download_backlog",
            "upload_concurrency",
            "upload_limit",
            "upload_retries",
            "claim_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "create_window",
            "poll_window",
            "image_timeout",
            "video_timeout",
            "upload_window",
            "upload_lifetime",
            "upload_retry_timeout",
        ):
            if not getattr(self, name) > 0:  # `not >` also refuses NaN
                raise ValueError(f"{name} must be positive")
        if self.create_margin is not None and not 0 <= self.create_margin < math.inf:
            raise ValueError("create_margin must be zero or more seconds")
        if not (self.report_every == 0 or 1 <= self.report_every < math.inf):
            raise ValueError(
                "report_every must be 0 (only at the end) or at least 1 second (each "
                "refresh rewrites report.html)"
            )
        if not 3 <= self.worker_lease < math.inf:
            raise ValueError("worker_lease must be at least 3 seconds (renewed every third)")
        if self.min_free_disk < 0:
            raise ValueError("min_free_disk must be zero or more bytes")
        if not 0 < self.poll_scale < math.inf:
            raise ValueError("poll_scale must be a positive, finite factor")
        if self.task_timeout is not None and not 0 < self.task_timeout < math.inf:
            raise ValueError("task_timeout must be a positive number of seconds")
        if not 0 <= self.upload_margin <= self.upload_lifetime / 2:
            raise ValueError(
                f"--upload-margin ({self.upload_margin:g}s) must be zero or more and at most "
                f"half of --upload-lifetime ({self.upload_lifetime:g}s): a URL uploaded just "
                "now must be fresh enough to use"
            )
        if self.upload_method not in UPLOAD_METHODS:
            raise ValueError(f"upload_method must be one of {', '.join(UPLOAD_METHODS)}")

    def timeout_for(self, kind: str) -> float:
        if self.task_timeout is not None:
            return self.task_timeout
        return self.video_timeout if kind == "video" else self.image_timeout


_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str, *, flag: str = "--max-file-size", minimum: int = 1) -> int:
    """A size flag: "500MB", "2GiB", "1048576"; ConfigError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if match is None or match[2] not in _UNITS or float(match[1]) * _UNITS[match[2]] < minimum:
        raise ConfigError(f"{flag}: not a size like 500MB or 2GiB; got {text!r}")
    return int(float(match[1]) * _UNITS[match[2]])


_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, *, flag: str) -> float:
    """A duration flag: "24h", "90m", "3d", "45s", "3600" (seconds); ConfigError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if match is None or match[2] not in _DURATION_UNITS:
        raise ConfigError(f"{flag}: expected a duration like 24h, 90m or 3600s, got {text!r}")
    return float(match[1]) * _DURATION_UNITS[match[2]]
