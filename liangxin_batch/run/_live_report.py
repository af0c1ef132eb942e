"""report.html refreshed while a batch runs (`--report-every`, default 30 s): open it
during a long batch and reload to see what is done so far.

Each refresh makes only the data files of segments that changed since the last one (at
most two segments per refresh, outputs/_gallery.py `LiveReport`), a few hundred jobs at
a time, handing control back to the event loop between those steps: submissions, polls
and downloads go on meanwhile. A refresh that fails (a full disk) is said once and the
run goes on without them (any error: one nobody foresaw is logged too, and never takes
the place of the run's result); the end of the run writes the whole report as always.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.errors import LiangXinBatchError
from liangxin_batch.outputs._gallery import LiveReport, Summary, read_summary
from liangxin_batch.run._progress import Observer
from liangxin_batch.state._backends import open_state
from liangxin_batch.state._store import StateStore

__all__ = ["LiveRefresh", "live_report"]

logger = logging.getLogger("liangxin_batch")


class LiveRefresh:
    """`async with live_report(...) as refresh:` refreshes report.html every
    `settings.report_every` seconds inside the block; `refresh.settle()` afterwards, when
    the end of the run wrote no report, says on the last refreshed page that the batch
    no longer runs."""

    def __init__(
        self, out: Path, store: StateStore, settings: RunSettings, observer: Observer
    ) -> None:
        self.out, self.store, self.settings, self.observer = out, store, settings, observer
        self.live = LiveReport(out, store, max_pixels=settings.max_image_pixels)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveRefresh:
        if self.settings.report_every > 0:
            self._task = asyncio.create_task(self._refresh_forever())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def settle(self) -> None:
        """The page a refresh wrote, written again without "the batch was running"."""
        try:
            self.live.settle()
        except Exception as err:  # the page keeps saying when it was written
            logger.warning("report.html not settled: %s: %s", type(err).__name__, err)

    async def _refresh_forever(self) -> None:
        out, settings, observer, live = self.out, self.settings, self.observer, self.live
        started = time.monotonic()
        while True:
            await asyncio.sleep(settings.report_every)
            longest = 0.0
            try:
                # The summary's index searches grow with the batch (~0.3 s a model at a
                # million jobs): read on a connection of their own, off the event loop.
                summary = await asyncio.to_thread(
                    _read_summary, out, settings.state_url, time.monotonic() - started
                )
                t0 = time.perf_counter()
                for step in live.steps(summary):
                    longest = max(longest, time.perf_counter() - t0)
                    if step is not None:  # input thumbnails: hashing, decoding
                        await asyncio.to_thread(step)
                    else:
                        await asyncio.sleep(0)  # the run's own work goes on between steps
                    t0 = time.perf_counter()
                longest = max(longest, time.perf_counter() - t0)
            except (OSError, LiangXinBatchError) as err:
                observer.message(f"report.html is not refreshed during this run ({err})")
                return
            except Exception as err:  # a fault nobody foresaw must not end the run
                # Said now, not at the run's end in place of its result; the log keeps the
                # traceback (our code's, with no key in it: the key is a header only).
                logger.warning(
                    "report refresh failed: %s: %s", type(err).__name__, err, exc_info=True
                )
                observer.message(
                    f"report.html is not refreshed during this run ({type(err).__name__}: "
                    f"{err}); the end of the run writes it"
                )
                return
            logger.debug("report.html refreshed; longest step %.1f ms", longest * 1000)


def live_report(
    out: Path, store: StateStore, settings: RunSettings, observer: Observer
) -> LiveRefresh:
    """Refresh the report every `settings.report_every` seconds inside this block."""
    return LiveRefresh(out, store, settings, observer)


def _read_summary(out: Path, url: str | None, wall_seconds: float) -> Summary:
    """The summary band, read in a worker thread on a read-only connection (WAL: it
    neither waits for nor blocks the run's writes)."""
    reader = open_state(out, url=url, readonly=True)
    try:
        return read_summary(reader, wall_seconds)
    finally:
        reader.close()
