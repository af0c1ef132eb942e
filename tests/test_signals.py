"""SIGTERM and a second Ctrl-C, end to end: the CLI in a subprocess, the simulator in a
thread on 127.0.0.1. Moments are chosen by watching the simulator's ledger and the
run's stderr for a condition, with a bounded deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from liangxin_batch.core._states import JobState
from liangxin_batch.outputs._report import report_status
from liangxin_batch.simulator import FaultProfile, SimConfig, Simulator, create_app, serve_in_thread
from liangxin_batch.state._store import StateStore
from tests import cli_support
from tests.cli_support import wait_for
from tests.sim_support import sim_of
from tests.state_support import files_in
from tests.state_support import jobs_in as read_jobs

pytestmark = pytest.mark.slow

KEY = "sk-signals-0123456789abcdef"
N_JOBS = 60
FINAL = {"done", "failed", "unknown", "download_failed"}


def write_manifest(path: Path) -> list[str]:
    return cli_support.write_manifest(
        path, N_JOBS, prefix="s", prompt="a windmill in fog, take {i}"
    )


def command(tmp: Path, out: Path) -> list[str]:
    catalog = cli_support.fast_catalog(tmp)  # the simulator runs at 1/50 of real latency
    return cli_support.cli(
        "--catalog", str(catalog), "run", str(tmp / "m.csv"), "--out", str(out),
        "--rate", "20/1s", "--quiet",
    )  # fmt: skip


def child_env(url: str) -> dict[str, str]:
    return cli_support.child_env(url, KEY, PYTHONUNBUFFERED="1")


class Run:
    """One CLI process, its stdout and stderr going to files we can read while it runs."""

    def __init__(self, cmd: list[str], url: str, logs: Path) -> None:
        self.stdout_path, self.stderr_path = logs.with_suffix(".out"), logs.with_suffix(".err")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(cmd, env=child_env(url), stdout=out, stderr=err)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"the run did not exit within {timeout}s:\n{self.stderr}"
            ) from None


def jobs_in(out: Path) -> dict[str, tuple[str, str | None]]:
    return {j: (job.state.value, job.task_id) for j, job in read_jobs(out).items()}


def creates_per_prompt(sim: Simulator) -> Counter[str]:
    return Counter(str((e.input or {}).get("prompt")) for e in sim.ledger.creates())


@pytest.fixture
def start() -> Iterator[Callable[[list[str], str, Path], Run]]:
    """Start CLI runs; any still alive when the test ends (it failed) is killed by pid."""
    runs: list[Run] = []

    def spawn(cmd: list[str], url: str, logs: Path) -> Run:
        runs.append(Run(cmd, url, logs))
        return runs[-1]

    yield spawn
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


@pytest.fixture
def plain_sim() -> Iterator[tuple[str, Simulator]]:
    app = create_app(SimConfig(api_key=KEY, create_window=1.0, latency_scale=0.02, seed=11))
    with serve_in_thread(app) as url:
        yield url, sim_of(app)


def test_sigterm_checkpoints_exits_130_and_a_second_run_finishes_each_job_once(
    tmp_path: Path, plain_sim: tuple[str, Simulator], start: Callable[[list[str], str, Path], Run]
) -> None:
    url, sim = plain_sim
    ids = write_manifest(tmp_path / "m.csv")
    out = tmp_path / "out"
    cmd = command(tmp_path, out)

    first = start(cmd, url, tmp_path / "first")
    wait_for(lambda: len(sim.ledger.creates()) > 0, "the first createTask")
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(60) == 130, first.stderr
    assert "interrupted: finishing the calls in progress" in first.stderr
    assert "Nothing is lost. Resume with: liangxin-batch" in first.stdout
    assert f"run {tmp_path / 'm.csv'} --out {out}" in first.stdout
    assert "Traceback" not in first.stderr

    # Consistent: nothing half-submitted, and every task the service created is recorded.
    states = jobs_in(out)
    assert len(states) == N_JOBS
    counts = Counter(s for s, _ in states.values())
    assert counts["submitting"] == 0 and counts["unknown"] == 0
    assert counts["pending"] > 0, "SIGTERM came too late to stop any submission"
    recorded = {t for _, t in states.values() if t}
    assert recorded == {e.task_id for e in sim.ledger.creates()}
    # results.csv of the interrupted run: every job once, manifest order, its status.
    results = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    assert list(results["job_id"]) == ids
    for job_id, status in zip(results["job_id"], results["status"], strict=True):
        assert status == report_status(JobState(states[job_id][0]))

    second = start(cmd, url, tmp_path / "second")
    assert second.wait(120) == 0, second.stderr
    assert f"{N_JOBS} succeeded" in second.stdout
    final = jobs_in(out)
    assert {s for s, _ in final.values()} == {"done"}
    per_prompt = creates_per_prompt(sim)
    assert len(per_prompt) == N_JOBS and set(per_prompt.values()) == {1}
    assert {t for _, t in final.values()} == {e.task_id for e in sim.ledger.creates()}
    for job_id, (_, task_id) in states.items():
        if task_id:  # created before the SIGTERM: kept, never created again
            assert final[job_id][1] == task_id


@pytest.fixture
def held_sim() -> Iterator[tuple[str, Simulator, threading.Event]]:
    """Result files are served only once `hold` is cleared: a download stays in progress."""
    hold = threading.Event()
    hold.set()

    async def held_sleep(_seconds: float) -> None:
        while hold.is_set():
            await asyncio.sleep(0.01)

    config = SimConfig(
        api_key=KEY,
        create_window=1.0,
        latency_scale=0.02,
        seed=12,
        faults=FaultProfile(slow_download_bps=10**9),  # one paced piece per file
    )
    app = create_app(config, sleep=held_sleep)
    with serve_in_thread(app) as url:
        try:
            yield url, sim_of(app), hold
        finally:
            hold.clear()  # before the server stops: it must not wait on a held response


def test_two_ctrl_c_during_a_download_leave_a_state_the_next_run_finishes(
    tmp_path: Path,
    held_sim: tuple[str, Simulator, threading.Event],
    start: Callable[[list[str], str, Path], Run],
) -> None:
    url, sim, hold = held_sim
    write_manifest(tmp_path / "m.csv")
    out = tmp_path / "out"
    cmd = command(tmp_path, out)

    first = start(cmd, url, tmp_path / "first")
    wait_for(lambda: len(sim.ledger.files_served()) > 0, "a download to start")
    first.proc.send_signal(signal.SIGINT)
    wait_for(lambda: "interrupted: finishing" in first.stderr, "the first Ctrl-C to be handled")
    # The first Ctrl-C lets creates and polls in progress finish but cancels the held
    # download (an interrupted run exits within seconds, whatever a file host does); the
    # second, if it lands before that checkpoint is over, exits at once (the test above
    # holds a create so that only the second can end the run). Either way: 130, no
    # traceback, and a state the next run finishes from.
    first.proc.send_signal(signal.SIGINT)
    assert first.wait(15) == 130, first.stderr
    assert "Traceback" not in first.stderr

    # Consistent either way: the database is whole, and no file sits under a final name
    # without being recorded and verified.
    StateStore.in_dir(out, readonly=True).close()  # opening checks it (quick_check)
    recorded = {f.path for f in files_in(out)}
    for path in (out / "outputs").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            assert str(path.relative_to(out)) in recorded, path

    hold.clear()
    second = start(cmd, url, tmp_path / "second")
    code = second.wait(120)
    final = jobs_in(out)
    assert {s for s, _ in final.values()} <= FINAL, Counter(s for s, _ in final.values())
    unknown = [j for j, (s, _) in final.items() if s == "unknown"]
    # Only a job caught between its intent and its taskId may be unknown (exit 1).
    assert code == (1 if unknown else 0), second.stderr
    assert set(creates_per_prompt(sim).values()) == {1}, "no job was created twice"
    created = {e.task_id for e in sim.ledger.creates()}
    for job_id, (state, task_id) in final.items():
        if state == "done":
            assert task_id in created, job_id
    for f in files_in(out):
        assert hashlib.sha256((out / (f.path or "")).read_bytes()).hexdigest() == f.sha256


class HoldCreates:
    """The simulator behind a gate: while `hold` is set, a createTask request waits before
    it reaches the simulator (its answer held, no task made yet), as a slow service's
    would. `held` counts the createTask requests that came to the gate."""

    def __init__(self, app: Any, hold: threading.Event) -> None:
        self.app, self.hold, self.held = app, hold, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/createTask"):
            self.held += 1
            while self.hold.is_set():  # the server's own wait, not the test's
                await asyncio.sleep(0.01)
        await self.app(scope, receive, send)


def test_a_second_ctrl_c_exits_at_once_while_the_first_waits_on_a_create(
    tmp_path: Path, start: Callable[[list[str], str, Path], Run]
) -> None:
    """The first Ctrl-C lets a createTask in flight finish (it may have made a task); its
    answer is held here, so the run could only end on its own when the client's read
    timeout (30 s) gives up. The second Ctrl-C ends it at once: 130, no traceback, and
    the job whose create was in flight is left `submitting` (intent kept: the next run
    asks the service about it before anything is sent again)."""
    hold = threading.Event()
    hold.set()
    gate = HoldCreates(
        create_app(SimConfig(api_key=KEY, create_window=1.0, latency_scale=0.02, seed=13)), hold
    )
    write_manifest(tmp_path / "m.csv")
    out = tmp_path / "out"
    with serve_in_thread(gate) as url:
        try:
            first = start(command(tmp_path, out), url, tmp_path / "first")
            wait_for(lambda: gate.held > 0, "a createTask to reach the held gate")
            first.proc.send_signal(signal.SIGINT)
            wait_for(lambda: "interrupted: finishing" in first.stderr, "the first Ctrl-C")
            assert first.proc.poll() is None  # still waiting on the held create
            first.proc.send_signal(signal.SIGINT)
            assert first.wait(10) == 130, first.stderr
            assert "Traceback" not in first.stderr
        finally:
            hold.clear()  # before the server stops: it must not wait on a held request
    states = Counter(s for s, _ in jobs_in(out).values())
    assert states["submitting"] == gate.held, states  # each held create: intent kept
    assert states["pending"] == N_JOBS - gate.held, states


def test_the_first_ctrl_c_cancels_a_dripping_download_and_removes_its_part_file(
    tmp_path: Path, start: Callable[[list[str], str, Path], Run]
) -> None:
    """Issue 11: a file host that drips held the first Ctrl-C for as long as it dripped."""
    config = SimConfig(
        api_key=KEY,
        create_window=1.0,
        latency_scale=0.02,
        seed=11,
        faults=FaultProfile(slow_download_bps=50),  # a 10 KB file would take minutes
    )
    app = create_app(config)
    with serve_in_thread(app) as url:
        write_manifest(tmp_path / "m.csv")
        out = tmp_path / "out"
        run = start(command(tmp_path, out), url, tmp_path / "drip")
        files = sim_of(app).ledger.files_served  # recorded as a file's answer starts
        wait_for(lambda: bool(files()), "a download in progress")
        run.proc.send_signal(signal.SIGINT)
        assert run.wait(20) == 130, run.stderr  # the drip alone would take minutes
    assert "Traceback" not in run.stderr
    assert not list(out.rglob("*.part")), "cancelled streams leave no .part"
    states = Counter(s for s, _ in jobs_in(out).values())
    assert states["download_failed"] == 0, "an interrupted download is not a failed one"
    assert states["succeeded"] > 0, "paid results wait for the next run"
