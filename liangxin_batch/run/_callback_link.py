"""Connects the callback receiver to a running Runner.

The receiver's handler only puts callbacks on a queue (it must answer in milliseconds
and never touch disk or network); one task here drains the queue on the runner's side.
A callback is a hint that triggers an immediate recordInfo: the documented signature
covers `taskId.timestamp`, not the body, so whoever carries a signed callback can swap
its result URLs, and result URLs come from our own recordInfo. That costs one recordInfo
per task, so with callbacks the task rate is bounded by the recordInfo limit.

`trust_signed=True` (opt-in, `--trust-signed-callbacks`) takes a signed, fresh,
never-replayed callback that reports a success with result URLs as it is: no recordInfo
at all, for accounts whose create limit is above their recordInfo limit, accepting that
a party on the callback's path could choose the files (and the charged credits and
times recorded with them, which also feed the learned latencies). Anything else a signed callback
says (a failure, a success without URLs) is still checked: a paid result is never given
up on a body's word. A callback for an
`unknown` job is checked against recordInfo — the task's `param` must carry the
callBackUrl we issued for that job and attempt — and then the job is tracked instead of
being paid for twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from liangxin_batch.core._envelope import TaskRecord
from liangxin_batch.core._states import JobState
from liangxin_batch.errors import LiangXinError
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._runner import Runner
from liangxin_batch.run._webhook import CallbackReceiver
from liangxin_batch.state._store import JobRow, StateStore

__all__ = ["CallbackLink"]

logger = logging.getLogger("liangxin_batch")

#: How often a callback that arrived while its job was still being submitted is looked at
#: again (until the createTask call has an outcome).
RECHECK_SECONDS = 1.0
#: How often a callback for a `submitted` job that is not (yet) a flight here is looked at
#: again: its taskId was committed, and the flight is tracked a moment later.
SUBMITTED_RECHECKS = 3


@dataclass(frozen=True, slots=True)
class _Delivery:
    job_id: str
    attempt: int
    record: TaskRecord
    #: Signed with the HMAC key, fresh and never seen before (the receiver checked).
    signed: bool
    rechecks: int = 0


class CallbackLink:
    """The receiver's CallbackSink, and the runner's `callback_url_for`.

    Made before the runner (whose `callback_url_for` is `url_for`); `consume(runner)`
    drains the callbacks into it for the life of the run.
    """

    def __init__(
        self,
        *,
        receiver: CallbackReceiver,
        client: LiangXinClient,
        store: StateStore,
        trust_signed: bool = False,
    ) -> None:
        self.receiver = receiver
        self.trust_signed = trust_signed
        self.client = client
        self.store = store
        self._expected: set[str] = set()
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        for job in store.iter_jobs([JobState.UNKNOWN, JobState.SUBMITTED]):
            self._expected.add(job.job_id)
        receiver.attach(self)

    # -- the runner's side ------------------------------------------------------------

    def url_for(self, job: JobRow, attempt: int) -> str:
        self._expected.add(job.job_id)
        return self.receiver.url_for(job.job_id, attempt)

    # -- the receiver's side (must not block) -----------------------------------------

    def known_job(self, job_id: str) -> bool:
        return job_id in self._expected

    def deliver(self, job_id: str, attempt: int, record: TaskRecord, *, verified: bool) -> None:
        self._queue.put_nowait(_Delivery(job_id, attempt, record, signed=verified))

    # -- the consumer -----------------------------------------------------------------

    async def consume(self, runner: Runner) -> None:
        """Run for the life of the run (cancel it at the end)."""
        while True:
            item = await self._queue.get()
            try:
                await self._handle(runner, item)
            except LiangXinError as err:
                runner.observer.message(f"{item.job_id}: callback not applied ({err})")
            except Exception:  # one bad delivery must not end callback handling for the run
                logger.exception("callback for %s not applied", item.job_id)

    def _recheck(self, item: _Delivery) -> None:
        asyncio.get_running_loop().call_later(RECHECK_SECONDS, self._queue.put_nowait, item)

    async def _handle(self, runner: Runner, item: _Delivery) -> None:
        task_id = item.record.task_id
        if runner.has_flight(task_id):
            trusted = item.signed and self.trust_signed
            if trusted and await runner.accept_signed(item.job_id, item.attempt, item.record):
                return  # a signed success with its URLs: no recordInfo needed
            runner.poll_now(task_id)  # otherwise the body is a hint: recordInfo says
            return
        job = await self.store.call(self.store.get, item.job_id)
        if job is not None and job.state is JobState.SUBMITTING and job.attempt == item.attempt:
            # The callback beat the createTask reply (or the reply is being lost right now).
            # The receiver will not pass it on again, so look again shortly: by then the job
            # is `submitted` (a flight) or `unknown` (reconcile below).
            self._recheck(item)
            return
        if (
            job is not None
            and job.state is JobState.SUBMITTED
            and job.attempt == item.attempt
            and job.task_id == task_id
            and item.rechecks < SUBMITTED_RECHECKS
        ):
            # Committed while this delivery was on its way; the flight is tracked a moment
            # after the commit (on PostgreSQL the commit is on the store's thread).
            self._recheck(dataclasses.replace(item, rechecks=item.rechecks + 1))
            return
        if job is None or job.state is not JobState.UNKNOWN or job.attempt != item.attempt:
            return  # late, duplicate or out of order: nothing changes
        # The submit reply was lost. Believe the taskId only if the service confirms the
        # task was created with the callback URL we issued for this very job and attempt,
        # asked with the key of the account that sent that attempt (its intent says which).
        record = await self.client.get_task(task_id, account=job.account)
        if self.receiver.matches(record.callback_url, item.job_id, item.attempt):
            await runner.adopt_task(item.job_id, item.attempt, task_id)
