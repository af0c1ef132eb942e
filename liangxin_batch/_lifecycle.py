"""Job states and the pure decisions about them. No I/O.

```
pending ──> submitting ──> submitted ──> succeeded ──> done
   ^            │  │  │          │  └──> failed / timed_out
   └────────────┘  │  └> failed (400/422: the service refused this input)
 (not created:     └──> unknown  (the POST may have reached the service: never
  429/455/500,                    resubmitted unless the user says so)
  connect failed, or the batch stopped on 401/402/433/505)
```
`succeeded` means generation succeeded; `done` means its files are on disk and verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from ._errors import APIError, LiangXinError, NotSentError, RateLimitedError

__all__ = [
    "CreateDecision",
    "CreateVerdict",
    "JobState",
    "decide_create_failure",
    "refetch_only",
    "retry_states",
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


FINAL_STATES = frozenset(
    {JobState.DONE, JobState.FAILED, JobState.UNKNOWN, JobState.DOWNLOAD_FAILED}
)


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


#: Body codes after which we know no task was created (the issue's rule).
_NOT_CREATED = frozenset({429, 455, 500})
#: The service refused this job (bad input, unknown model): no task, and the same request
#: would be refused again.
_REJECTED = frozenset({400, 404, 422})


def decide_create_failure(err: LiangXinError, *, tries: int, window: float) -> CreateDecision:
    """What to do after a createTask failed with `err` on try number `tries` (1-based)."""
    if isinstance(err, APIError):
        if err.fatal:
            return CreateDecision(CreateVerdict.STOP)
        if isinstance(err, RateLimitedError):
            return CreateDecision(
                CreateVerdict.RETRY, delay=err.retry_after or window, throttle=True
            )
        if err.api_code in _NOT_CREATED:
            return CreateDecision(CreateVerdict.RETRY, delay=err.retry_after or backoff(tries))
        if err.api_code in _REJECTED:
            return CreateDecision(CreateVerdict.REJECT)
        # Anything else (408, 501, a gateway's 502/503/504...) may come after the task was
        # created upstream: treat it like a lost reply, never as safe to send again.
        return CreateDecision(CreateVerdict.UNKNOWN)
    if isinstance(err, NotSentError):
        return CreateDecision(CreateVerdict.RETRY, delay=backoff(tries))
    return CreateDecision(CreateVerdict.UNKNOWN)


def backoff(tries: int, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff without jitter; the limiter spreads callers anyway."""
    return float(min(cap, base * 2 ** max(0, tries - 1)))


def retry_states(*, retry_failed: bool, resubmit_unknown: bool) -> list[JobState]:
    """The states that --retry-failed / --resubmit-unknown send again."""
    states = [JobState.UNKNOWN] if resubmit_unknown else []
    if retry_failed:
        states += [JobState.FAILED, JobState.TIMED_OUT, JobState.DOWNLOAD_FAILED]
    return states


def refetch_only(state: JobState, task_id: str | None, result_urls: object) -> bool:
    """A retried job whose generation was paid for and succeeded: fetch files, no new task."""
    return state is JobState.DOWNLOAD_FAILED and bool(task_id) and bool(result_urls)
