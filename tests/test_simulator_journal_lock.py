"""A second simulator opened on a live one's saved tasks (a refused concurrent
`run --simulate` on the same --out starts its simulator before the run lock refuses it)
must not cut off tasks the live one journaled while the second was reading the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from liangxin_batch.simulator import SAVED_FILE, ManualClock, SimConfig, _saved, saved_ledger
from liangxin_batch.simulator._core import Simulator
from tests.sim_support import KEY, MODEL

BASE = "http://127.0.0.1:9/"


def _create(sim: Simulator, prompt: str) -> str:
    reply = sim.create(KEY, {"model": MODEL, "input": {"prompt": prompt}}, BASE)
    assert reply.http_status == 200 and reply.code == 200, reply
    task_id: str = reply.data["taskId"]
    return task_id


def test_a_second_simulator_keeps_what_a_live_one_appends_while_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / SAVED_FILE
    clock = ManualClock()
    live = Simulator(SimConfig(id_salt="live", state_path=path), clock=clock)
    first = _create(live, "one")

    real_read = _saved._read
    late: list[str] = []

    def read_then_live_appends(p: Path) -> tuple[_saved.Saved, int]:
        found = real_read(p)
        late.append(_create(live, "two"))  # the live simulator answers a create meanwhile
        return found

    monkeypatch.setattr(_saved, "_read", read_then_live_appends)
    Simulator(SimConfig(id_salt="other", state_path=path), clock=clock)  # the refused run's
    monkeypatch.undo()

    assert len(late) == 1, "the second simulator read the journal (the race was staged)"
    created = [e.task_id for e in saved_ledger(tmp_path).events if e.kind == "create"]
    assert created == [first, *late], "a task the live simulator answered left the journal"
