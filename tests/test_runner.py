"""The runner against the simulator: completion, exactly-once creates, limits, faults."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._runner import Runner
from liangxin_batch.simulator import FaultProfile
from tests.runner_harness import SimEnv, in_virtual_time, make_jobs
from tests.state_support import counts_in, drive
from tests.test_ratelimit import max_in_any_window


def states(out: Path) -> dict[str, int]:
    return counts_in(out)


def test_hundreds_of_jobs_complete_once_each_within_the_limits(tmp_path: Path) -> None:
    jobs = make_jobs(400)

    async def main() -> tuple[RunSummary, SimEnv, float]:
        env = SimEnv()
        start = env.loop.time()
        summary = await env.run(tmp_path, jobs)
        return summary, env, env.loop.time() - start

    summary, env, elapsed = in_virtual_time(main)
    ledger = env.sim.ledger
    assert summary.counts == {"succeeded": 400}
    assert summary.exit_code == 0
    assert len(ledger.creates()) == 400
    assert ledger.duplicates() == {}
    attempts = ledger.create_attempts()
    assert [e.outcome for e in attempts].count("429") == 0, "configured rate = service rate"
    assert max_in_any_window(ledger.admitted_create_times(), 10.0) <= 20
    assert [e for e in ledger.polls() if e.outcome == "429"] == []
    # Image tasks: about three polls or fewer each.
    assert len(ledger.polls()) / 400 <= 3.0
    # Total time close to the lower bound: jobs / rate + slowest generation.
    lower = 400 / 2.0
    assert elapsed <= lower * 1.10 + 30


def test_failed_generations_are_failed_and_others_finish(tmp_path: Path) -> None:
    async def main() -> RunSummary:
        env = SimEnv(faults=FaultProfile(fail=0.3))
        return await env.run(tmp_path, make_jobs(50))

    summary = in_virtual_time(main)
    counts = summary.counts
    assert counts.get("failed", 0) > 5
    assert counts["failed"] + counts["succeeded"] == 50
    assert summary.exit_code == 1


def test_500_and_455_bursts_are_retried_without_duplicates(tmp_path: Path) -> None:
    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(create_500=0.3, create_455=0.2))
        return await env.run(tmp_path, make_jobs(80)), env

    summary, env = in_virtual_time(main)
    assert summary.counts == {"succeeded": 80}
    assert env.sim.ledger.duplicates() == {}
    outcomes = [e.outcome for e in env.sim.ledger.create_attempts()]
    assert outcomes.count("500") + outcomes.count("455") > 10


def test_lost_replies_become_unknown_and_are_never_resubmitted(tmp_path: Path) -> None:
    jobs = make_jobs(60)

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(lost_reply=0.2))
        first = await env.run(tmp_path, jobs)
        second = await env.run(tmp_path, jobs)  # resume: unknown jobs stay unknown
        return first, second, env

    first, second, env = in_virtual_time(main)
    unknown = first.counts.get("unknown", 0)
    assert unknown > 3
    assert first.exit_code == 1
    assert second.counts.get("unknown", 0) == unknown
    assert env.sim.ledger.duplicates() == {}
    assert len(env.sim.ledger.creates()) == 60


def test_resubmit_unknown_is_the_users_choice(tmp_path: Path) -> None:
    jobs = make_jobs(40)

    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv(faults=FaultProfile(lost_reply=0.25))
        await env.run(tmp_path, jobs)
        env.sim.config.faults.lost_reply = 0.0
        return await env.run(tmp_path, jobs, settings=RunSettings(resubmit_unknown=True)), env

    summary, env = in_virtual_time(main)
    assert summary.counts == {"succeeded": 40}
    # The lost ones were created twice: that is what --resubmit-unknown risks, knowingly.
    assert len(env.sim.ledger.creates()) > 40


def test_402_stops_submission_then_top_up_and_resume_finishes(tmp_path: Path) -> None:
    jobs = make_jobs(30, models=("z-image",))

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        from liangxin_batch.simulator import SimConfig
        from tests.runner_harness import KEY

        env = SimEnv(SimConfig(api_key=KEY, credits=6))  # a few z-image tasks only
        first = await env.run(tmp_path, jobs)
        env.sim.top_up(10_000)
        second = await env.run(tmp_path, jobs)
        return first, second, env

    first, second, env = in_virtual_time(main)
    assert first.exit_code == 3
    assert "402" in (first.stopped_reason or "")
    assert 0 < first.counts.get("succeeded", 0) < 30
    assert first.counts.get("pending", 0) > 0
    assert second.counts == {"succeeded": 30}
    assert env.sim.ledger.duplicates() == {}


def test_401_stops_at_once_with_exit_3(tmp_path: Path) -> None:
    from liangxin_batch.simulator import SimConfig
    from tests.runner_harness import KEY

    async def main() -> RunSummary:
        env = SimEnv(SimConfig(api_key="other-key"))
        env.config = SimConfig(api_key=KEY)  # the client will send the wrong key
        return await env.run(tmp_path, make_jobs(10))

    summary = in_virtual_time(main)
    assert summary.exit_code == 3
    assert "401" in (summary.stopped_reason or "")
    assert summary.counts == {"pending": 10}


def test_429_storm_slows_down_and_completes(tmp_path: Path) -> None:
    async def main() -> tuple[RunSummary, SimEnv]:
        env = SimEnv()
        # We believe in 40 per 10 s; the service allows 20: a storm of 429s.
        settings = RunSettings(create_limit=40)
        return await env.run(tmp_path, make_jobs(400), settings=settings), env

    summary, env = in_virtual_time(main)
    assert summary.counts == {"succeeded": 400}
    outcomes = [e.outcome for e in env.sim.ledger.create_attempts()]
    # It slows down after the first 429s instead of hitting the wall every window
    # (without slowing down: 40 429s for 400 jobs).
    assert 0 < outcomes.count("429") <= 10
    assert env.sim.ledger.duplicates() == {}


def test_interrupt_checkpoints_and_resume_finishes(tmp_path: Path) -> None:
    jobs = make_jobs(100)

    async def main() -> tuple[RunSummary, RunSummary, SimEnv]:
        env = SimEnv()

        def interrupt_later(runner: Runner) -> None:
            asyncio.get_running_loop().call_later(20.0, runner.interrupt)

        first = await env.run(tmp_path, jobs, before=interrupt_later)
        second = await env.run(tmp_path, jobs)
        return first, second, env

    first, second, env = in_virtual_time(main)
    assert first.exit_code == 130
    assert first.counts.get("pending", 0) > 0
    assert first.counts.get("submitting", 0) == 0
    assert second.counts == {"succeeded": 100}
    assert env.sim.ledger.duplicates() == {}
    assert len(env.sim.ledger.creates()) == 100


def test_task_timeout_then_resume_polls_again(tmp_path: Path) -> None:
    from liangxin_batch.simulator import SimConfig
    from tests.runner_harness import KEY

    jobs = make_jobs(5, models=("kling-3.0/video",))
    settings = RunSettings(task_timeout=30)

    async def main() -> tuple[RunSummary, RunSummary, RunSummary, SimEnv]:
        env = SimEnv(SimConfig(api_key=KEY, latency_scale=5.0))  # ~10 minutes per video
        first = await env.run(tmp_path, jobs, settings=settings)
        # The same timeout again: each resume polls at once and gives a fresh window.
        second = await env.run(tmp_path, jobs, settings=settings)
        await asyncio.sleep(1200)
        third = await env.run(tmp_path, jobs, settings=settings)
        return first, second, third, env

    first, second, third, env = in_virtual_time(main)
    assert first.counts == {"timed_out": 5}
    assert second.counts == {"timed_out": 5}
    # Each task is asked at once and again when its fresh 30 s end (the schedule follows
    # the video's expected two minutes, but never polls past a deadline).
    assert second.polls >= 10, "each task was polled for a fresh 30 s, not once"
    assert third.counts == {"succeeded": 5}
    assert len(env.sim.ledger.creates()) == 5


def test_a_callback_hint_during_a_poll_in_progress_is_not_lost(tmp_path: Path) -> None:
    """A's hint waits behind B at the poll limiter while A's earlier poll answers
    "generating" and reschedules A for later: the hint's poll must still come first."""
    import time as wall

    from liangxin_batch.catalog._catalog import default_catalog
    from liangxin_batch.core._envelope import TaskRecord, TaskState
    from liangxin_batch.core._states import JobState
    from liangxin_batch.run._ratelimit import SlidingWindowLimiter
    from liangxin_batch.run._runner import Runner
    from liangxin_batch.state._store import StateStore
    from liangxin_batch.state._sync import sync_jobs

    class SlowClient:
        """recordInfo behind the client's own limiter (1 per 2 s), answers slowly."""

        def __init__(self) -> None:
            self.done: set[str] = set()
            self.calls: list[tuple[float, str]] = []
            self.limiter = SlidingWindowLimiter(1, 2.0)
            self.create_limiter = SlidingWindowLimiter(20, 10.0)
            self.accounts = {"default": self}  # the one account: its limiters are these
            self.name = "default"
            self.stopped = None
            self.poll_limiter = self.limiter

        async def poll_turn(self, account: object = None) -> SlowClient:
            await self.limiter.acquire()
            return self  # a turn: get_task once, release

        def release(self) -> None:
            pass

        async def get_task(self, task_id: str, *, account: str | None = None) -> TaskRecord:
            self.calls.append((asyncio.get_running_loop().time(), task_id))
            finished = task_id in self.done
            await asyncio.sleep(0.5)  # the answer is on its way when the callback comes
            return TaskRecord(
                task_id=task_id,
                state=TaskState.SUCCESS if finished else TaskState.GENERATING,
                result_urls=("http://x/1.png",) if finished else (),
            )

    async def main() -> float:
        loop = asyncio.get_running_loop()
        store = StateStore.in_dir(tmp_path)
        jobs = make_jobs(2, models=("kling-3.0/video",))
        sync_jobs(store, jobs, allow_changed=False)
        now = wall.time()
        for job, task_id in zip(jobs, ("A", "B"), strict=True):
            drive(store, job.job_id, JobState.SUBMITTED, task_id=task_id, submitted_at=now)
        client = SlowClient()
        runner = Runner(
            store=store,
            # Runner takes the concrete LiangXinClient (no protocol in the library); this
            # fake has just the parts the poll path uses: poll_turn, release, get_task,
            # create_limiter.
            client=cast(LiangXinClient, client),
            catalog=default_catalog(),
            settings=RunSettings(poll_limit=1, poll_window=2.0),
        )
        run = asyncio.create_task(runner.run())
        while not client.calls:  # the first poll has started; the other waits 2 s for its turn
            await asyncio.sleep(0.05)
        first = client.calls[0][1]
        client.done.add(first)
        hinted_at = loop.time()
        assert runner.poll_now(first)
        while runner.has_flight(first):
            await asyncio.sleep(0.05)
        waited = loop.time() - hinted_at
        runner.interrupt()
        await run
        store.close()
        return waited

    waited = in_virtual_time(main)
    # Two limiter turns (the other task's, then the hint's) and one answer: about 4.5 s.
    assert waited < 5.0, f"the hint's poll was dropped: finished {waited:.1f}s after the callback"


