"""Runner paths with no other test: the 404 grace, --retry-failed, 400/422 rejections at
createTask, and task timeouts per kind. All in virtual time against the in-process
simulator (tests/runner_harness.py), so minutes of service time cost milliseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._run import run_batch_async
from liangxin_batch.simulator import FaultProfile, SimConfig, Simulator, create_app
from liangxin_batch.simulator._ledger import LedgerEvent, canonical_job_key
from tests.runner_harness import KEY, SimEnv, in_virtual_time, make_jobs, records_for
from tests.runner_harness import TestJob as Job
from tests.sim_support import sim_of
from tests.state_support import attempts_in, events_in, files_in, jobs_in, saved

# -- helpers ------------------------------------------------------------------------------


def job_rows(out: Path) -> dict[str, dict[str, Any]]:
    """Each job as a dict (its state as text), read through the store's API."""
    return {
        job_id: {**dataclasses.asdict(job), "state": job.state.value}
        for job_id, job in jobs_in(out).items()
    }


def attempts(out: Path) -> dict[str, list[tuple[int, str | None, str]]]:
    found: dict[str, list[tuple[int, str | None, str]]] = defaultdict(list)
    for a in attempts_in(out):
        found[a.job_id].append((a.attempt, a.task_id, a.outcome))
    return dict(found)


def events(out: Path) -> list[tuple[str | None, str, str]]:
    return [(e.job_id, e.kind, e.detail) for e in events_in(out)]


def polls_by_task(sim: Simulator) -> dict[str, list[LedgerEvent]]:
    found: dict[str, list[LedgerEvent]] = defaultdict(list)
    for e in sim.ledger.polls():
        assert e.task_id is not None
        found[e.task_id].append(e)
    return found


def created_at(sim: Simulator) -> dict[str, float]:
    return {e.task_id: e.at for e in sim.ledger.creates() if e.task_id}


def creates_of(sim: Simulator, job: Job) -> list[LedgerEvent]:
    key = canonical_job_key(job.model, job.input)
    return [
        e for e in sim.ledger.creates() if canonical_job_key(e.model or "", e.input or {}) == key
    ]


def assert_retried(
    history: list[tuple[int, str | None, str]], old: str, ended: str, new: str | None = None
) -> None:
    """Attempt 1 kept its task and how it ended; the last attempt created a new task that
    succeeded; any attempt between was provably not created (a 429 from the window the
    previous run left behind, which a new process cannot know about)."""
    assert history[0] == (1, old, ended), history
    last = history[-1]
    assert last[2] == "succeeded" and last[1] not in (None, old), history
    if new is not None:
        assert last[1] == new
    assert [n for n, _t, _o in history] == list(range(1, len(history) + 1))
    assert all(o == "not_created" and t is None for _n, t, o in history[1:-1]), history


# -- 1. recordInfo 404 right after createTask ------------------------------------------------

GRACE = 30.0


@pytest.mark.parametrize("visible_after", [12.0, 27.0])
def test_fresh_task_404_is_retried_and_a_task_visible_within_the_grace_finishes(
    tmp_path: Path, visible_after: float
) -> None:
    jobs = make_jobs(12, models=("z-image", "google/nano-banana"))

    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(poll_404_seconds=visible_after))
        settings = RunSettings(not_found_grace=GRACE)
        return await env.run(tmp_path, jobs, settings=settings), env

    summary, env = in_virtual_time(main)
    assert summary.counts == {"succeeded": 12}
    assert summary.exit_code == 0
    assert len(env.sim.ledger.creates()) == 12, "a 404 never leads to a second createTask"
    assert env.sim.ledger.duplicates() == {}
    born = created_at(env.sim)
    rows = job_rows(tmp_path)
    for task_id, polls in polls_by_task(env.sim).items():
        outcomes = [p.outcome for p in polls]
        # The first poll(s) met the 404; the task was polled again until it appeared.
        seen = next(i for i, o in enumerate(outcomes) if o != "404")
        assert seen >= 1 and set(outcomes[:seen]) == {"404"}, outcomes
        assert "404" not in outcomes[seen:] and outcomes[-1] == "success", outcomes
        first_seen = next(p.at for p in polls if p.outcome != "404")
        assert visible_after <= first_seen - born[task_id] < GRACE
        row = next(r for r in rows.values() if r["task_id"] == task_id)
        assert row["state"] == "succeeded" and row["error_code"] is None
        assert row["polls"] == len(polls), "404 polls are counted with the others"


def test_404_for_longer_than_the_grace_fails_the_job_and_nothing_is_resubmitted(
    tmp_path: Path,
) -> None:
    jobs = make_jobs(8, models=("z-image", "google/nano-banana"))

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(poll_404_seconds=10_000.0))  # never visible
        settings = RunSettings(not_found_grace=GRACE)
        first = await env.run(tmp_path, jobs, settings=settings)
        second = await env.run(tmp_path, jobs, settings=settings)  # plain resume
        return first, second, env

    first, second, env = in_virtual_time(main)
    assert first.counts == {"failed": 8}
    assert first.exit_code == 1 and first.stopped_reason is None
    assert second.counts == {"failed": 8}, "a failed job is final without --retry-failed"
    assert len(env.sim.ledger.creates()) == 8
    born = created_at(env.sim)
    rows = job_rows(tmp_path)
    for task_id, polls in polls_by_task(env.sim).items():
        assert {p.outcome for p in polls} == {"404"}
        ages = [p.at - born[task_id] for p in polls]
        # Retried during the grace (every few seconds), given up at the first poll after it.
        assert all(a < GRACE for a in ages[:-1]), ages
        assert GRACE <= ages[-1] < GRACE + 3.5, ages
        assert len(polls) >= 5, "retried for a while, not failed at the first 404"
        row = next(r for r in rows.values() if r["task_id"] == task_id)
        assert row["state"] == "failed"
        assert row["error_code"] == "404"
        assert "not found" in row["error_message"]
        assert row["polls"] == len(polls)


# -- 2. --retry-failed ----------------------------------------------------------------------


def test_retry_failed_resubmits_failed_and_timed_out_jobs_and_keeps_the_old_task_ids(
    tmp_path: Path,
) -> None:
    models = ("z-image", "google/nano-banana", "z-image", "kling-3.0/video")
    jobs = make_jobs(24, models=models)
    by_id = {j.job_id: j for j in jobs}

    async def main() -> tuple[RunSummary, dict[str, dict[str, Any]], RunSummary, SimEnv]:
        # latency x3: videos (~6 min) are still running at their first poll (2 min), so a
        # 30 s video timeout times them all out; images finish, some failing.
        config = SimConfig(api_key=KEY, seed=3, latency_scale=3.0, faults=FaultProfile(fail=0.3))
        env = SimEnv(config)
        first = await env.run(tmp_path, jobs, settings=RunSettings(video_timeout=30.0))
        before = job_rows(tmp_path)
        env.sim.config.faults.fail = 0.0
        second = await env.run(tmp_path, jobs, settings=RunSettings(retry_failed=True))
        return first, before, second, env

    first, before, second, env = in_virtual_time(main)
    assert first.counts["timed_out"] == 6
    assert first.counts.get("failed", 0) >= 2
    assert first.counts.get("succeeded", 0) >= 2
    assert second.counts == {"succeeded": 24}
    assert second.exit_code == 0

    after = job_rows(tmp_path)
    history = attempts(tmp_path)
    retried = [j for j, r in before.items() if r["state"] in ("failed", "timed_out")]
    kept = [j for j, r in before.items() if r["state"] == "succeeded"]
    assert len(env.sim.ledger.creates()) == 24 + len(retried)
    ledger_ids = {e.task_id for e in env.sim.ledger.creates()}
    for job_id in kept:  # not touched: same task, one attempt, created once
        assert after[job_id]["task_id"] == before[job_id]["task_id"]
        assert after[job_id]["attempt"] == 1
        assert history[job_id] == [(1, before[job_id]["task_id"], "succeeded")]
        assert len(creates_of(env.sim, by_id[job_id])) == 1
    for job_id in retried:  # a new attempt with a new task; the old taskId kept in history
        old, new = before[job_id]["task_id"], after[job_id]["task_id"]
        assert old and new and old != new
        assert after[job_id]["attempt"] == 2
        assert_retried(history[job_id], old, before[job_id]["state"], new)
        assert {old, new} <= ledger_ids
        assert len(creates_of(env.sim, by_id[job_id])) == 2
    retry_events = {(j, d) for j, k, d in events(tmp_path) if d.startswith("retry from")}
    assert retry_events == {(j, f"retry from {before[j]['state']}") for j in retried}


