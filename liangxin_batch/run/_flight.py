"""What the poll scheduler knows of one task in flight, how its end is written to the
state, and the helpers that read a task's generation time from a record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from liangxin_batch.catalog._catalog import Catalog, ModelSpec, estimate_credits
from liangxin_batch.core._envelope import TaskRecord
from liangxin_batch.core._latency import LatencyEstimate
from liangxin_batch.core._schedule import PollSchedule
from liangxin_batch.core._states import Event
from liangxin_batch.state._store import JobRow, StateStore

__all__ = [
    "Flight",
    "generation_seconds",
    "latency_fields",
    "service_seconds",
    "write_outcome",
]


@dataclass
class Flight:
    """What the poller keeps in memory for one submitted task."""

    job: JobRow  # as it was when submitted: its input and ids do not change while in flight
    task_id: str
    attempt: int
    submitted_mono: float
    schedule: PollSchedule
    #: What this run knows of how long tasks of this kind take (shared by the kind).
    estimate: LatencyEstimate
    #: Monotonic time after which a still-running task counts as timed out.
    deadline: float
    polls: int = 0
    #: A callback said this task is done: the poll it triggered counts as a callback finish.
    hinted: bool = False
    #: Answers that said success without readable result URLs.
    garbled: int = 0
    #: The task's age (service seconds) when a poll last saw it still running.
    seen_running_at: float = 0.0

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def model(self) -> str:
        return self.job.model


def latency_fields(spec: ModelSpec) -> tuple[str, ...]:
    """The inputs that change how long a model runs: those that change its price."""
    names = [part for key in spec.price.by_field for part in key.split("+")]
    if spec.price.per_second_field:
        names.append(spec.price.per_second_field)
    return tuple(dict.fromkeys(names))


def service_seconds(record: TaskRecord) -> float | None:
    """How long the service took by its own clock: completeTime - createTime, if it says."""
    done, created = record.complete_time, record.create_time
    if done and created and done >= created:
        return (done - created) / 1000
    return None


def generation_seconds(record: TaskRecord, age: float, scale: float) -> float:
    """The generation time in the service's seconds (scaled like ages), or, where the
    service does not say, how old the task was when we saw it done."""
    seconds = service_seconds(record)
    return age if seconds is None else seconds / scale


def write_outcome(
    store: StateStore,
    flight: Flight,
    event: Event,
    *,
    record: TaskRecord | None,
    finished_by: str | None,
    error_code: str | None,
    error_message: str | None,
    catalog: Catalog,
    wall: float,
) -> None:
    """The task's end, through the one transition, with what its record says: charged
    (or, where the service did not say, estimated) credits, result URLs, times."""
    fields: dict[str, Any] = {"polls": flight.polls}
    if record is not None:
        charged = record.credits_consumed if event is Event.TASK_SUCCEEDED else 0.0
        estimated = None
        if charged is None:  # the service did not say: keep our estimate apart
            spec = catalog.get(flight.model)
            estimated = estimate_credits(spec, flight.job.input) if spec else None
        fields.update(
            generation_seconds=service_seconds(record),
            result_urls=record.result_urls,
            credits=charged,
            credits_estimated=estimated,
            cost_time=record.cost_time,
            completed_at=record.complete_time / 1000 if record.complete_time else wall,
            finished_by=finished_by,
        )
    fields.update(error_code=error_code, error_message=error_message)
    moved = store.transition(
        flight.job_id,
        event,
        message=error_message or f"task {flight.task_id}: {event.value}",
        attempt=flight.attempt,
        task_id=flight.task_id,
        **fields,
    )
    if not moved:  # pragma: no cover - a flight is the only owner of a submitted job
        raise AssertionError(f"{flight.job_id}: {event.value} from {store.get(flight.job_id)}")
