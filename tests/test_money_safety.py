"""The rules that keep a batch from paying twice or losing a paid result, each forced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import ConfigError
from liangxin_batch.simulator import SimConfig
from liangxin_batch.state._lock import RunLock
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import sync_jobs
from tests.runner_harness import KEY, SimEnv, in_virtual_time, make_jobs, records_for

#: `change(path, n, response)`: a replacement answer, or None to keep the simulator's.
Change = Callable[[str, int, httpx.Response], httpx.Response | None]


class Rewrite(httpx.AsyncBaseTransport):
    """Forwards to the simulator, then lets `change(path, n, response)` alter the answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport, change: Change) -> None:
        self.inner = inner
        self.change = change
        self.counts: dict[str, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        name = request.url.path.rsplit("/", 1)[-1]
        self.counts[name] = self.counts.get(name, 0) + 1
        await response.aread()
        altered = self.change(name, self.counts[name], response)
        return altered if altered is not None else response


def test_a_gateway_error_after_the_task_was_created_parks_the_job_as_unknown(
    tmp_path: Path,
) -> None:
    """502/504 pages from a proxy may follow a created task: never resubmitted blindly."""

    def gateway(name: str, n: int, response: httpx.Response) -> httpx.Response | None:
        if name == "createTask" and n % 4 == 0:
            return httpx.Response(502 if n % 8 else 504, text="<html>Bad Gateway</html>")
        return None

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        env = SimEnv()
        env.wrap_api = lambda inner: Rewrite(inner, gateway)
        first = await env.run(tmp_path, make_jobs(20))
        second = await env.run(tmp_path, make_jobs(20))  # a plain resume
        return first, second, env

    first, second, env = in_virtual_time(main)
    assert first.counts == {"succeeded": 15, "unknown": 5}
    assert second.counts == {"succeeded": 15, "unknown": 5}
    assert len(env.sim.ledger.creates()) == 20, "each job created once, gateway errors included"
    assert env.sim.ledger.duplicates() == {}


def test_recordinfo_refusing_the_key_ends_the_run_and_resume_finishes(tmp_path: Path) -> None:
    refuse = {"on": True}

    def unauthorised(name: str, n: int, response: httpx.Response) -> httpx.Response | None:
        if name == "recordInfo" and refuse["on"]:
            return httpx.Response(200, json={"code": 401, "msg": "invalid key"})
        return None

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        env = SimEnv()
        env.wrap_api = lambda inner: Rewrite(inner, unauthorised)
        first = await asyncio.wait_for(env.run(tmp_path, make_jobs(12)), timeout=3600)
        refuse["on"] = False
        second = await env.run(tmp_path, make_jobs(12))
        return first, second, env

    first, second, env = in_virtual_time(main)
    assert first.exit_code == 3
    assert "401" in (first.stopped_reason or "")
    assert first.counts.get("submitted", 0) > 0, "in-flight tasks kept for the next run"
    assert second.counts == {"succeeded": 12}
    assert env.sim.ledger.duplicates() == {}


def test_a_task_id_the_state_already_holds_parks_the_job_as_unknown(tmp_path: Path) -> None:
    """Finding 10: the service answers two creates with one taskId. No traceback: the
    second job is `unknown` with a clear error, and the run goes on with the others."""

    def same_id(name: str, n: int, response: httpx.Response) -> httpx.Response | None:
        if name == "createTask" and n in (2, 3):
            return httpx.Response(200, json={"code": 200, "msg": "ok", "data": {"taskId": "t-1"}})
        if name == "createTask" and n == 1:
            return httpx.Response(200, json={"code": 200, "msg": "ok", "data": {"taskId": "t-1"}})
        return None

    async def main() -> RunSummary:
        env = SimEnv()
        env.wrap_api = lambda inner: Rewrite(inner, same_id)
        return await asyncio.wait_for(env.run(tmp_path, make_jobs(6)), timeout=3600)

    summary = in_virtual_time(main)
    store = StateStore.in_dir(tmp_path)
    try:
        jobs = {j.job_id: j for j in store.iter_jobs()}
    finally:
        store.close()
    dup = [j for j in jobs.values() if j.error_code == "duplicate_task_id"]
    assert [j.state.value for j in dup] == ["unknown", "unknown"]
    assert "t-1" in (dup[0].error_message or "") and "already holds" in (dup[0].error_message or "")
    # The other three jobs went on to finish.
    assert summary.counts.get("succeeded", 0) == 3


def test_downloads_go_on_after_credits_run_out(tmp_path: Path) -> None:
    """A 402 stops new submissions, not the download of results already paid for."""
    jobs = make_jobs(30, models=("z-image",))

    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv(SimConfig(api_key=KEY, credits=6))
        return await env.run_library(tmp_path, records_for(jobs)), env

    summary, env = in_virtual_time(main)
    created = len(env.sim.ledger.creates())
    assert summary.exit_code == 3
    assert 0 < created < 30
    assert summary.counts.get("succeeded") == created, "every paid result is on disk"
    assert summary.counts.get("downloading", 0) == 0


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_holds_it(
    tmp_path: Path,
) -> None:
    jobs = make_jobs(3)

    async def run() -> RunSummary:
        return await SimEnv().run_library(tmp_path, records_for(jobs))

    with RunLock(tmp_path), pytest.raises(ConfigError, match="in use by another run"):
        in_virtual_time(run)
    assert not (tmp_path / "state.db").exists(), "refused before the state was opened"
    summary = in_virtual_time(run)  # the lock went with its holder
    assert summary.counts == {"succeeded": 3}


def test_begin_attempt_only_takes_a_pending_job(tmp_path: Path) -> None:
    store = StateStore.in_dir(tmp_path)
    try:
        sync_jobs(store, make_jobs(1), allow_changed=False)
        assert store.begin_attempt("job-00000", 1) is True
        # Another writer already took it: nothing is written, nothing will be sent.
        assert store.begin_attempt("job-00000", 2) is False
        job = store.get("job-00000")
        assert job is not None and job.attempt == 1 and job.state.value == "submitting"
        assert len(store.attempts()) == 1
    finally:
        store.close()


def test_long_layout_fields_never_make_a_name_the_file_system_refuses(tmp_path: Path) -> None:
    from liangxin_batch.outputs._layout import Layout

    layout = Layout.parse("{subject}-{style}-{job_id}")
    long = {"subject": "s" * 300, "style": "雨" * 300}
    paths = {
        layout.relative_path(
            job_id=f"job-{i}",
            model="z-image",
            task_id="t",
            index=1,
            ext=".png",
            completed_at=0.0,
            columns=long,
        )
        for i in range(3)
    }
    assert len(paths) == 3, "still unique"
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        assert len(f".{name}.part".encode()) <= 255
        (tmp_path / name).write_bytes(b"x")  # the file system takes it


def test_summary_counts_only_jobs_still_in_the_manifest(tmp_path: Path) -> None:
    async def main() -> tuple[RunSummary, RunSummary]:
        env = SimEnv()
        first = await env.run(tmp_path, make_jobs(6))
        second = await env.run(tmp_path, make_jobs(6)[:4])  # two jobs removed
        return first, second

    first, second = in_virtual_time(main)
    assert first.counts == {"succeeded": 6}
    assert second.counts == {"succeeded": 4}
    assert second.removed_jobs == 2
    assert second.exit_code == 0


def test_a_max_credits_refusal_leaves_retry_flags_unapplied(tmp_path: Path) -> None:
    """Refused with --resubmit-unknown: the unknown jobs must not quietly become pending."""

    def gateway(name: str, n: int, response: httpx.Response) -> httpx.Response | None:
        return httpx.Response(504, text="timeout") if name == "createTask" and n <= 3 else None

    async def main() -> None:
        env = SimEnv()
        records = records_for(make_jobs(3))
        gateway_errors = Rewrite(httpx.ASGITransport(app=env.app), gateway)
        await env.run_library(tmp_path, records, transport=gateway_errors)
        settings = RunSettings(resubmit_unknown=True, max_credits=0.5)
        await env.run_library(tmp_path, records, settings=settings)

    with pytest.raises(ConfigError, match="max-credits"):
        in_virtual_time(main)
    store = StateStore.in_dir(tmp_path)
    try:
        assert {j.state.value for j in store.iter_jobs()} == {"unknown"}
    finally:
        store.close()