def test_retry_failed_keeps_the_outcome_and_code_of_the_failed_attempt(tmp_path: Path) -> None:
    jobs = make_jobs(16, models=("z-image",))

    async def main() -> tuple[dict[str, dict[str, Any]], SimEnv]:
        env = SimEnv(faults=FaultProfile(fail=0.4))
        await env.run(tmp_path, jobs)
        before = job_rows(tmp_path)
        env.sim.config.faults.fail = 0.0
        await env.run(tmp_path, jobs, settings=RunSettings(retry_failed=True))
        return before, env

    before, _env = in_virtual_time(main)
    failed = {j: r for j, r in before.items() if r["state"] == "failed"}
    assert failed
    history = attempts(tmp_path)
    first_tries = {a.job_id: a for a in attempts_in(tmp_path) if a.attempt == 1}
    for job_id, row in failed.items():
        assert_retried(history[job_id], row["task_id"], "failed")
        # The failed attempt's failCode and failMsg stay in the history.
        code, message = first_tries[job_id].error_code, first_tries[job_id].error_message
        assert (code, message) == (row["error_code"], row["error_message"])
        assert code == "500"


def test_without_retry_failed_a_resume_leaves_failed_jobs_alone(tmp_path: Path) -> None:
    jobs = make_jobs(20, models=("z-image", "google/nano-banana"))

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(fail=0.3))
        first = await env.run(tmp_path, jobs)
        env.sim.config.faults.fail = 0.0
        second = await env.run(tmp_path, jobs)
        return first, second, env

    first, second, env = in_virtual_time(main)
    assert first.counts.get("failed", 0) >= 2
    assert second.counts == first.counts
    assert len(env.sim.ledger.creates()) == 20


class _RefuseFiles(httpx.AsyncBaseTransport):
    """Answers 410 for the result files of tasks `refuse(task_id)` picks; passes the rest."""

    def __init__(self, inner: httpx.AsyncBaseTransport, refuse: Callable[[str], bool]) -> None:
        self.inner = inner
        self.refuse = refuse

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        if len(parts) >= 3 and parts[1] == "files" and self.refuse(parts[2]):
            return httpx.Response(410, text="Gone", request=request)
        return await self.inner.handle_async_request(request)


