"""A batch's time is the sum of its sessions: the report shows it and the last session's.

A resumed batch said "wall time 0m 12s" for a run of hours spread over three sessions:
only the last session was counted.
"""

from __future__ import annotations

import json
from pathlib import Path

from liangxin_batch.core._states import JobState
from liangxin_batch.state._store import SessionTimes, StateStore
from tests.state_support import drive
from tests.test_store import rows


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_sessions_add_up_and_a_crashed_one_ends_at_its_last_event(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    store = StateStore.in_dir(tmp_path, wall_clock=clock)
    assert store.session_times() == SessionTimes(total=0.0, count=0, last=None)
    store.upsert_jobs(rows(1))
    store.begin_session()
    clock.now = 1060.0
    store.end_session()
    assert store.session_times() == SessionTimes(total=60.0, count=1, last=60.0)
    # A session that crashed: no end recorded, but its last change says when it stopped.
    clock.now = 2000.0
    store.begin_session()
    clock.now = 2030.0
    drive(store, "j00000", JobState.SUBMITTED, task_id="t-1")
    store.close()
    clock.now = 5000.0  # hours later, the batch is resumed
    again = StateStore.in_dir(tmp_path, wall_clock=clock)
    again.begin_session()
    clock.now = 5010.0
    again.end_session()
    assert again.session_times() == SessionTimes(total=100.0, count=3, last=10.0)
    again.close()


def test_an_open_session_counts_up_to_now_for_readers(tmp_path: Path) -> None:
    clock = Clock(100.0)
    store = StateStore.in_dir(tmp_path, wall_clock=clock)
    store.begin_session()
    clock.now = 130.0
    assert store.session_times() == SessionTimes(total=30.0, count=1, last=30.0)
    store.close()


def test_the_report_shows_the_batch_time_over_sessions(tmp_path: Path) -> None:
    from liangxin_batch.outputs._gallery import write_report_html

    clock = Clock(0.0)
    store = StateStore.in_dir(tmp_path, wall_clock=clock)
    for start, end in ((0.0, 3600.0), (7200.0, 7260.0)):
        clock.now = start
        store.begin_session()
        clock.now = end
        store.end_session()
    html = write_report_html(tmp_path, store, wall_seconds=60.0).read_text("utf-8")
    store.close()
    assert "1h 01m" in html or "61m" in html, "the batch's time: both sessions"
    assert "2 sessions" in html and "last 1m 00s" in html
    meta = json.loads(StateStore.in_dir(tmp_path).get_meta("sessions") or "{}")
    assert meta["count"] == 2


def test_each_run_of_a_batch_is_a_session(tmp_path: Path) -> None:
    from tests.runner_harness import SimEnv, in_virtual_time

    records = [{"id": "a", "model": "z-image", "prompt": "a cat", "aspect_ratio": "1:1"}]

    async def main() -> None:
        env = SimEnv()
        await env.run_library(tmp_path, records)
        await env.run_library(tmp_path, records)  # a resume of a finished batch

    in_virtual_time(main)
    store = StateStore.in_dir(tmp_path, readonly=True)
    assert store.session_times().count == 2
    store.close()
    assert "batch time" in (tmp_path / "report.html").read_text("utf-8")
