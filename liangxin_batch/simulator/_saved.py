"""A simulator's tasks kept in a file, so a later simulator on the same file carries on.

`run --simulate` starts a simulator for the life of one run; the command printed to
resume it starts another. Without this the second has never heard of the first one's
task ids ("task not found"). With `SimConfig.state_path` every task is appended to a
JSON-lines journal the moment it is created (before the answer leaves), with its whole
timeline (created at, planned duration, fail or not, price), so the next simulator
finds it exactly where the clock puts it: a task whose end passed while nothing ran is
simply finished.

One line per record, each written by a single `os.write` on an O_APPEND descriptor:
a killed process leaves whole lines. A torn last line (a power cut mid-write) has no
newline; it is dropped on load and cut off before the next append. The file holds a
line for the account, then one per task and one per top-up: it grows with the batch,
like the run's own state (no polls, no downloads), and holds no API key (the
simulator's key is a fixed local one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from liangxin_batch.errors import ConfigError

from ._ledger import Ledger, LedgerEvent
from ._tasks import SimTask
from ._uploads import UploadRecord

__all__ = ["SAVED_FILE", "Saved", "TaskJournal", "saved_ledger"]

#: Where `run --simulate` keeps its simulator's tasks, relative to the output folder.
SAVED_FILE = Path(".simulator") / "tasks.jsonl"

_TASK_FIELDS = (
    "task_id", "model", "kind", "body", "callback_url", "base_url", "created_at",
    "duration", "fails", "price", "outputs", "ext", "aspect_ratio",
)  # fmt: skip
#: Written only when they differ from SimTask's defaults (a failed input fetch).
_TASK_EXTRAS = ("fail_code", "fail_msg", "owner")
_DEFAULT_EXTRAS = {f.name: f.default for f in fields(SimTask) if f.name in _TASK_EXTRAS}
_UPLOAD_FIELDS = tuple(f.name for f in fields(UploadRecord))


@dataclass
class Saved:
    """What a journal holds: the account's first settings and everything since."""

    id_salt: str | None = None
    credits: int | None = None
    top_ups: int = 0
    #: Where the latest task was created: the port whose result URLs a client may hold.
    base_url: str | None = None
    tasks: list[SimTask] = field(default_factory=list)
    #: Every upload in order (a later one of the same name replaces an earlier one).
    uploads: list[UploadRecord] = field(default_factory=list)
    #: The ledger's create and upload events, in the order they happened.
    events: list[LedgerEvent] = field(default_factory=list)


def _task(record: dict[str, Any]) -> tuple[SimTask, LedgerEvent]:
    values = {name: record[name] for name in _TASK_FIELDS}
    values.update((name, record[name]) for name in _TASK_EXTRAS if name in record)
    body = values["body"]
    task = SimTask(input=body["input"], **values)
    event = LedgerEvent(
        kind="create",
        at=task.created_at,
        outcome=record["outcome"],
        task_id=task.task_id,
        model=task.model,
        input=dict(task.input),
        http_status=record.get("http_status"),
        credits=task.price,
        account=task.owner,
    )
    return task, event


def _read(path: Path) -> tuple[Saved, int]:
    """What `path` holds, and the length of its whole lines (a torn last one left out).
    Line by line: a big batch's journal is never in memory as one text."""
    saved = Saved()
    whole = 0
    try:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.endswith(b"\n"):
                    break  # torn by a power cut mid-write: never answered, so unknown
                _take(saved, raw, path, number)
                whole += len(raw)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise ConfigError(f"cannot read the simulator's saved tasks {path}: {err}") from None
    return saved, whole


def _take(saved: Saved, raw: bytes, path: Path, number: int) -> None:
    try:
        record = json.loads(raw)
        kind = record["record"]
        if kind == "account":
            saved.id_salt, saved.credits = str(record["id_salt"]), int(record["credits"])
        elif kind == "top_up":
            saved.top_ups += int(record["credits"])
        elif kind == "task":
            task, event = _task(record)
            saved.tasks.append(task)
            saved.events.append(event)
            saved.base_url = task.base_url
        elif kind == "upload":
            upload = UploadRecord(**{name: record[name] for name in _UPLOAD_FIELDS})
            saved.uploads.append(upload)
            saved.events.append(upload_event(upload))
        else:
            raise ValueError(f"unknown record {kind!r}")
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{path}:{number}: the simulator's saved tasks are damaged ({err}); delete "
            f"{path.parent} to start the simulator afresh (its tasks are then unknown)"
        ) from None


class TaskJournal:
    """The append side of a saved-tasks file; `load()` first, then `append_*`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def load(self) -> Saved:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # Another simulator may live on this file (a concurrent `run --simulate` on
            # the same folder starts one before the run lock refuses it): what it appends
            # while this one reads is whole lines, never a torn one to cut.
            alone = _lock(self._fd)
            saved, whole = _read(self.path)
            if alone and os.fstat(self._fd).st_size > whole:
                os.ftruncate(self._fd, whole)  # a torn last line: the next one starts clean
        except BaseException:
            self.close()
            raise
        return saved

    def _append(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise RuntimeError("the saved-tasks journal is not open")
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        written = os.write(self._fd, data)  # one write: a whole line, or ...
        if written != len(data):  # ... a full disk's part of one: take it back
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
            raise OSError(f"{self.path}: only {written} of {len(data)} bytes written")

    def append_account(self, id_salt: str, credits: int) -> None:
        self._append({"record": "account", "id_salt": id_salt, "credits": credits})

    def append_top_up(self, credits: int, at: float) -> None:
        self._append({"record": "top_up", "credits": credits, "at": at})

    def append_upload(self, upload: UploadRecord) -> None:
        self._append({"record": "upload", **upload.to_json()})

    def append_task(self, task: SimTask, outcome: str, http_status: int | None) -> None:
        record: dict[str, Any] = {"record": "task"}
        record.update((name, getattr(task, name)) for name in _TASK_FIELDS)
        extras = {name: getattr(task, name) for name in _TASK_EXTRAS}
        if extras != _DEFAULT_EXTRAS:
            record.update(extras)
        record.update(outcome=outcome, http_status=http_status)
        self._append(record)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock(fd: int) -> bool:
    """Hold the file for this simulator's life (released when `fd` closes): False when
    another one holds it. Where there is no flock (Windows), as if alone."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def upload_event(upload: UploadRecord) -> LedgerEvent:
    """The ledger's event for a stored upload."""
    return LedgerEvent(
        kind="upload",
        at=upload.uploaded_at,
        outcome="ok",
        http_status=200,
        path=upload.file_path,
        sha256=upload.sha256,
        size=upload.size,
        endpoint=upload.endpoint,
    )


def saved_ledger(out_dir: Path | str) -> Ledger:
    """The createTask and stored-upload events a `--simulate` run's simulators made over
    every session of the output folder `out_dir` (from its saved tasks), in order: for
    checks like "no job was created twice" or "each file uploaded once" across a resume."""
    ledger = Ledger()
    for event in _read(Path(out_dir) / SAVED_FILE)[0].events:
        ledger.record(event)
    return ledger