def test_the_runner_records_times_from_the_clock_it_is_given(tmp_path: Path) -> None:
    from liangxin_batch.catalog._catalog import default_catalog
    from liangxin_batch.run._control import LoopClock
    from liangxin_batch.state._store import StateStore
    from liangxin_batch.state._sync import sync_jobs
    from tests.state_support import jobs_in

    async def main() -> None:
        env = SimEnv()
        store = StateStore.in_dir(tmp_path)
        sync_jobs(store, make_jobs(3), allow_changed=False)
        client = env.client()
        runner = Runner(
            store=store,
            client=client,
            catalog=default_catalog(),
            settings=RunSettings(),
            clock=LoopClock(wall=lambda: 1_234_567.0),
        )
        try:
            await runner.run()
        finally:
            await client.aclose()
            store.close()

    in_virtual_time(main)
    jobs = jobs_in(tmp_path)
    assert {j.submitted_at for j in jobs.values()} == {1_234_567.0}


def test_two_answers_for_one_task_finish_it_once(tmp_path: Path) -> None:
    """A callback's hint sends a second poll while the first is on the wire, and both
    answer "success": the task finishes once, and the late answer changes nothing."""
    from liangxin_batch.catalog._catalog import default_catalog
    from liangxin_batch.core._envelope import TaskRecord, TaskState
    from liangxin_batch.core._states import JobState
    from liangxin_batch.run._ratelimit import SlidingWindowLimiter
    from liangxin_batch.state._store import StateStore
    from liangxin_batch.state._sync import sync_jobs

    class DoneClient:
        def __init__(self) -> None:
            self.calls: list[str] = []
            self.limiter = SlidingWindowLimiter(10, 1.0)
            self.create_limiter = SlidingWindowLimiter(20, 10.0)
            self.accounts = {"default": self}  # the one account: its limiters are these
            self.name = "default"
            self.stopped = None
            self.poll_limiter = self.limiter

        async def poll_turn(self, account: object = None) -> DoneClient:
            await self.limiter.acquire()
            return self

        def release(self) -> None:
            pass

        async def get_task(self, task_id: str, *, account: str | None = None) -> TaskRecord:
            self.calls.append(task_id)
            await asyncio.sleep(0.5)  # both polls are out before either answers
            return TaskRecord(task_id, TaskState.SUCCESS, result_urls=("http://x/1.png",))

    async def main() -> tuple[RunSummary, list[str]]:
        import time as wall

        store = StateStore.in_dir(tmp_path)
        job = make_jobs(1, models=("kling-3.0/video",))[0]
        sync_jobs(store, [job], allow_changed=False)
        drive(store, job.job_id, JobState.SUBMITTED, task_id="A", submitted_at=wall.time())
        client = DoneClient()
        runner = Runner(
            store=store,
            client=cast(LiangXinClient, client),  # the poll path's parts only (see above)
            catalog=default_catalog(),
            settings=RunSettings(),
        )
        run = asyncio.create_task(runner.run())
        while not client.calls:
            await asyncio.sleep(0.05)
        assert runner.poll_now("A")
        summary = await run
        store.close()
        return summary, client.calls

    summary, calls = in_virtual_time(main)
    assert calls == ["A", "A"], "the hint's poll went out while the first was on the wire"
    assert summary.counts == {"succeeded": 1}
