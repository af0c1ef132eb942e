"""`liangxin-batch status DIR`: every section, with exact numbers, for a prepared state;
and a read while a run is writing the same state file."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

import liangxin_batch.state._status as _status
from liangxin_batch.cli import main
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._runner import Runner
from liangxin_batch.state._status import StatusReport, format_status, read_status
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import sync_jobs
from tests.runner_harness import SimEnv, in_virtual_time, make_jobs, valid_input
from tests.runner_harness import TestJob as Job
from tests.state_support import drive

NOW = 1_750_000_000.0

# job id, model, state, extra fields. Listed in manifest order.
PREPARED: list[tuple[str, str, str, dict[str, Any]]] = [
    ("a-done-cb", "z-image", "done", {"credits": 1.0, "finished_by": "callback"}),
    ("a-done-poll", "z-image", "done", {"credits": 1.0, "finished_by": "poll"}),
    ("a-dl", "nano-banana-pro", "succeeded", {"credits": 18.0, "finished_by": "callback"}),
    ("b-fail", "nano-banana-pro", "failed", {"credits": 0.0, "finished_by": "poll"}),
    # in flight: submitted ages 700, 20, 400, 60, 1000, 5, 300 seconds
    ("f-1", "z-image", "submitted", {"task_id": "t-700", "submitted_at": NOW - 700}),
    ("f-2", "nano-banana-pro", "submitted", {"task_id": "t-20", "submitted_at": NOW - 20}),
    ("f-3", "z-image", "submitted", {"task_id": "t-400", "submitted_at": NOW - 400}),
    ("f-4", "z-image", "submitted", {"task_id": "t-60", "submitted_at": NOW - 60}),
    ("f-5", "nano-banana-pro", "submitted", {"task_id": "t-1000", "submitted_at": NOW - 1000}),
    ("f-6", "z-image", "submitted", {"task_id": "t-5", "submitted_at": NOW - 5}),
    ("f-7", "z-image", "submitted", {"task_id": "t-300", "submitted_at": NOW - 300}),
    ("p-1", "z-image", "pending", {}),
    ("p-2", "google/nano-banana", "pending", {}),
    ("u-1", "google/nano-banana", "unknown", {}),
    ("t-1", "nano-banana-pro", "timed_out", {"task_id": "t-old"}),
    ("d-1", "google/nano-banana", "download_failed", {}),
]

# Problems, oldest first; status shows the newest five, newest first.
PROBLEMS = [
    ("b-fail", "failed", "LiangXin answered 500: first, oldest problem"),
    ("u-1", "unknown", "connection dropped after sending: reply lost"),
    ("t-1", "timed_out", "still generating after 901s; run again to keep polling"),
    ("b-fail", "failed", "Invalid prompt: prompt contains prohibited content"),
    ("d-1", "download_failed", "download failed: file 1 (http://x/…/0.png): 410 Gone"),
    ("p-1", "pending", "LiangXin answered 402: The current credits are insufficient."),
]


def prepare(out: Path) -> None:
    clock = iter(NOW - 100 + i for i in range(1000))
    store = StateStore.in_dir(out, wall_clock=lambda: next(clock))
    try:
        jobs = [
            Job(j, i, m, valid_input(m, f"prompt {j}")) for i, (j, m, _s, _f) in enumerate(PREPARED)
        ]
        sync_jobs(store, jobs, allow_changed=False)
        for job_id, _model, state, fields in PREPARED:
            drive(store, job_id, state, **fields)
        store.record_event("note", "resumed the run")  # not a problem: never listed
        for job_id, kind, detail in PROBLEMS:
            store.record_event(kind, detail, job_id)
        store.set_meta({"manifest": "/data/prompts.csv"})
    finally:
        store.close()


EXPECTED_HEAD = [
    "  succeeded: 2  downloading: 1  submitted: 7  pending: 2  failed: 1  timed_out: 1"
    "  unknown: 1  download_failed: 1",
    "by model:",
    "  google/nano-banana: pending 1, unknown 1, download_failed 1",
    "  nano-banana-pro: downloading 1, submitted 2, failed 1, timed_out 1",
    "  z-image: succeeded 2, submitted 5, pending 1",
    "credits charged so far: 20.0",  # done + succeeded only: 1 + 1 + 18
    "finished by: callback 2, poll 2",
    "oldest in flight:",
]
EXPECTED_FLIGHTS = [  # the five oldest, oldest first
    ("f-5", "t-1000", 1000),
    ("f-1", "t-700", 700),
    ("f-3", "t-400", 400),
    ("f-7", "t-300", 300),
    ("f-4", "t-60", 60),
]
EXPECTED_PROBLEMS = [
    "recent problems:",
    "  p-1 [pending] LiangXin answered 402: The current credits are insufficient.",
    "  d-1 [download_failed] download failed: file 1 (http://x/…/0.png): 410 Gone",
    "  b-fail [failed] Invalid prompt: prompt contains prohibited content",
    "  t-1 [timed_out] still generating after 901s; run again to keep polling",
    "  u-1 [unknown] connection dropped after sending: reply lost",
]


def test_read_status_numbers(tmp_path: Path) -> None:
    prepare(tmp_path)
    report = read_status(tmp_path, now=NOW)
    assert report.total == len(PREPARED)
    assert report.by_state == {  # the reports' words, as results.csv says them
        "succeeded": 2,
        "downloading": 1,
        "failed": 1,
        "submitted": 7,
        "pending": 2,
        "unknown": 1,
        "timed_out": 1,
        "download_failed": 1,
    }
    assert report.by_model["z-image"] == {"succeeded": 2, "submitted": 5, "pending": 1}
    assert report.credits == 20.0
    assert report.finished_by == {"callback": 2, "poll": 2}
    assert report.oldest_in_flight == [(j, t, float(a)) for j, t, a in EXPECTED_FLIGHTS]
    assert [(j, k, d) for _at, j, k, d in report.recent_errors] == list(reversed(PROBLEMS))[:5]
    assert report.manifest == "/data/prompts.csv"


def test_format_status_shows_every_section(tmp_path: Path) -> None:
    prepare(tmp_path)
    text = format_status(read_status(tmp_path, now=NOW))
    lines = text.splitlines()
    assert (
        lines[0] == f"{tmp_path / 'state.db'}  ({len(PREPARED)} jobs; manifest /data/prompts.csv)"
    )
    flights = [f"  {j}  task {t}  {a}s" for j, t, a in EXPECTED_FLIGHTS]
    assert lines[1:] == EXPECTED_HEAD + flights + EXPECTED_PROBLEMS
    assert "resumed the run" not in text


def test_status_command_prints_the_same_over_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare(tmp_path)
    # The CLI reads the wall clock for ages: an injected one makes them exact.
    monkeypatch.setattr(_status, "time", SimpleNamespace(time=lambda: NOW))
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1:9] == EXPECTED_HEAD
    flights = [f"  {j}  task {t}  {a}s" for j, t, a in EXPECTED_FLIGHTS]
    assert lines[9:14] == flights
    assert lines[14:] == EXPECTED_PROBLEMS


def test_status_of_a_folder_without_state_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert result.exit_code == 2
    assert "no state file" in result.stderr and "--out" in result.stderr
    assert "Traceback" not in result.output


def test_status_reads_the_state_while_a_run_writes_it(tmp_path: Path) -> None:
    jobs = make_jobs(60)
    snapshots: list[StatusReport] = []

    async def main_() -> RunSummary:
        env = SimEnv()

        def look(_runner: Runner) -> None:
            loop = asyncio.get_running_loop()
            for at in (8.0, 16.0, 24.0):
                loop.call_later(at, lambda: snapshots.append(read_status(tmp_path)))

        return await env.run(tmp_path, jobs, before=look)

    summary = in_virtual_time(main_)
    assert summary.counts == {"succeeded": 60}
    assert len(snapshots) == 3
    for snap in snapshots:
        assert snap.total == 60
        assert sum(sum(c.values()) for c in snap.by_model.values()) == 60
    # Mid-run the report shows work in flight and progress, growing over time.
    assert all(s.by_state.get("submitted", 0) > 0 for s in snapshots)
    assert all(s.oldest_in_flight for s in snapshots)
    # This Runner fetches nothing, but a state does not say how its run was driven:
    # generated jobs read as `downloading`, as they would for `run`.
    done = [s.by_state.get("downloading", 0) for s in snapshots]
    assert done == sorted(done) and done[-1] > 0
    assert [s.credits for s in snapshots] == sorted(s.credits for s in snapshots)
    assert snapshots[-1].credits > 0


# -- the end-of-run summary ----------------------------------------------------------------


def test_summary_line_accounts_for_every_job(tmp_path: Path) -> None:
    from liangxin_batch.cli._launch import format_summary
    from liangxin_batch.core._summary import RunSummary

    summary = RunSummary(
        counts={"succeeded": 4, "downloading": 4, "pending": 52},
        credits=32.0,
        wall_seconds=14.0,
        interrupted=True,
        downloads=True,
    )
    head = format_summary(summary, tmp_path).splitlines()[0]
    m = re.search(
        r"(\d+) succeeded, (\d+) failed, (\d+) unknown, (\d+) timed out, "
        r"(\d+) download failed, (\d+) not finished \(of (\d+)\)",
        head,
    )
    assert m is not None, head
    *parts, total = (int(g) for g in m.groups())
    assert sum(parts) == total == 60, head


def test_credits_used_include_generations_whose_download_failed(tmp_path: Path) -> None:
    store = StateStore.in_dir(tmp_path)
    try:
        jobs = [Job(j, i, "z-image", valid_input("z-image", j)) for i, j in enumerate("ab")]
        sync_jobs(store, jobs, allow_changed=False)
        drive(store, "a", "done", task_id="t-a", credits=1.0)
        drive(store, "b", "download_failed", task_id="t-b", credits=4.0)
    finally:
        store.close()
    assert read_status(tmp_path).credits == 5.0


def test_recent_problems_after_a_successful_retry_are_not_retry_notes(tmp_path: Path) -> None:
    from liangxin_batch.core._settings import RunSettings
    from liangxin_batch.simulator import FaultProfile

    jobs = make_jobs(16, models=("z-image",))

    async def main_() -> RunSummary:
        env = SimEnv(faults=FaultProfile(fail=0.4))
        await env.run(tmp_path, jobs)
        env.sim.config.faults.fail = 0.0
        return await env.run(tmp_path, jobs, settings=RunSettings(retry_failed=True))

    summary = in_virtual_time(main_)
    assert summary.counts == {"succeeded": 16}
    problems = read_status(tmp_path).recent_errors
    assert not [p for p in problems if p[3].startswith("retry from")], problems


def test_read_status_takes_a_str_path(tmp_path: Path) -> None:
    """Like everything else in the library (issue 15): a notebook passes "runs/oct"."""
    prepare(tmp_path)
    assert read_status(str(tmp_path), now=NOW).total == len(PREPARED)


@pytest.mark.parametrize("set_in_shell", [True, False])
def test_resume_hint_says_when_the_secret_variable_it_names_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, set_in_shell: bool
) -> None:
    """The key given on the command line is never repeated; the hint names the variable,
    and says so when that variable is not set (issue 15)."""
    from liangxin_batch.cli._launch import format_summary
    from liangxin_batch.core._summary import RunSummary

    argv = ["liangxin-batch", "run", "m.csv", "--out", "o", "--webhook-hmac-key", "s3cret-k"]
    monkeypatch.setattr("sys.argv", argv)
    if set_in_shell:
        monkeypatch.setenv("LIANGXIN_WEBHOOK_HMAC_KEY", "s3cret-k")
    else:
        monkeypatch.delenv("LIANGXIN_WEBHOOK_HMAC_KEY", raising=False)
    summary = RunSummary(counts={"pending": 3}, credits=0.0, wall_seconds=1.0, interrupted=True)
    text = format_summary(summary, tmp_path)
    assert "s3cret-k" not in text
    assert '--webhook-hmac-key="$LIANGXIN_WEBHOOK_HMAC_KEY"' in text
    warned = "LIANGXIN_WEBHOOK_HMAC_KEY is not set" in text
    assert warned is not set_in_shell, text


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("postgresql://batch:pw-s3cret@db:5432/lx", '--state="$LIANGXIN_STATE_URL"'),
        ("postgresql://batch@db/lx?password=pw-s3cret", '--state="$LIANGXIN_STATE_URL"'),
        ("postgresql://db/lx?sslmode=require&PASSWORD=s3cret", '--state="$LIANGXIN_STATE_URL"'),
        ("postgresql://batch@db:5432/lx", "--state postgresql://batch@db:5432/lx"),
    ],
)
def test_hints_repeat_the_state_url_never_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str, shown: str
) -> None:
    """A worker's summary (issue 18): the resume and the status commands need the same
    --state; a URL with a password is named by its variable, like a key."""
    from liangxin_batch.cli._launch import format_summary
    from liangxin_batch.core._summary import RunSummary

    argv = ["liangxin-batch", "run", "m.csv", "--out", "o", "--state", given]
    monkeypatch.setattr("sys.argv", argv)
    monkeypatch.delenv("LIANGXIN_STATE_URL", raising=False)
    summary = RunSummary(
        counts={"pending": 3}, credits=0.0, wall_seconds=1.0, interrupted=True, other_workers=1
    )
    text = format_summary(summary, tmp_path)
    assert "s3cret" not in text
    assert f"Resume with: liangxin-batch run m.csv --out o {shown}" in text, text
    assert f"status {tmp_path} {shown}" in text, text
    assert f"report {tmp_path} {shown}" in text, text


def test_the_settings_repr_leaves_the_state_url_out() -> None:
    from liangxin_batch.core._settings import RunSettings

    assert "pw-s3cret" not in repr(RunSettings(state_url="postgresql://u:pw-s3cret@db/lx"))
