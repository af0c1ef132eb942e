"""DIR/run.log: the run's own lines (`logging` of the package), one per event."""

from __future__ import annotations

import logging
import time
from pathlib import Path

__all__ = ["attach_run_log"]


class _SecondsFormatter(logging.Formatter):
    """`%(asctime)s` made once a second: a run writes a few lines per job, and the
    standard formatter's strftime for each is a measurable share of a job's CPU."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


def attach_run_log(out_dir: Path, package: str) -> logging.Handler:
    handler = logging.FileHandler(out_dir / "run.log", encoding="utf-8")
    handler.setFormatter(_SecondsFormatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger(package)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler
