"""Issue 10's findings, one test each: every one failed on the code before the fix.

Each runs the real runner (and, where files matter, the whole `run_batch_async`) against
the simulator in virtual time.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import Event, JobState
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import ConfigError, StateError
from liangxin_batch.simulator import FaultProfile
from liangxin_batch.state._store import StateStore
from tests.runner_harness import SimEnv, in_virtual_time, make_jobs, records_for
from tests.state_support import counts_in
from tests.test_money_safety import Rewrite


def jobs_of(out: Path) -> dict[str, Any]:
    store = StateStore.in_dir(out, readonly=True)
    try:
        return {j.job_id: j for j in store.iter_jobs()}
    finally:
        store.close()


# -- 1. a bare HTTP 500 ------------------------------------------------------------------


def test_1_a_gateway_500_page_after_the_task_was_created_is_never_sent_again(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(gateway_500_after_create=0.25))
        first = await env.run(tmp_path, make_jobs(40))
        await env.run(tmp_path, make_jobs(40))  # a resume: unknown jobs stay unknown
        return first, env

    summary, env = in_virtual_time(main)
    gateway = [e for e in env.sim.ledger.create_attempts() if e.outcome == "gateway_500"]
    assert gateway, "the fault fired"
    assert env.sim.ledger.duplicates() == {}, "no prompt was paid for twice"
    assert len(env.sim.ledger.creates()) == 40
    assert summary.counts.get("unknown") == len(gateway)
    unknown = [j for j in jobs_of(tmp_path).values() if j.state is JobState.UNKNOWN]
    assert all(j.error_code == "http_500" for j in unknown)
    assert all("without a LiangXin answer" in (j.error_message or "") for j in unknown)


# -- 2. recordInfo within its limit -----------------------------------------------------


def test_2_every_record_info_passes_the_limiter_even_with_half_of_them_failing(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(poll_errors={500: 0.5}))
        return await env.run_library(tmp_path, records_for(make_jobs(60))), env

    summary, env = in_virtual_time(main)
    polls = env.sim.ledger.polls()
    refused = [p for p in polls if p.outcome == "429"]
    assert refused == [], f"{len(refused)} recordInfo calls over the limit"
    times = sorted(p.at for p in polls)
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 10
    assert summary.counts == {"succeeded": 60}


# -- 3. paging by a unique key ----------------------------------------------------------


def test_3_jobs_that_share_a_position_are_all_walked(tmp_path: Path) -> None:
    store = StateStore.in_dir(tmp_path)
    try:
        # An edited manifest: removed jobs keep their position, new jobs reuse it.
        rows = [(f"a{i:04d}", i, "z-image", "{}", "{}", "h") for i in range(1001)]
        rows += [(f"b{i:04d}", i, "z-image", "{}", "{}", "h") for i in range(0, 1001, 3)]
        store.upsert_jobs(rows)
        seen = [j.job_id for j in store.iter_jobs([JobState.PENDING])]
        assert sorted(seen) == sorted(r[0] for r in rows)
        assert len(seen) == len(set(seen))
        for job_id in seen:  # moving rows out of the walked state while walking
            store.transition(job_id, Event.SUBMIT, attempt=1)
        assert store.counts() == {"submitting": len(rows)}
    finally:
        store.close()


# -- 4. downloads have backpressure -----------------------------------------------------


def test_4_a_slow_file_host_holds_submission_back(tmp_path: Path) -> None:
    backlog: list[int] = []

    async def main() -> RunSummary:
        env = SimEnv(faults=FaultProfile(slow_download_bps=20_000))
        settings = RunSettings(max_in_flight=4, max_download_backlog=3, download_concurrency=1)
        task = asyncio.ensure_future(
            env.run_library(tmp_path, records_for(make_jobs(30)), settings=settings)
        )
        while not task.done():  # sample the paid, not yet downloaded jobs
            await asyncio.sleep(0.5)
            if (tmp_path / "state.db").exists():
                backlog.append(counts_in(tmp_path).get("succeeded", 0))
        return await task

    summary = in_virtual_time(main)
    assert summary.counts == {"succeeded": 30}
    # The queue (3) plus what finishes while it is full (at most max_in_flight: 4).
    assert max(backlog) <= 3 + 4


# -- 5. a refusal changes nothing -------------------------------------------------------


def test_5_a_budget_refusal_leaves_the_state_and_the_files_as_they_were(tmp_path: Path) -> None:
    jobs = make_jobs(4, models=("z-image",))

    async def main() -> None:
        env = SimEnv()
        await env.run_library(tmp_path, records_for(jobs))
        changed = [{**r, "prompt": r["prompt"] + " again"} for r in records_for(jobs)]
        with pytest.raises(ConfigError, match="max-credits"):
            await env.run_library(
                tmp_path, changed, settings=RunSettings(allow_changed=True, max_credits=0.5)
            )

    in_virtual_time(main)
    assert {j.state for j in jobs_of(tmp_path).values()} == {JobState.DONE}
    assert not (tmp_path / "superseded").exists()
    assert len(list((tmp_path / "outputs").rglob("*.png"))) == 4


# -- 6. one unlucky job -----------------------------------------------------------------


def test_6_a_job_that_is_never_created_fails_alone(tmp_path: Path) -> None:
    class RefuseUnlucky(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("createTask") and b"unlucky" in request.content:
                body = {"code": 500, "msg": "Internal error", "data": None}
                return httpx.Response(200, json=body)  # the service's own envelope
            return await self.inner.handle_async_request(request)

    jobs = make_jobs(12, models=("z-image",))
    records = records_for(jobs)
    records[3]["prompt"] = "unlucky"

    async def main() -> RunSummary:
        env = SimEnv()
        return await env.run_library(
            tmp_path,
            records,
            settings=RunSettings(create_retries=3),
            transport=RefuseUnlucky(httpx.ASGITransport(app=env.app)),
        )

    summary = in_virtual_time(main)
    assert summary.stopped_reason is None
    assert summary.counts == {"succeeded": 11, "failed": 1}
    assert summary.exit_code == 1
    unlucky = jobs_of(tmp_path)[records[3]["id"]]
    assert unlucky.error_code == "500" and "after 3 tries" in (unlucky.error_message or "")
    assert unlucky.sends == 0, "no POST of it could have created a task"
    done = next(j for j in jobs_of(tmp_path).values() if j.state is JobState.DONE)
    assert done.sends == 1


# -- 7 and 8 are the limiter's: see test_ratelimit.py; 8 also here ----------------------


def test_8_at_most_two_create_posts_are_on_the_wire_at_once(tmp_path: Path) -> None:
    class Concurrency(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner = inner
            self.now = 0
            self.peak = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            create = request.url.path.endswith("createTask")
            self.now += create
            self.peak = max(self.peak, self.now)
            try:
                await asyncio.sleep(0.8 if create else 0)  # a slow service
                return await self.inner.handle_async_request(request)
            finally:
                self.now -= create

    wire: list[Concurrency] = []

    async def main() -> tuple[RunSummary, SimEnv]:
        # 500s (nothing created) make jobs retry: a retry must hold a POST place too.
        env = SimEnv(faults=FaultProfile(create_500=0.3))

        def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
            wire.append(Concurrency(inner))
            return wire[-1]

        env.wrap_api = wrap
        return await env.run(tmp_path, make_jobs(60)), env

    summary, env = in_virtual_time(main)
    assert summary.counts == {"succeeded": 60}
    assert any(e.outcome == "500" for e in env.sim.ledger.create_attempts())
    assert wire[0].peak == 2
    times = env.sim.ledger.admitted_create_times()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Paced evenly: never more than the small burst (2) closer than the even spacing.
    spacing = 10.2 / 20
    assert sum(1 for g in gaps if g < spacing * 0.5) <= len(gaps) // 2
    assert max(sum(1 for t in times if s <= t < s + 10.0) for s in times) <= 20


# -- 9. a deleted output ---------------------------------------------------------------


def test_9_a_deleted_output_is_fetched_again_and_reported_missing_until_then(
    tmp_path: Path,
) -> None:
    from liangxin_batch.outputs._report import write_results_csv

    jobs = make_jobs(3, models=("z-image",))

    async def main() -> tuple[RunSummary, list[str], SimEnv]:
        env = SimEnv()
        await env.run_library(tmp_path, records_for(jobs))
        victim = next((tmp_path / "outputs").rglob("*.png"))
        victim.unlink()
        store = StateStore.in_dir(tmp_path, readonly=True)
        try:
            write_results_csv(tmp_path, store, check_files=True)
        finally:
            store.close()
        text = (tmp_path / "results.csv").read_text()
        again = await env.run_library(tmp_path, records_for(jobs))
        return again, [text, str(victim)], env

    again, (text, victim), env = in_virtual_time(main)
    assert "output_missing" in text and "download_failed" in text
    assert again.counts == {"succeeded": 3}
    assert Path(victim).exists()
    assert len(env.sim.ledger.creates()) == 3, "fetched again, not generated again"


# -- 11. estimates are not money spent ---------------------------------------------------


def test_11_estimates_are_kept_apart_from_credits_charged(tmp_path: Path) -> None:
    def no_credits(name: str, n: int, response: httpx.Response) -> httpx.Response | None:
        if name != "recordInfo":
            return None
        body = response.json()
        if isinstance(body.get("data"), dict):
            body["data"].pop("creditsConsumed", None)
        return httpx.Response(response.status_code, json=body)

    async def main() -> RunSummary:
        env = SimEnv()
        env.wrap_api = lambda inner: Rewrite(inner, no_credits)
        return await env.run(tmp_path, make_jobs(4, models=("z-image",)))

    summary = in_virtual_time(main)
    assert summary.credits_estimated > 0
    assert summary.credits == summary.credits_estimated
    store = StateStore.in_dir(tmp_path, readonly=True)
    try:
        assert store.credits().charged == 0.0
    finally:
        store.close()


# -- 12. a garbled success --------------------------------------------------------------


def test_12_a_success_with_unreadable_urls_is_asked_again_not_failed(tmp_path: Path) -> None:
    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(garbled_success=1.0))
        return await env.run_library(tmp_path, records_for(make_jobs(20))), env

    summary, env = in_virtual_time(main)
    assert summary.counts == {"succeeded": 20}
    assert len(env.sim.ledger.creates()) == 20


def test_12_a_task_that_never_gives_urls_is_refetched_by_retry_failed_not_paid_again(
    tmp_path: Path,
) -> None:
    def empty_urls(name: str, n: int, response: httpx.Response) -> httpx.Response | None:
        if name != "recordInfo" or not empty[0]:
            return None
        body = response.json()
        if isinstance(body.get("data"), dict) and body["data"].get("state") == "success":
            body["data"]["resultJson"] = "{not json"
        return httpx.Response(response.status_code, json=body)

    empty = [True]
    jobs = make_jobs(3, models=("z-image",))

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        env = SimEnv()
        env.wrap_api = lambda inner: Rewrite(inner, empty_urls)
        first = await env.run_library(
            tmp_path,
            records_for(jobs),
            transport=Rewrite(httpx.ASGITransport(app=env.app), empty_urls),
        )
        empty[0] = False
        second = await env.run_library(
            tmp_path, records_for(jobs), settings=RunSettings(retry_failed=True)
        )
        return first, second, env

    first, second, env = in_virtual_time(main)
    assert first.counts == {"download_failed": 3}
    assert second.counts == {"succeeded": 3}
    assert len(env.sim.ledger.creates()) == 3


# -- 13. an empty or damaged state ------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "bad page"])
def test_13_an_empty_or_damaged_state_beside_outputs_is_refused(
    tmp_path: Path, damage: str
) -> None:
    jobs = make_jobs(4, models=("z-image",))

    async def main() -> tuple[SimEnv, str]:
        env = SimEnv()
        await env.run_library(tmp_path, records_for(jobs))
        state = tmp_path / "state.db"
        if damage == "empty":
            state.write_bytes(b"")
            for extra in ("state.db-wal", "state.db-shm"):
                (tmp_path / extra).unlink(missing_ok=True)
        else:
            data = bytearray(state.read_bytes())
            page = 4096
            for i in range(5 * page, 5 * page + 200):  # scribble over a b-tree page's header
                data[i] = 0xA5
            state.write_bytes(bytes(data))
        with pytest.raises(StateError) as caught:
            await env.run_library(tmp_path, records_for(jobs))
        return env, str(caught.value)

    env, message = in_virtual_time(main)
    assert "Nothing was sent" in message
    assert ("empty" in message) if damage == "empty" else ("damaged" in message)
    assert len(env.sim.ledger.creates()) == 4, "nothing was created again"


def test_13_a_state_copied_in_from_another_batch_is_refused(tmp_path: Path) -> None:
    async def main() -> str:
        env = SimEnv()
        await env.run_library(tmp_path / "a", records_for(make_jobs(2, models=("z-image",))))
        await env.run_library(tmp_path / "b", records_for(make_jobs(2, models=("z-image",))))
        (tmp_path / "b" / "state.db").write_bytes((tmp_path / "a" / "state.db").read_bytes())
        for extra in ("state.db-wal", "state.db-shm"):
            (tmp_path / "b" / extra).unlink(missing_ok=True)
        with pytest.raises(StateError) as caught:
            await env.run_library(tmp_path / "b", records_for(make_jobs(2, models=("z-image",))))
        return str(caught.value)

    assert "copied in from another folder" in in_virtual_time(main)


# -- 14. a full disk -------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_14_a_full_disk_stops_with_exit_3_and_a_resume_finishes(small_disk: Path) -> None:
    """Downloads stop while `min_free_disk` is still free: the state's own commits (a
    taskId that just arrived) always find room, so no job is left `unknown` by a disk
    the files filled (it was, once the files got there first)."""
    jobs = make_jobs(40, models=("z-image",))
    out = small_disk / "run"
    # 8 MiB: the state's own WAL takes up to ~4 MB between checkpoints; files may use
    # what is free beyond the reserve, so a few of them fit, then the run stops.
    settings = RunSettings(min_free_disk=7_800_000)

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        env = SimEnv()
        first = await env.run_library(out, records_for(jobs), settings=settings)
        grow = ["mount", "-o", "remount,size=64m", str(small_disk)]
        subprocess.run(grow, check=True)  # noqa: ASYNC221 - virtual time: nothing waits
        second = await env.run_library(out, records_for(jobs), settings=settings)
        return first, second, env

    first, second, env = in_virtual_time(main)
    assert first.exit_code == 3
    assert "the disk under" in (first.stopped_reason or "") and "min_free_disk" in (
        first.stopped_reason or ""
    )
    assert first.counts.get("unknown", 0) == 0
    assert second.counts == {"succeeded": 40}
    assert env.sim.ledger.duplicates() == {}
    assert not list(out.rglob("*.part"))


# -- 15. a file that lies about its length ----------------------------------------------


def test_15_a_file_shorter_than_it_is_is_never_verified(tmp_path: Path) -> None:
    async def main() -> RunSummary:
        env = SimEnv(faults=FaultProfile(short_content_length=1000))
        return await env.run_library(tmp_path, records_for(make_jobs(3, models=("z-image",))))

    summary = in_virtual_time(main)
    assert summary.counts == {"download_failed": 3}
    for job in jobs_of(tmp_path).values():
        assert "not a complete file" in (job.error_message or "")
    assert not list((tmp_path / "outputs").rglob("*.png"))


# -- 16. a signed callback's body -------------------------------------------------------


def test_16_a_replayed_signature_with_a_swapped_body_cannot_choose_the_result(
    tmp_path: Path,
) -> None:
    from tests.test_callbacks_flow import HMAC, run_with_callbacks_swapped

    summary, sim = run_with_callbacks_swapped(tmp_path, 6, HMAC)
    assert summary.counts == {"succeeded": 6}
    for job in jobs_of(tmp_path).values():
        assert all("evil.test" not in url for url in job.result_urls)
    assert sim.ledger.duplicates() == {}


def test_outputs_on_another_disk_than_the_run_folder(tmp_path: Path, small_disk: Path) -> None:
    """Review finding: downloads are written in DIR/.partial/ and renamed into outputs/;
    with outputs/ on another disk (a symlink to a bigger one) the rename fails (EXDEV)
    and every paid result was `download_failed`. They are copied across instead."""
    out = tmp_path / "run"
    out.mkdir()
    (small_disk / "outputs").mkdir()
    (out / "outputs").symlink_to(small_disk / "outputs")

    async def main() -> RunSummary:
        env = SimEnv()
        return await env.run_library(out, records_for(make_jobs(3, models=("z-image",))))

    summary = in_virtual_time(main)
    assert summary.counts == {"succeeded": 3}
    assert len(list((small_disk / "outputs").rglob("*.png"))) == 3
    assert not list(out.rglob("*.part")) and not list(small_disk.rglob("*.part"))
