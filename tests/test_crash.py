"""SIGKILL the CLI at random moments, resume each time, and prove nothing was paid twice.

The run is a real subprocess talking to the simulator over loopback. Time is scaled
(20 creates per 1 s instead of per 10 s, latencies / 50) so the test stays short; the
order of writes is what is under test, not the clock.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from liangxin_batch.core._provenance import sidecar_path
from liangxin_batch.simulator import FaultProfile, SimConfig, create_app, serve_in_thread
from tests import cli_support
from tests.sim_support import sim_of
from tests.state_support import files_in, jobs_in, saved

KEY = "sk-crash-test-0001"
N_JOBS = 80

pytestmark = pytest.mark.slow


def write_manifest(path: Path) -> None:
    cli_support.write_manifest(path, N_JOBS, prefix="c", prompt="crash test prompt {i}")


def write_fast_catalog(path: Path) -> None:
    # The simulator runs at 1/50 of real latency; tell the poll schedule so.
    cli_support.fast_catalog(path.parent, typical_seconds=0.15)


def start_run(manifest: Path, out: Path, base_url: str) -> subprocess.Popen[bytes]:
    env = cli_support.child_env(base_url, KEY)
    catalog = manifest.parent / "fast.yaml"
    cmd = cli_support.cli(
        "--catalog",
        str(catalog),
        "run",
        str(manifest),
        "--out",
        str(out),
        "--rate",
        "20/1s",
        "--poll-rate",
        "10/1s",
        "--quiet",
    )
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def job_states(out: Path) -> dict[str, tuple[str, str | None]]:
    return {j: (job.state.value, job.task_id) for j, job in jobs_in(out).items()}


@pytest.mark.parametrize("lost_reply", [0.0, 0.1])
def test_sigkill_at_random_moments_never_creates_a_job_twice(
    tmp_path: Path, lost_reply: float
) -> None:
    rng = random.Random(42 + int(lost_reply * 100))
    manifest = tmp_path / "m.csv"
    write_manifest(manifest)
    write_fast_catalog(tmp_path / "fast.yaml")
    out = tmp_path / "out"
    config = SimConfig(
        api_key=KEY,
        create_window=1.0,
        latency_scale=0.02,
        seed=5,
        faults=FaultProfile(lost_reply=lost_reply),
    )
    app = create_app(config)
    with serve_in_thread(app) as base_url:
        kills = 0
        for _ in range(6):
            proc = start_run(manifest, out, base_url)
            time.sleep(rng.uniform(0.4, 2.0))  # the moment of the kill is the random input
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=60)
        final = start_run(manifest, out, base_url)
        _stdout, stderr = final.communicate(timeout=120)
        ledger = sim_of(app).ledger

    assert kills >= 3, "the runs finished before they could be killed"
    assert final.returncode in (0, 1), stderr.decode()
    assert "stamina" not in stderr.decode()
    states = job_states(out)
    assert len(states) == N_JOBS
    final_states = {"succeeded", "done", "failed", "unknown"}
    assert {s for s, _ in states.values()} <= final_states, states
    # No job was created twice: a kill between the intent and the taskId, or a lost
    # reply, parks the job as unknown instead of sending it again.
    counts: dict[str | None, int] = {}
    for e in ledger.creates():
        prompt = (e.input or {}).get("prompt")
        counts[prompt] = counts.get(prompt, 0) + 1
    assert all(n == 1 for n in counts.values()), {p: n for p, n in counts.items() if n > 1}
    # Every job that finished was created exactly once, with the taskId we kept.
    created_ids = {e.task_id for e in ledger.creates()}
    for job_id, (state, task_id) in states.items():
        if state in ("succeeded", "done"):
            assert task_id in created_ids, job_id
    if lost_reply:
        assert any(s == "unknown" for s, _ in states.values())
    # Done means its sidecars were written, whenever the kills came.
    for f in files_in(out):
        if states[f.job_id][0] == "done":
            record = json.loads((out / sidecar_path(saved(f.path))).read_text(encoding="utf-8"))
            assert (record["job_id"], record["files"][f.n]["sha256"]) == (f.job_id, f.sha256)
