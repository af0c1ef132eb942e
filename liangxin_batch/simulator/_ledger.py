"""What the simulator saw and did, for tests and demos to check afterwards.

Every createTask attempt (with its outcome), every poll, every file served and every
callback becomes one `LedgerEvent`. Reads return copies under a lock, so a test thread
can inspect the ledger while uvicorn serves in another thread.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["CREATED_OUTCOMES", "EventKind", "Ledger", "LedgerEvent", "canonical_job_key"]

EventKind = Literal["create", "poll", "file", "callback", "download_url", "top_up", "upload"]

# createTask outcomes after which a task exists (and is billed).
CREATED_OUTCOMES = frozenset(
    {"created", "lost_reply", "gateway_500", "gateway_502", "duplicate_task_id"}
)


def canonical_job_key(model: str, input: Mapping[str, Any]) -> str:
    """One string per (model, input), independent of key order: duplicates compare equal."""
    return json.dumps(
        {"model": model, "input": input}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """One observed request or action. Fields that do not apply to a kind stay None."""

    kind: EventKind
    at: float  # simulator clock (unix seconds)
    #: create: created/lost_reply/gateway_500/gateway_502/duplicate_task_id (all created) or
    #: 429/402/422/400/500/455/...; poll: state ("success (garbled)") or code;
    #: file: complete/broken/short/error; upload: "ok" or the error code ("400", "401",
    #: "413"); ...
    outcome: str
    task_id: str | None = None
    model: str | None = None
    input: Mapping[str, Any] | None = None  # createTask input as received
    http_status: int | None = None  # what went on the wire (None: nothing did)
    path: str | None = None  # file path, callback URL, or upload's uploadPath/fileName
    sha256: str | None = None  # files and uploads: digest of the whole file
    size: int | None = None  # files and uploads: full size in bytes
    bytes_sent: int | None = None  # files: bytes actually written
    complete: bool | None = None  # files: False for a broken (truncated) serve
    credits: int | None = None  # create: price charged; top_up: amount
    endpoint: str | None = None  # upload: stream | base64 | url
    #: create/poll: the name of the key's account (`SimConfig.key_name`, `SimKey.name`).
    account: str | None = None

    @property
    def created(self) -> bool:
        """True for a createTask attempt that left a task behind."""
        return self.kind == "create" and self.outcome in CREATED_OUTCOMES

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.input is not None:
            data["input"] = dict(self.input)
        return data


class Ledger:
    """Append-only, thread-safe event log with the queries tests need."""

    def __init__(self) -> None:
        self._events: list[LedgerEvent] = []
        self._lock = threading.Lock()

    def record(self, event: LedgerEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[LedgerEvent]:
        """A snapshot copy, in the order things happened."""
        with self._lock:
            return list(self._events)

    def _of(self, kind: EventKind) -> list[LedgerEvent]:
        with self._lock:
            return [e for e in self._events if e.kind == kind]

    def create_attempts(self) -> list[LedgerEvent]:
        """Every authenticated createTask request, whatever its outcome."""
        return self._of("create")

    def creates(self) -> list[LedgerEvent]:
        """createTask attempts that created a task (including lost replies)."""
        return [e for e in self._of("create") if e.created]

    def admitted_create_times(self) -> list[float]:
        """Clock times of createTask requests the rate limiter let through."""
        return [e.at for e in self._of("create") if e.outcome != "429"]

    def create_counts_by_input(self) -> dict[str, int]:
        """Created tasks per canonical (model, input): any value > 1 is a duplicate."""
        counts: Counter[str] = Counter()
        for e in self.creates():
            counts[canonical_job_key(e.model or "", e.input or {})] += 1
        return dict(counts)

    def duplicates(self) -> dict[str, int]:
        """Only the (model, input) keys that were created more than once."""
        return {k: n for k, n in self.create_counts_by_input().items() if n > 1}

    def polls(self) -> list[LedgerEvent]:
        return self._of("poll")

    def files_served(self) -> list[LedgerEvent]:
        return self._of("file")

    def callbacks(self) -> list[LedgerEvent]:
        return self._of("callback")

    def upload_attempts(self) -> list[LedgerEvent]:
        """Every upload request (authenticated or not), whatever its outcome."""
        return self._of("upload")

    def uploads(self) -> list[LedgerEvent]:
        """Uploads that stored a file (outcome "ok"), in order."""
        return [e for e in self._of("upload") if e.outcome == "ok"]

    def upload_counts_by_sha256(self) -> dict[str, int]:
        """Stored uploads per sha256 of their bytes: any value > 1 is the same bytes
        uploaded again (a refresh, or a wasted upload)."""
        return dict(Counter(e.sha256 or "" for e in self.uploads()))

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.events]
