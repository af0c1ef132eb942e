"""Connects the callback receiver to a running Runner.

The receiver's handler only puts callbacks on a queue (it must answer in milliseconds
and never touch disk or network); one task here drains the queue on the runner's side.
A callback, signed or not, is only a hint that triggers an immediate recordInfo: the
documented signature covers `taskId.timestamp`, not the body, so a replayed signature can
carry any body, and result URLs must come from our own recordInfo. A callback for an
`unknown` job is checked against recordInfo — the task's `param` must carry the
callBackUrl we issued for that job and attempt — and then the job is tracked instead of
being paid for twice.
"""

from __future__ import annotations

import asyncio
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


@dataclass(frozen=True, slots=True)
class _Delivery:
    job_id: str
    attempt: int
    record: TaskRecord


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
    ) -> None:
        self.receiver = receiver
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
        # `verified` is the receiver's business (it refuses unsigned callbacks when a key
        # is set); here every callback is only a hint, so it is not kept.
        del verified
        self._queue.put_nowait(_Delivery(job_id, attempt, record))

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

    async def _handle(self, runner: Runner, item: _Delivery) -> None:
        task_id = item.record.task_id
        if runner.has_flight(task_id):
            runner.poll_now(task_id)  # the body is not trusted: recordInfo says
            return
        job = self.store.get(item.job_id)
        if job is not None and job.state is JobState.SUBMITTING and job.attempt == item.attempt:
            # The callback beat the createTask reply (or the reply is being lost right now).
            # The receiver will not pass it on again, so look again shortly: by then the job
            # is `submitted` (nothing to do) or `unknown` (reconcile below).
            asyncio.get_running_loop().call_later(RECHECK_SECONDS, self._queue.put_nowait, item)
            return
        if job is None or job.state is not JobState.UNKNOWN or job.attempt != item.attempt:
            return  # late, duplicate or out of order: nothing changes
        # The submit reply was lost. Believe the taskId only if the service confirms the
        # task was created with the callback URL we issued for this very job and attempt.
        record = await self.client.get_task(task_id)
        if self.receiver.matches(record.callback_url, item.job_id, item.attempt):
            await runner.adopt_task(item.job_id, item.attempt, task_id)
