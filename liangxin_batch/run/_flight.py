"""The tasks the poll scheduler follows, and what it has learned of their kinds.

A `Flight` per task created and not finished, keyed by taskId (`FlightBook`); a
`LatencyEstimate` per kind (model + the inputs that price it). From these comes the
in-flight count the submitter waits on: each task counts by the chance, from a
Kaplan-Meier curve of its kind, that it is still running at the service. Also: how a
task's end is written to the state, and a task's generation time from its record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from liangxin_batch.catalog._catalog import Catalog, ModelSpec, estimate_credits
from liangxin_batch.core._accounts import DEFAULT_ACCOUNT
from liangxin_batch.core._envelope import TaskRecord
from liangxin_batch.core._latency import LatencyBook, LatencyEstimate, SurvivalCurve, kind_key
from liangxin_batch.core._schedule import PollSchedule
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import Event
from liangxin_batch.state._store import JobRow, StateStore

__all__ = [
    "RUNNING_REFRESH",
    "Flight",
    "FlightBook",
    "generation_seconds",
    "latency_fields",
    "service_seconds",
    "write_outcome",
]


#: How stale (service seconds of age) the in-flight count may be: generations take
#: seconds, and the count only decides whether one more create may go now.
RUNNING_REFRESH = 0.05


@dataclass
class Flight:
    """What the poller keeps in memory for one submitted task."""

    job: JobRow  # as it was when submitted: its input and ids do not change while in flight
    task_id: str
    attempt: int
    submitted_mono: float
    schedule: PollSchedule
    #: Monotonic time after which a still-running task counts as timed out.
    deadline: float
    polls: int = 0
    #: A callback said this task is done: the poll it triggered counts as a callback finish.
    hinted: bool = False
    #: Answers that said success without readable result URLs.
    garbled: int = 0
    #: The task's age (service seconds) when a poll last saw it still running.
    seen_running_at: float = 0.0
    #: The account whose key created the task: the only key it is asked about with.
    account: str = DEFAULT_ACCOUNT

    @property
    def estimate(self) -> LatencyEstimate:
        """What this run knows of how long tasks of this kind take (shared by the kind)."""
        return self.schedule.estimate

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


class FlightBook:
    def __init__(
        self,
        *,
        catalog: Catalog,
        settings: RunSettings,
        stretch: float = 1.0,
    ) -> None:
        self._catalog = catalog
        self._settings = settings
        self._latencies = LatencyBook()
        self._stretch = stretch
        self._flights: dict[str, Flight] = {}
        #: The last walk of `expected_running`: (when, total), and what each flight
        #: counted in it. Between walks a new flight counts whole and a finished one
        #: takes back what it counted (at the cap the submitter asks once per create:
        #: a walk each time cost O(in flight) per job).
        self._running: tuple[float, float] | None = None
        self._counted: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._flights

    def __iter__(self) -> Iterator[Flight]:
        return iter(list(self._flights.values()))

    def get(self, task_id: str) -> Flight | None:
        return self._flights.get(task_id)

    def remove(self, task_id: str) -> None:
        del self._flights[task_id]
        if self._running is not None:
            at, total = self._running
            self._running = at, total - self._counted.pop(task_id, 1.0)

    def track(
        self,
        job: JobRow,
        task_id: str,
        *,
        attempt: int,
        submitted_mono: float,
        spec: ModelSpec | None = None,
        last_wave: bool = False,
        account: str | None = None,
    ) -> Flight:
        """Follow a task from now on (its first poll is not queued yet); `account`: the
        one that created it (default: the job row's)."""
        spec = spec or self._catalog.get(job.model)
        estimate = self.estimate_for(job.model, job.input, spec)
        kind = spec.kind if spec else "image"
        flight = Flight(
            job=job,
            task_id=task_id,
            attempt=attempt,
            submitted_mono=submitted_mono,
            schedule=PollSchedule(
                estimate=estimate,
                scale=self._settings.poll_scale,
                stretch=self._stretch,
                explorer=estimate.take_explorer(),
                last_wave=last_wave,
            ),
            deadline=submitted_mono + self._settings.timeout_for(kind),
            account=account or job.account or DEFAULT_ACCOUNT,
        )
        self._flights[task_id] = flight
        if self._running is not None:
            at, total = self._running
            self._running = at, total + 1.0
            self._counted.pop(task_id, None)
        return flight

    def estimate_for(
        self, model: str, values: Mapping[str, Any], spec: ModelSpec | None = None
    ) -> LatencyEstimate:
        """The latency estimate of this kind of task (model + the inputs that price it)."""
        spec = spec or self._catalog.get(model)
        if spec is None:
            return self._latencies.estimate(model, 30.0)
        fields = latency_fields(spec)
        return self._latencies.estimate(kind_key(model, values, fields), spec.typical_seconds)

    def age(self, flight: Flight, now: float) -> float:
        """How long the task has run, in the service's seconds."""
        return (now - flight.submitted_mono) / self._settings.poll_scale

    def expected_running(self, now: float) -> float:
        """Tasks we follow that are plausibly still running at the service: each counts
        by the chance, from its kind's survival curve, that it has not finished.

        Walked again once the tasks have aged `RUNNING_REFRESH` service seconds since the
        last walk; in between, kept current by what was added and removed."""
        if self._running is not None:
            at, total = self._running
            if 0.0 <= now - at < RUNNING_REFRESH * self._settings.poll_scale:
                return total
        by_kind: dict[int, list[tuple[Flight, float]]] = {}
        counted: dict[str, float] = {}
        for flight in self._flights.values():
            if not flight.estimate.learned:
                counted[flight.task_id] = 1.0  # nothing finished of its kind yet: whole
            else:
                by_kind.setdefault(id(flight.estimate), []).append((flight, self.age(flight, now)))
        for group in by_kind.values():
            estimate = group[0][0].estimate
            curve = SurvivalCurve(estimate.finished_times(), (age for _, age in group))
            for f, age in group:
                counted[f.task_id] = curve.chance(age, seen_running_at=f.seen_running_at)
        total = sum(counted.values())
        self._running, self._counted = (now, total), counted
        return total
