"""The callback link's handling of a delivery against the state and the runner's flights."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

from liangxin_batch.core._envelope import TaskRecord, TaskState
from liangxin_batch.run._callback_link import RECHECK_SECONDS, CallbackLink
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._runner import Runner
from liangxin_batch.run._webhook import CallbackReceiver, ReceiverSettings
from liangxin_batch.state._backends import open_state
from tests.runner_harness import in_virtual_time


class FlightsOnly:
    """The runner's side a delivery touches: its flights, and polls asked for."""

    def __init__(self) -> None:
        self.flights: set[str] = set()
        self.polled: list[str] = []

    def has_flight(self, task_id: str) -> bool:
        return task_id in self.flights

    def poll_now(self, task_id: str) -> None:
        self.polled.append(task_id)

    async def accept_signed(self, *args: Any) -> bool:
        return False


def test_a_callback_between_the_taskid_commit_and_its_tracking_is_not_dropped(
    tmp_path: Path,
) -> None:
    """The taskId is committed (on PostgreSQL, on the store's thread) and the flight is
    tracked a moment later on the loop: a callback read in between finds the job
    `submitted` but not yet a flight here. It is looked at again, not thrown away."""
    store = open_state(tmp_path)
    store.upsert_jobs([("j1", 0, "z-image", json.dumps({"prompt": "p"}), "{}", "h")])
    store.begin_attempt("j1", 1)
    store.record_created("j1", 1, "task-1", submitted_at=0.0)
    receiver = CallbackReceiver(ReceiverSettings(public_base="http://cb.test"))
    link = CallbackLink(receiver=receiver, client=cast(LiangXinClient, None), store=store)
    runner = FlightsOnly()

    async def main() -> list[str]:
        consumer = asyncio.ensure_future(link.consume(cast(Runner, runner)))
        link.deliver("j1", 1, TaskRecord("task-1", TaskState.SUCCESS), verified=False)
        await asyncio.sleep(0.01)
        runner.flights.add("task-1")  # the submitter tracks it
        await asyncio.sleep(RECHECK_SECONDS * 3)
        consumer.cancel()
        return runner.polled

    try:
        assert in_virtual_time(main) == ["task-1"]
    finally:
        store.close()
