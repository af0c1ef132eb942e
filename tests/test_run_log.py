"""run.log's lines: the timestamp made once a second reads as the standard one."""

from __future__ import annotations

import logging

from liangxin_batch.run._run_log import _SecondsFormatter

FORMAT = "%(asctime)s %(levelname)s %(message)s"


def test_run_log_lines_read_as_the_standard_formatters() -> None:
    ours, standard = _SecondsFormatter(FORMAT), logging.Formatter(FORMAT)
    for created in (1_796_000_000.001, 1_796_000_000.999, 1_796_000_001.5, 1_796_000_000.25):
        record = logging.LogRecord("liangxin_batch", logging.INFO, "f", 1, "job %s", ("j1",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record), created
