"""Put a job in a given state for a test, only along the transition table's own paths."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from liangxin_batch.core._states import TRANSITIONS, Event, JobState
from liangxin_batch.state._store import (
    AttemptRow,
    EventRow,
    FileRow,
    JobRow,
    StateStore,
)


def path_to(source: JobState, target: JobState) -> list[Event]:
    """The shortest chain of events from `source` to `target` (BFS over TRANSITIONS)."""
    seen = {source: list[Event]()}
    todo = deque([source])
    while todo:
        here = todo.popleft()
        if here is target:
            return seen[here]
        for a, b, event in TRANSITIONS:
            if a is here and b not in seen:
                seen[b] = [*seen[here], event]
                todo.append(b)
    raise AssertionError(f"no path from {source} to {target}")


def drive(
    store: StateStore,
    job_id: str,
    target: JobState | str,
    *,
    message: str | None = None,
    **fields: Any,
) -> None:
    """Move `job_id` to `target` by legal transitions; the last one sets `fields`."""
    job = store.get(job_id)
    assert job is not None, job_id
    columns = {k: fields.pop(k) for k in ("attempt", "sends") if k in fields}
    events = path_to(job.state, JobState(target))
    attempt = job.attempt
    for i, event in enumerate(events):
        last = i == len(events) - 1
        if event is Event.SUBMIT:
            attempt += 1
        moved = store.transition(
            job_id,
            event,
            attempt=attempt if event is Event.SUBMIT else None,
            message=message if last else None,
            **(fields if last else {}),
        )
        assert moved, (job_id, event)
    if columns or (not events and fields):
        store.update(job_id, **columns, **({} if events else fields))


# -- reading a state the way the tools do: read-only, through the store's API --------------


T = TypeVar("T")


def reading(out: Path) -> StateStore:
    return StateStore(out / "state.db", readonly=True)


def _read(out: Path, query: Callable[[StateStore], T]) -> T:
    """One read of the state in `out`, through a read-only store closed afterwards."""
    with contextlib.closing(reading(out)) as store:
        return query(store)


def jobs_in(out: Path) -> dict[str, JobRow]:
    return _read(out, lambda s: {j.job_id: j for j in s.iter_jobs()})


def counts_in(out: Path) -> dict[str, int]:
    return _read(out, StateStore.counts)


def files_in(out: Path) -> list[FileRow]:
    return _read(out, StateStore.all_files)


def saved(path: str | None) -> str:
    """A file row's path (relative to the output folder), set once the file is saved."""
    assert path is not None, "the file has no path: it was never saved"
    return path


def attempts_in(out: Path) -> list[AttemptRow]:
    return _read(out, StateStore.attempts)


def events_in(out: Path) -> list[EventRow]:
    return _read(out, StateStore.events)
