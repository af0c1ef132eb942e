"""Job states, the one transition table, and the pure decisions about them. No I/O.

```
pending ─submit─> submitting ─created─> submitted ─task_succeeded─> succeeded ─downloaded─> done
  ^                │ │ │ │                │ │ └─ task_timed_out ─> timed_out  │ ^              │
  │  not_created ──┘ │ │ │  task_failed ──┘ └─ task_not_found ─> failed       │ └ output_missing┘
  │                  │ │ └─ create_refused (400/422) ─> failed                └─ download_failed
  │                  │ └─── create_gave_up (its retries used up) ─> failed        ─> download_failed
  │                  └───── create_ambiguous / interrupted_submit ─> unknown
  └── retry (--retry-failed / --resubmit-unknown), content_changed (--allow-changed), and
      input_refresh (failed -> pending, once: a task could not fetch an uploaded input)
```
`succeeded` means generation succeeded (and was billed); `done` means its files are on
disk and verified. The store changes a job's state only through `TRANSITIONS`: each event
has one target state and the states it may start from, and the store checks the
from-state in the same `UPDATE` that writes the new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from liangxin_batch.errors import APIError, LiangXinError, NotSentError, RateLimitedError

__all__ = [
    "BILLED_STATES",
    "FINAL_STATES",
    "KEEP_WHEN_CHANGED",
    "PROBLEM_STATES",
    "RECOVERY_ORDER",
    "REDERIVED_EVENTS",
    "REPORT_LABELS",
    "REPORT_STATUSES",
    "TRANSITIONS",
    "UNFINISHED_STATES",
    "CreateDecision",
    "CreateVerdict",
    "Event",
    "JobState",
    "RecoveryStep",
    "decide_create_failure",
    "may_have_created",
    "recovery_step",
    "refetch_only",
    "report_counts",
    "retry_states",
    "sources_of",
    "target_of",
]


class JobState(StrEnum):
    PENDING = "pending"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    UNKNOWN = "unknown"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    DONE = "done"
    DOWNLOAD_FAILED = "download_failed"

    @property
    def final(self) -> bool:
        """Nothing more happens to it in this run without the user asking."""
        return self in FINAL_STATES


class Event(StrEnum):
    """What happened to a job; each event takes it to exactly one state."""

    SUBMIT = "submit"  # intent committed before the POST leaves
    CREATED = "created"  # the service answered with a taskId
    NOT_CREATED = "not_created"  # provably no task (429/455/500 envelope, not sent, a stop)
    CREATE_GAVE_UP = "create_gave_up"  # the job's own retries are used up; nothing created
    CREATE_REFUSED = "create_refused"  # 400/404/422: this input is refused
    CREATE_AMBIGUOUS = "create_ambiguous"  # the POST may have created a task
    INTERRUPTED_SUBMIT = "interrupted_submit"  # found `submitting` after a crash
    TASK_SUCCEEDED = "task_succeeded"
    TASK_FAILED = "task_failed"
    TASK_TIMED_OUT = "task_timed_out"
    TASK_NOT_FOUND = "task_not_found"
    REPOLL = "repoll"  # a timed-out task is polled again on resume
    RECONCILED = "reconciled"  # an unknown job's task was found (callback + recordInfo)
    DOWNLOADED = "downloaded"
    DOWNLOAD_FAILED = "download_failed"
    OUTPUT_MISSING = "output_missing"  # a done job's file is gone or changed: fetch again
    RETRY_DOWNLOAD = "retry_download"  # --retry-failed on a paid result: fetch only
    RETRY = "retry"  # --retry-failed / --resubmit-unknown: a new task
    CONTENT_CHANGED = "content_changed"  # --allow-changed: the new content starts over
    INPUT_REFRESH = "input_refresh"  # its task could not fetch a local input: upload again


_S = JobState
_E = Event

#: Events a restart re-derives if power loss takes them (the task is polled again, the
#: file on disk checked again): the many per-job bookkeeping commits, written without an
#: fsync of their own. Every other event (an intent to send, a taskId, an `unknown`, a
#: user's retry) is fsynced before the next step.
REDERIVED_EVENTS = frozenset(
    {
        _E.TASK_SUCCEEDED,
        _E.TASK_FAILED,
        _E.TASK_TIMED_OUT,
        _E.DOWNLOADED,
        _E.DOWNLOAD_FAILED,
        _E.OUTPUT_MISSING,
    }
)

#: (from-state, to-state, event): every change of a job's state the code may make.
TRANSITIONS: tuple[tuple[JobState, JobState, Event], ...] = (
    (_S.PENDING, _S.SUBMITTING, _E.SUBMIT),
    (_S.SUBMITTING, _S.SUBMITTED, _E.CREATED),
    (_S.SUBMITTING, _S.PENDING, _E.NOT_CREATED),
    (_S.SUBMITTING, _S.FAILED, _E.CREATE_GAVE_UP),
    (_S.SUBMITTING, _S.FAILED, _E.CREATE_REFUSED),
    (_S.SUBMITTING, _S.UNKNOWN, _E.CREATE_AMBIGUOUS),
    (_S.SUBMITTING, _S.UNKNOWN, _E.INTERRUPTED_SUBMIT),
    (_S.SUBMITTED, _S.SUCCEEDED, _E.TASK_SUCCEEDED),
    (_S.SUBMITTED, _S.FAILED, _E.TASK_FAILED),
    (_S.SUBMITTED, _S.TIMED_OUT, _E.TASK_TIMED_OUT),
    (_S.SUBMITTED, _S.FAILED, _E.TASK_NOT_FOUND),
    (_S.TIMED_OUT, _S.SUBMITTED, _E.REPOLL),
    (_S.UNKNOWN, _S.SUBMITTED, _E.RECONCILED),
    (_S.SUCCEEDED, _S.DONE, _E.DOWNLOADED),
    (_S.SUCCEEDED, _S.DOWNLOAD_FAILED, _E.DOWNLOAD_FAILED),
    (_S.DONE, _S.SUCCEEDED, _E.OUTPUT_MISSING),
    (_S.DOWNLOAD_FAILED, _S.SUCCEEDED, _E.RETRY_DOWNLOAD),
    (_S.FAILED, _S.PENDING, _E.RETRY),
    (_S.TIMED_OUT, _S.PENDING, _E.RETRY),
    (_S.UNKNOWN, _S.PENDING, _E.RETRY),
    (_S.PENDING, _S.PENDING, _E.CONTENT_CHANGED),
    (_S.DONE, _S.PENDING, _E.CONTENT_CHANGED),
    (_S.FAILED, _S.PENDING, _E.CONTENT_CHANGED),
    (_S.DOWNLOAD_FAILED, _S.PENDING, _E.CONTENT_CHANGED),
    # The one automatic resubmission of a failed task: the service could not fetch an
    # uploaded local input (expired, say). A failed task is not billed, so sending the job
    # again with fresh uploads costs nothing twice; once per job (core/_uploads.py).
    (_S.FAILED, _S.PENDING, _E.INPUT_REFRESH),
)


def _index() -> dict[Event, tuple[frozenset[JobState], JobState]]:
    table: dict[Event, tuple[frozenset[JobState], JobState]] = {}
    for source, target, event in TRANSITIONS:
        sources, known = table.get(event, (frozenset(), target))
        if known is not target:
            raise AssertionError(f"event {event} must have one target state")
        table[event] = (sources | {source}, target)
    missing = set(Event) - set(table)
    if missing:
        raise AssertionError(f"events without a transition: {sorted(missing)}")
    return table


_BY_EVENT = _index()


def target_of(event: Event) -> JobState:
    return _BY_EVENT[event][1]


def sources_of(event: Event) -> frozenset[JobState]:
    return _BY_EVENT[event][0]


# -- state sets: each defined once, here ---------------------------------------------

#: Nothing more happens to it in this run without the user asking.
FINAL_STATES = frozenset({_S.DONE, _S.FAILED, _S.UNKNOWN, _S.DOWNLOAD_FAILED})
#: The service charged for a generation that succeeded (files fetched or not).
BILLED_STATES = frozenset({_S.SUCCEEDED, _S.DONE, _S.DOWNLOAD_FAILED})
#: --allow-changed waits for these: something of the old content is live or paid for and
#: only the job's state can reach it (a task in flight or timed out, a result not yet
#: downloaded, an `unknown` submission a callback may still reconcile).
KEEP_WHEN_CHANGED = frozenset({_S.SUBMITTING, _S.SUBMITTED, _S.SUCCEEDED, _S.TIMED_OUT, _S.UNKNOWN})
#: A run still has work to do for these.
UNFINISHED_STATES = frozenset(set(JobState) - FINAL_STATES)
#: Listed as problems by `status` and the report.
PROBLEM_STATES = frozenset({_S.FAILED, _S.UNKNOWN, _S.TIMED_OUT, _S.DOWNLOAD_FAILED})
#: The words of the reports: `succeeded` there means generated AND files verified; the
#: other states keep their names.
REPORT_LABELS: dict[JobState, str] = {
    **{s: s.value for s in JobState},
    _S.DONE: "succeeded",
    _S.SUCCEEDED: "downloading",
}
#: The statuses results.csv and `export --status` use, in the order of the states.
REPORT_STATUSES = tuple(REPORT_LABELS[s] for s in JobState)


def report_counts(counts: Mapping[str, int], *, downloads: bool = True) -> dict[str, int]:
    """Counts by internal state name, in the reports' words (what users see everywhere:
    the run summary, `read_status`, `status`, results.csv). The state file keeps its own
    names; they are translated here, at the public boundary.

    `downloads=False` (a run with nothing to fetch): a generated job is finished, so its
    internal `succeeded` is `succeeded` too, never `downloading`."""
    out: dict[str, int] = {}
    for name, n in counts.items():
        state = JobState(name)
        label = "succeeded" if state is _S.SUCCEEDED and not downloads else REPORT_LABELS[state]
        out[label] = out.get(label, 0) + n
    return out


# -- createTask failures ---------------------------------------------------------------


class CreateVerdict(Enum):
    #: The service provably did not create a task: try again (after `delay`).
    RETRY = "retry"
    #: A task may exist: park the job as `unknown`, never repeat blindly.
    UNKNOWN = "unknown"
    #: The service refused this job's input: fail it, carry on with the others.
    REJECT = "reject"
    #: The whole batch must stop (auth, credits, quota, feature off); the job stays pending.
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class CreateDecision:
    verdict: CreateVerdict
    delay: float = 0.0
    #: A 429: hold every createTask back for `delay`, not just this one.
    throttle: bool = False
    #: Also stop submitting: an answer that is not the service's (no envelope) to a
    #: request that cannot have been right (wrong base URL, a proxy refusing the account).
    stop: bool = False


#: Envelope codes after which we know no task was created (the service's own word).
_NOT_CREATED = frozenset({429, 455, 500})
#: The service refused this job (bad input, unknown model): no task, and the same request
#: would be refused again.
_REJECTED = frozenset({400, 404, 422})


def may_have_created(err: LiangXinError) -> bool:
    """Could the createTask that failed with `err` have created (and billed) a task?

    Only two things prove it did not: an envelope (a JSON answer from the service
    itself) with a code that says so, or a request that provably never left. A bare
    HTTP status (a gateway's HTML 500, an empty 502, a JSON body that is no envelope)
    may come from a proxy that forwarded the request first.
    """
    if isinstance(err, NotSentError):
        return False
    if isinstance(err, APIError) and err.envelope:
        return not (err.api_code in _NOT_CREATED or err.api_code in _REJECTED or err.fatal)
    return True


def decide_create_failure(err: LiangXinError, *, tries: int, window: float) -> CreateDecision:
    """What to do after a createTask failed with `err` on try number `tries` (1-based)."""
    if may_have_created(err):
        if isinstance(err, APIError):
            status = err.http_status or err.api_code
            if status == 429:  # a proxy's limiter: slow down too
                return CreateDecision(
                    CreateVerdict.UNKNOWN, delay=err.retry_after or window, throttle=True
                )
            if err.fatal or (400 <= status < 500 and status != 408):
                return CreateDecision(CreateVerdict.UNKNOWN, stop=True)
        return CreateDecision(CreateVerdict.UNKNOWN)
    if isinstance(err, APIError):
        if err.fatal:
            return CreateDecision(CreateVerdict.STOP)
        if isinstance(err, RateLimitedError):
            return CreateDecision(
                CreateVerdict.RETRY, delay=err.retry_after or window, throttle=True
            )
        if err.api_code in _REJECTED:
            return CreateDecision(CreateVerdict.REJECT)
        return CreateDecision(CreateVerdict.RETRY, delay=err.retry_after or backoff(tries))
    return CreateDecision(CreateVerdict.RETRY, delay=backoff(tries))


def backoff(tries: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff without jitter; the limiter spreads callers anyway."""
    return float(min(cap, base * 2 ** max(0, tries - 1)))


def retry_states(*, retry_failed: bool, resubmit_unknown: bool) -> list[JobState]:
    """The states that --retry-failed / --resubmit-unknown send again."""
    states = [JobState.UNKNOWN] if resubmit_unknown else []
    if retry_failed:
        states += [JobState.FAILED, JobState.TIMED_OUT, JobState.DOWNLOAD_FAILED]
    return states


@dataclass(frozen=True, slots=True)
class RecoveryStep:
    """What a run's start does to one job left by an earlier run (a crash, a Ctrl-C, or
    the user's --retry-failed / --resubmit-unknown)."""

    event: Event
    message: str
    #: The job's error fields after the step (None: cleared); `keep` leaves them.
    error_message: str | None = None
    clear_error: bool = False


#: The states a run's start looks at, in the order it looks (a kill's `submitting` jobs
#: become `unknown` first, so --resubmit-unknown sends them too).
RECOVERY_ORDER = (
    JobState.SUBMITTING,
    JobState.FAILED,
    JobState.TIMED_OUT,
    JobState.UNKNOWN,
    JobState.DOWNLOAD_FAILED,
)


def recovery_step(
    state: JobState,
    *,
    has_task: bool,
    in_manifest: bool,
    retry_failed: bool,
    resubmit_unknown: bool,
) -> RecoveryStep | None:
    """The recovery plan for one job, decided from its state alone (None: nothing to do)."""
    if state is JobState.SUBMITTING:  # the intent was committed, the POST may have left
        return RecoveryStep(
            Event.INTERRUPTED_SUBMIT,
            "interrupted during createTask: parked as unknown",
            error_message="interrupted while submitting; the task may exist",
        )
    again = retry_states(retry_failed=retry_failed, resubmit_unknown=resubmit_unknown)
    if in_manifest and state in again:
        if refetch_only(state):  # paid for and generated: fetch the files again, no more
            return RecoveryStep(Event.RETRY_DOWNLOAD, "retry download", clear_error=True)
        return RecoveryStep(Event.RETRY, f"retry from {state.value}")
    if state is JobState.TIMED_OUT and has_task:  # it may have finished since: poll again
        return RecoveryStep(Event.REPOLL, "polling again")
    return None


def refetch_only(state: JobState) -> bool:
    """A retried job whose generation was paid for and succeeded: fetch files, no new task.

    Its result URLs are read again from recordInfo when they are missing or refused.
    (A download_failed job always has its task: there is no way from it to a new task.)
    """
    return state is JobState.DOWNLOAD_FAILED