def test_retry_failed_downloads_a_download_failed_job_again_without_a_new_task(
    tmp_path: Path,
) -> None:
    jobs = make_jobs(8, models=("z-image", "google/nano-banana"))
    records = records_for(jobs)

    async def main() -> tuple[RunSummary, dict[str, dict[str, Any]], int, RunSummary, Simulator]:
        loop = asyncio.get_running_loop()
        app = create_app(SimConfig(api_key=KEY, seed=4), clock=loop.time)
        sim = sim_of(app)
        api = httpx.ASGITransport(app=app)

        async def run(download: httpx.AsyncBaseTransport, settings: RunSettings) -> RunSummary:
            return await run_batch_async(
                records,
                out_dir=tmp_path,
                settings=settings,
                api_key=KEY,
                base_url="http://sim",
                transport=api,
                download_transport=download,
            )

        # Run 1: every file of a z-image task is refused (410), also after a refresh.
        refuse_z = _RefuseFiles(api, lambda task_id: sim.task(task_id).model == "z-image")
        first = await run(refuse_z, RunSettings())
        before = job_rows(tmp_path)
        files_before = len(sim.ledger.files_served())
        second = await run(api, RunSettings(retry_failed=True))
        return first, before, files_before, second, sim

    first, before, files_before, second, sim = in_virtual_time(main)
    assert first.counts == {"succeeded": 4, "download_failed": 4}
    assert first.exit_code == 1
    assert second.counts == {"succeeded": 8}
    assert second.exit_code == 0
    # No second createTask: the ledger holds one create per job, and the same taskIds.
    assert len(sim.ledger.creates()) == 8
    after = job_rows(tmp_path)
    for job_id, row in before.items():
        assert after[job_id]["task_id"] == row["task_id"]
        assert after[job_id]["attempt"] == 1
    history = attempts(tmp_path)
    assert all(len(h) == 1 for h in history.values())
    # Only the download_failed jobs' files were fetched in run 2, and they are verified.
    refetched = {e.task_id for e in sim.ledger.files_served()[files_before:]}
    failed_tasks = {r["task_id"] for r in before.values() if r["state"] == "download_failed"}
    assert refetched == failed_tasks
    files = [(f.job_id, f.path, f.sha256) for f in files_in(tmp_path)]
    assert len(files) == 8
    for job_id, path, sha in files:
        data = (tmp_path / saved(path)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
        assert data == sim.file_bytes(after[job_id]["task_id"], 0)


# -- 3. createTask rejected with 400 / 422 ------------------------------------------------


def test_422_from_the_simulator_fails_only_that_job_with_the_services_message(
    tmp_path: Path,
) -> None:
    good = make_jobs(16)
    bad = Job("bad-ratio", 5, "z-image", {"prompt": "a bad ratio", "aspect_ratio": "16-9"})
    jobs = [*good[:5], bad, *(Job(j.job_id, j.index + 1, j.model, j.input) for j in good[5:])]

    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv()
        return await env.run(tmp_path, jobs), env

    summary, env = in_virtual_time(main)
    assert summary.counts == {"succeeded": 16, "failed": 1}
    assert summary.stopped_reason is None
    assert summary.exit_code == 1
    row = job_rows(tmp_path)["bad-ratio"]
    assert row["state"] == "failed"
    assert row["error_code"] == "422"
    assert row["task_id"] is None
    # The simulator's own validation message, naming the field and the value.
    assert "input.aspect_ratio" in row["error_message"]
    assert "16-9" in row["error_message"]
    tries = [
        e
        for e in env.sim.ledger.create_attempts()
        if (e.input or {}).get("prompt") == "a bad ratio"
    ]
    assert [e.outcome for e in tries] == ["422"], "a rejected input is not sent again"
    assert attempts(tmp_path)["bad-ratio"] == [(1, None, "failed")]
    assert ("bad-ratio", "failed", row["error_message"]) in events(tmp_path)


class _RejectSome(httpx.AsyncBaseTransport):
    """createTask for prompts starting with `reject` gets the given answer; the rest pass."""

    def __init__(self, inner: httpx.AsyncBaseTransport, status: int, code: int, msg: str) -> None:
        self.inner = inner
        self.status, self.code, self.msg = status, code, msg
        self.rejected: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/jobs/createTask"):
            body = json.loads(await request.aread())
            prompt = body["input"]["prompt"]
            if prompt.startswith("reject"):
                self.rejected.append(prompt)
                payload = {"code": self.code, "msg": self.msg, "data": None}
                return httpx.Response(self.status, json=payload, request=request)
        return await self.inner.handle_async_request(request)


class _RejectingEnv(SimEnv):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__()
        self.reject = _RejectSome(httpx.ASGITransport(app=self.app), status, code, msg)

    def client(self, settings: RunSettings | None = None) -> LiangXinClient:
        return LiangXinClient(
            api_key=KEY, base_url="http://sim", transport=self.reject, settings=settings
        )


@pytest.mark.parametrize(
    ("status", "code", "msg"),
    [
        (200, 400, "Bad request: image_urls[0] could not be fetched"),
        (400, 400, "Bad request: malformed input object"),
        (200, 422, "Invalid prompt: prompt contains prohibited content"),
        (422, 422, "input.seed: expected an integer"),
    ],
    ids=["body-400", "http-400", "body-422", "http-422"],
)
def test_400_or_422_at_create_fails_the_job_and_the_others_carry_on(
    tmp_path: Path, status: int, code: int, msg: str
) -> None:
    jobs: list[Job] = []
    for i, j in enumerate(make_jobs(20)):
        prompt = f"reject {i}" if i in (0, 7, 19) else str(j.input["prompt"])
        jobs.append(Job(j.job_id, j.index, j.model, {**j.input, "prompt": prompt}))

    async def main() -> tuple[RunSummary, _RejectingEnv]:
        env = _RejectingEnv(status, code, msg)
        return await env.run(tmp_path, jobs), env

    summary, env = in_virtual_time(main)
    assert summary.counts == {"succeeded": 17, "failed": 3}
    assert summary.stopped_reason is None and summary.exit_code == 1
    assert sorted(env.reject.rejected) == ["reject 0", "reject 19", "reject 7"], "sent once each"
    assert len(env.sim.ledger.creates()) == 17
    rows = job_rows(tmp_path)
    for job_id in ("job-00000", "job-00007", "job-00019"):
        assert rows[job_id]["state"] == "failed"
        assert rows[job_id]["error_code"] == str(code)
        assert msg in rows[job_id]["error_message"]
        assert rows[job_id]["task_id"] is None


# -- 4. task timeouts per kind ----------------------------------------------------------------


def test_default_timeouts_per_kind_and_the_override() -> None:
    s = RunSettings()
    assert s.task_timeout is None
    assert s.timeout_for("image") == 900.0
    assert s.timeout_for("video") == 3600.0
    assert s.timeout_for("something-new") == 900.0
    o = RunSettings(task_timeout=45.0)
    assert o.timeout_for("image") == o.timeout_for("video") == 45.0
    with pytest.raises(ValueError, match="video_timeout"):
        RunSettings(video_timeout=0)


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan")])
def test_task_timeout_override_is_validated_like_the_per_kind_ones(bad: float) -> None:
    with pytest.raises(ValueError, match="task_timeout"):
        RunSettings(task_timeout=bad)


def _never_finishing(tmp_path: Path, jobs: Sequence[Job], settings: RunSettings) -> Any:
    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv(SimConfig(api_key=KEY, seed=3, latency_scale=1000.0))  # hours per task
        return await env.run(tmp_path, jobs, settings=settings), env

    return in_virtual_time(main)


def _timed_out_ages(env: SimEnv) -> dict[str, tuple[float, float]]:
    """Per model: the (shortest, longest) time from create to the poll that gave up."""
    born = created_at(env.sim)
    polls = polls_by_task(env.sim)
    ages: dict[str, list[float]] = defaultdict(list)
    for e in env.sim.ledger.creates():
        assert e.task_id is not None and e.model is not None
        ages[e.model].append(polls[e.task_id][-1].at - born[e.task_id])
    return {m: (min(v), max(v)) for m, v in ages.items()}


def test_default_timeouts_give_images_15_minutes_and_videos_an_hour(tmp_path: Path) -> None:
    jobs = make_jobs(6, models=("z-image", "kling-3.0/video", "nano-banana-pro"))
    summary, env = _never_finishing(tmp_path, jobs, RunSettings())
    assert summary.counts == {"timed_out": 6}
    assert summary.exit_code == 1
    ages = _timed_out_ages(env)
    # Given up at the first poll at or after the deadline; polls are <= 30 s apart by then.
    for image in ("z-image", "nano-banana-pro"):
        assert 900 <= ages[image][0] <= ages[image][1] <= 900 + 31, ages
    assert 3600 <= ages["kling-3.0/video"][0] <= ages["kling-3.0/video"][1] <= 3600 + 31, ages
    for row in job_rows(tmp_path).values():
        assert row["error_code"] == "timeout"
        assert "run again to keep polling" in row["error_message"]


def test_task_timeout_overrides_both_kinds(tmp_path: Path) -> None:
    jobs = make_jobs(4, models=("z-image", "kling-3.0/video"))
    summary, env = _never_finishing(tmp_path, jobs, RunSettings(task_timeout=200.0))
    assert summary.counts == {"timed_out": 4}
    ages = _timed_out_ages(env)
    for model in ("z-image", "kling-3.0/video"):
        assert 200 <= ages[model][0] <= ages[model][1] <= 200 + 31, ages


@pytest.mark.slow
def test_cli_task_timeout_flag_times_out_tasks_and_offers_the_retry(tmp_path: Path) -> None:
    import os

    from click.testing import CliRunner

    from liangxin_batch.cli import main
    from liangxin_batch.simulator import serve_in_thread

    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "id,model,prompt,aspect_ratio\nv1,google/nano-banana,one,\nv2,z-image,two,1:1\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIANGXIN_")}
    app = create_app(SimConfig(api_key=KEY, latency_scale=1000.0))  # never done in this test
    with serve_in_thread(app) as url:
        env.update(LIANGXIN_API_KEY=KEY, LIANGXIN_BASE_URL=url)
        out = tmp_path / "out"
        fast = tmp_path / "fast.yaml"  # first poll at the schedule's 2 s minimum
        fast.write_text(
            "models:\n"
            "  - {id: google/nano-banana, patch: true, typical_seconds: 0.1}\n"
            "  - {id: z-image, patch: true, typical_seconds: 0.1}\n"
        )
        args = ["--catalog", str(fast), "run", str(manifest), "--out", str(out)]
        args += ["--task-timeout", "1", "--quiet"]
        result = CliRunner().invoke(main, args, env=env)
        refused = CliRunner().invoke(main, [*args[:-3], "--task-timeout", "0"], env=env)
        sim = sim_of(app)
    assert result.exit_code == 1, result.output
    assert "2 timed out" in result.stdout
    assert "To retry failed and timed-out jobs: liangxin-batch" in result.stdout
    assert "--retry-failed" in result.stdout
    rows = job_rows(out)
    assert {r["state"] for r in rows.values()} == {"timed_out"}
    # The first poll comes at the schedule's 2 s minimum, already past the 1 s timeout.
    assert all(r["polls"] == 1 for r in rows.values())
    assert all(re.search(r"still \w+ after \d+s", r["error_message"]) for r in rows.values())
    assert refused.exit_code == 2 and "--task-timeout" in refused.stderr
    assert len(sim.ledger.creates()) == 2, "the refused command sent nothing"
