"""What the user sees while a run goes: tqdm bars, and messages that do not tear them.

Events come from the event loop's thread; a small thread redraws the bars once a second
under tqdm's own lock (which `update` and `write` take too), so elapsed time and rates
never freeze between events. Messages go through `tqdm.write` while bars are live, and
always to the `liangxin_batch` logger (the run's `run.log`). Bars start from the state
(a resume shows what is already done) and are closed before the summary is printed.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, NoReturn, Protocol

from tqdm import tqdm

__all__ = ["BarsObserver", "NullObserver", "Observer", "logger", "tell"]

logger = logging.getLogger("liangxin_batch")


class Observer(Protocol):
    def start(self, *, total: int, submitted: int, finished: int, downloaded: int) -> None:
        """The batch's size and how far the state says it already is (a resume)."""

    def submitted(self, job_id: str) -> None: ...
    def taken_back(self, job_id: str) -> None:
        """A submitted job went back to pending to be sent again (its task could not
        fetch its input: an input refresh), so it is not counted as submitted twice."""

    def finished(self, job_id: str, state: str) -> None: ...
    def downloaded(self, job_id: str) -> None: ...
    def uploading(self, path: str, size: int) -> None:
        """A local input file starts uploading (`path` as the manifest wrote it)."""

    def uploaded(self, path: str, size: int) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


def tell(observer: Observer, method: str, *args: Any) -> None:
    """Call one of the Observer methods added since callers began writing their own
    (uploads, `taken_back`): an observer without it is simply not told."""
    found = getattr(observer, method, None)
    if found is not None:
        found(*args)


class NullObserver:
    """No bars; messages only go to the log."""

    def start(self, *, total: int, submitted: int, finished: int, downloaded: int) -> None:
        pass

    def submitted(self, job_id: str) -> None:
        pass

    def taken_back(self, job_id: str) -> None:
        pass

    def finished(self, job_id: str, state: str) -> None:
        pass

    def downloaded(self, job_id: str) -> None:
        pass

    def uploading(self, path: str, size: int) -> None:
        pass

    def uploaded(self, path: str, size: int) -> None:
        pass

    def message(self, text: str) -> None:
        logger.info(text)

    def close(self) -> None:
        pass


class BarsObserver(NullObserver):
    """Three bars: submitted, finished, downloaded; a fourth, uploaded, once a local
    input file is uploaded (its total grows as uploads start). Off when stderr is not a
    terminal."""

    def __init__(self, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bars: list[tqdm[NoReturn]] = []
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self, *, total: int, submitted: int, finished: int, downloaded: int) -> None:
        if not self.enabled:
            return
        labels = ("submitted", "finished ", "downloaded")
        self._bars = [
            tqdm(
                total=total,
                initial=initial,
                desc=label,
                position=i,
                unit="job",
                dynamic_ncols=True,
                leave=True,
                file=sys.stderr,
            )
            for i, (label, initial) in enumerate(
                zip(labels, (submitted, finished, downloaded), strict=True)
            )
        ]
        self._ticker = threading.Thread(
            target=self._refresh_every, args=(1.0,), name="liangxin-bars", daemon=True
        )
        self._ticker.start()

    def submitted(self, job_id: str) -> None:
        if self._bars:
            self._bars[0].update()

    def taken_back(self, job_id: str) -> None:
        if self._bars:
            self._bars[0].update(-1)

    def finished(self, job_id: str, state: str) -> None:
        if self._bars:
            self._bars[1].update()

    def downloaded(self, job_id: str) -> None:
        if self._bars:
            self._bars[2].update()

    def uploading(self, path: str, size: int) -> None:
        if not self._bars:
            return
        if len(self._bars) == 3:  # (tqdm takes its own lock; the ticker sees it next)
            self._bars.append(
                tqdm(
                    total=0,
                    desc="uploaded  ",
                    position=3,
                    unit="file",
                    dynamic_ncols=True,
                    leave=True,
                    file=sys.stderr,
                )
            )
        bar = self._bars[3]
        bar.total = (bar.total or 0) + 1
        bar.refresh()

    def uploaded(self, path: str, size: int) -> None:
        if len(self._bars) > 3:
            self._bars[3].update()

    def message(self, text: str) -> None:
        logger.info(text)
        if self._bars:
            tqdm.write(text, file=sys.stderr)
        elif self.enabled:
            print(text, file=sys.stderr)

    def notice(self, text: str) -> None:
        """A line the user must see (a Ctrl-C): above the bars when they are live, else
        on stderr; and in the log."""
        if self._bars:
            self.message(text)
        else:
            logger.info(text)
            print(text, file=sys.stderr, flush=True)

    def _refresh_every(self, seconds: float) -> None:
        """Redraw the bars on a timer (elapsed time and rates move between events too)."""
        while not self._stop.wait(seconds):
            with tqdm.get_lock():  # type: ignore[no-untyped-call]
                for bar in self._bars:
                    bar.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        for bar in self._bars:
            bar.close()
        self._bars = []
