"""RunControl's bookkeeping of the run's spawned calls."""

from __future__ import annotations

import asyncio

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.errors import DiskFullError
from liangxin_batch.run._control import Interrupt, RunControl
from liangxin_batch.run._progress import NullObserver
from tests.virtual_time import run_virtual


def test_a_write_that_failed_as_its_call_was_cancelled_still_stops_for_a_full_disk() -> None:
    """At a stop the spawned calls are cancelled; one whose state write was under way
    unwinds as cancelled once the write ended (store.call), with the write's error as the
    cause. A full disk found that way still stops the run for the disk: the summary says
    so, instead of an ordinary stop."""

    async def main() -> RunControl:
        control = RunControl(settings=RunSettings(), observer=NullObserver(), interrupt=Interrupt())

        async def writing() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError as cancel:
                cancel.__cause__ = DiskFullError("no space left on device")
                raise

        control.spawn(writing())
        await asyncio.sleep(0)
        for task in control.leftover():
            task.cancel()
        await control.settle()
        return control

    control = run_virtual(main)
    assert control.disk_full == "no space left on device"
    assert control.stop_reason is not None
