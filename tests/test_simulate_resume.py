"""Issue 15: `run --simulate` is resumable. The printed resume command starts a new
simulator; it must carry on with the old one's tasks (kept in the output folder), so jobs
in flight at the interrupt finish and nothing is created twice. Through the real entry
point, in a subprocess; the moment to interrupt is found by watching the state, with a
deadline, never by sleeping a fixed time."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from liangxin_batch.state._store import JobRow
from tests.cli_support import child_env, cli, wait_for, write_manifest
from tests.state_support import jobs_in

pytestmark = pytest.mark.slow

N_JOBS = 12


def _jobs(out: Path) -> dict[str, JobRow]:
    try:
        return jobs_in(out)
    except Exception:  # the state is not made yet (or not yet whole): nothing to see
        return {}


def test_an_interrupted_simulated_run_resumes_with_its_tasks(tmp_path: Path) -> None:
    ids = write_manifest(tmp_path / "m.csv", N_JOBS, prompt="a kite over dunes, take {i}")
    out = tmp_path / "out"
    # Generations of 2-4 s: tasks are still running when the first Ctrl-C lands.
    cmd = cli(
        "run", str(tmp_path / "m.csv"), "--out", str(out), "--simulate",
        "--sim-latency-scale", "0.5", "--rate", "4/1s", "--quiet",
    )  # fmt: skip
    env = child_env("http://127.0.0.1:9", PYTHONUNBUFFERED="1")
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(
            lambda: sum(1 for j in _jobs(out).values() if j.task_id) >= 2,
            "two tasks created",
            timeout=60.0,
        )
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, stderr.decode()
    assert "Resume with" in stdout.decode()
    before = jobs_in(out)
    in_flight = {j: row.task_id for j, row in before.items() if row.state.value == "submitted"}
    assert in_flight, "the interrupt came after every task had finished"
    assert any(row.state.value == "pending" for row in before.values())

    again = subprocess.run(cmd, env=env, capture_output=True, timeout=180)
    assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()
    assert f"{N_JOBS} succeeded" in again.stdout.decode()
    after = jobs_in(out)
    assert sorted(after) == sorted(ids)
    assert {row.state.value for row in after.values()} == {"done"}
    for job_id, task_id in in_flight.items():  # finished, not created again
        assert after[job_id].task_id == task_id

    # What the simulator saw over both sessions: each job's task created exactly once.
    from liangxin_batch.simulator import saved_ledger

    ledger = saved_ledger(out)
    prompts = Counter(str((e.input or {}).get("prompt")) for e in ledger.creates())
    assert len(prompts) == N_JOBS and set(prompts.values()) == {1}
    assert {e.task_id for e in ledger.creates()} == {row.task_id for row in after.values()}
    assert ledger.duplicates() == {}
