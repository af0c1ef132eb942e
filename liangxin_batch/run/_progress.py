"""What the user sees while a run goes: tqdm bars, and messages that do not tear them.

Everything happens on the event loop's thread, so the bars need no locking. Messages
go through `tqdm.write` while bars are live, and always to the `liangxin_batch` logger
(the run's `run.log`).
"""

from __future__ import annotations

import logging
import sys
from typing import NoReturn, Protocol

from tqdm import tqdm

__all__ = ["BarsObserver", "NullObserver", "Observer", "logger"]

logger = logging.getLogger("liangxin_batch")


class Observer(Protocol):
    def start(self, *, total: int, done: int) -> None: ...
    def submitted(self, job_id: str) -> None: ...
    def finished(self, job_id: str, state: str) -> None: ...
    def downloaded(self, job_id: str) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class NullObserver:
    """No bars; messages only go to the log."""

    def start(self, *, total: int, done: int) -> None:
        pass

    def submitted(self, job_id: str) -> None:
        pass

    def finished(self, job_id: str, state: str) -> None:
        pass

    def downloaded(self, job_id: str) -> None:
        pass

    def message(self, text: str) -> None:
        logger.info(text)

    def close(self) -> None:
        pass


class BarsObserver(NullObserver):
    """Three bars: submitted, finished, downloaded. Off when stderr is not a terminal."""

    def __init__(self, *, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bars: list[tqdm[NoReturn]] = []

    def start(self, *, total: int, done: int) -> None:
        if not self.enabled:
            return
        labels = ("submitted", "finished ", "downloaded")
        self._bars = [
            tqdm(
                total=total,
                initial=done if i else 0,
                desc=label,
                position=i,
                unit="job",
                dynamic_ncols=True,
                leave=True,
                file=sys.stderr,
            )
            for i, label in enumerate(labels)
        ]

    def submitted(self, job_id: str) -> None:
        if self._bars:
            self._bars[0].update()

    def finished(self, job_id: str, state: str) -> None:
        if self._bars:
            self._bars[1].update()

    def downloaded(self, job_id: str) -> None:
        if self._bars:
            self._bars[2].update()

    def message(self, text: str) -> None:
        logger.info(text)
        if self._bars:
            tqdm.write(text, file=sys.stderr)
        elif self.enabled:
            print(text, file=sys.stderr)

    def close(self) -> None:
        for bar in self._bars:
            bar.close()
        self._bars = []
