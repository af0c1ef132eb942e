"""Throughput that adapts: the in-flight cap counts tasks running at the service, polls
follow learned latencies, and the poll budget goes to the likeliest finished first."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._runner import Runner
from liangxin_batch.simulator import SimConfig
from tests.runner_harness import KEY, SimEnv, in_virtual_time, make_jobs


def running_at(env: SimEnv, now: float) -> int:
    """Tasks the service is generating at `now` (its own record, not the client's)."""
    tasks = (env.sim.task(t) for t in env.sim.task_ids())
    return sum(1 for t in tasks if t.created_at <= now < t.done_at)


def test_the_cap_counts_tasks_running_at_the_service_and_is_used(tmp_path: Path) -> None:
    """Five running at once, whatever the client has not polled yet: the service never
    runs many more than five for us, and the cap is used, not left idle."""
    cap = 5
    running: list[int] = []
    followed: list[int] = []

    async def main() -> RunSummary:
        env = SimEnv(SimConfig(api_key=KEY, seed=3, latency_range={"*": (20.0, 60.0)}))

        def watch(runner: Runner) -> None:
            async def sample() -> None:
                while True:
                    running.append(running_at(env, env.loop.time()))
                    followed.append(runner.in_flight)
                    await asyncio.sleep(0.5)

            samplers.append(env.loop.create_task(sample()))

        samplers: list[asyncio.Task[None]] = []
        try:
            settings = RunSettings(max_in_flight=cap)
            return await env.run(tmp_path, make_jobs(60), settings=settings, before=watch)
        finally:
            for task in samplers:
                task.cancel()

    summary = in_virtual_time(main)
    assert summary.counts == {"succeeded": 60}
    # The cap is an expectation (a task past its kind's latencies counts by the chance it
    # is still running), so the service may run one or two more for a moment, not more.
    assert max(running) <= 1.5 * cap, "the service ran far more of ours than the cap"
    assert statistics.quantiles(running, n=20)[-1] <= cap + 1
    assert max(followed) <= 3 * cap
    middle = running[len(running) // 5 : -len(running) // 5]
    assert statistics.mean(middle) >= 0.8 * cap, f"cap left idle: {statistics.mean(middle):.1f}"


def first_poll_delays(env: SimEnv, task_ids: set[str]) -> list[float]:
    created = {e.task_id: e.at for e in env.sim.ledger.creates() if e.task_id in task_ids}
    first: dict[str, float] = {}
    for e in env.sim.ledger.polls():
        if e.task_id in created and e.task_id not in first:
            first[e.task_id] = e.at - created[e.task_id]
    return list(first.values())


def test_a_catalog_wrong_by_ten_times_is_learned_and_a_resume_starts_informed(
    tmp_path: Path,
) -> None:
    """Models the catalog thinks take 15-19 s finish in 1-3 s: a few explorers find out,
    the rest are polled by what they found; the next run of the batch knows at once."""
    models = ("seedream/4.5-text-to-image", "nano-banana-pro")
    first_jobs = make_jobs(40, models=models, tag="a")
    more = make_jobs(80, models=models, tag="b")[40:]  # new ids, new prompts

    async def main() -> tuple[SimEnv, set[str], set[str]]:
        env = SimEnv(SimConfig(api_key=KEY, seed=3, latency_range={"*": (1.0, 3.0)}))
        await env.run(tmp_path, first_jobs)
        before = {e.task_id for e in env.sim.ledger.creates() if e.task_id}
        await env.run(tmp_path, first_jobs + more)
        after = {e.task_id for e in env.sim.ledger.creates() if e.task_id} - before
        return env, before, after

    env, before, after = in_virtual_time(main)
    assert len(after) == 40
    first_run = sorted(first_poll_delays(env, before))
    resumed = first_poll_delays(env, after)
    # First run: three explorers per model look at a quarter of the catalog's time; the
    # others wait at most until the explorers have answered, not the catalog's 15-19 s.
    assert first_run[-1] < 8.0
    # The resume learned from the state: every first poll near the 1-3 s it knows.
    assert max(resumed) <= 3.5
    polls = env.sim.ledger.polls()
    assert len(polls) / 80 <= 1.6


def test_a_record_naming_another_task_is_a_failed_poll_not_a_hang(tmp_path: Path) -> None:
    """A proxy that rewrites the taskId in recordInfo's answer: the poll must count as
    failed (retried, then timed out), never leave the task unpolled and the run waiting."""
    import json

    import httpx

    class Upper(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if not request.url.path.endswith("recordInfo"):
                return response
            body = json.loads(await response.aread())
            if isinstance(body.get("data"), dict) and body["data"].get("taskId"):
                body["data"]["taskId"] = body["data"]["taskId"].upper()
            return httpx.Response(response.status_code, json=body)

    async def main() -> RunSummary:
        env = SimEnv()
        env.wrap_api = Upper
        run = env.run(tmp_path, make_jobs(3), settings=RunSettings(image_timeout=120))
        return await asyncio.wait_for(run, 10_000)  # virtual seconds: a hang fails here

    summary = in_virtual_time(main)
    assert summary.counts == {"timed_out": 3}
