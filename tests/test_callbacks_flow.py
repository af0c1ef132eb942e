"""Runs with the callback receiver: callbacks finish tasks, polling is the safety net."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._callback_setup import CallbackOptions
from liangxin_batch.run._run import run_batch_async
from liangxin_batch.simulator import FaultProfile, SimConfig, Simulator, create_app
from tests.runner_harness import KEY, ForwardTransport, in_virtual_time, make_jobs, records_for
from tests.sim_support import sim_of

HMAC = "whsec-test-0123456789"


def run_with_callbacks(
    out: Path,
    n: int,
    *,
    sim_hmac: str | None,
    receiver_hmac: str | None,
    faults: FaultProfile | None = None,
    wrap_api: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    wrap_callbacks: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    span: list[float] | None = None,
    trust_signed: bool = False,
) -> tuple[RunSummary, Simulator, dict[str, int]]:
    jobs = make_jobs(n)
    counters: dict[str, int] = {}

    async def main() -> tuple[RunSummary, Simulator]:
        import asyncio

        loop = asyncio.get_running_loop()
        forward = ForwardTransport()
        callback_client = httpx.AsyncClient(
            transport=wrap_callbacks(forward) if wrap_callbacks else forward
        )
        config = SimConfig(api_key=KEY, seed=9, hmac_key=sim_hmac, faults=faults or FaultProfile())
        app = create_app(config, clock=loop.time, callback_client=callback_client)
        receivers: list[Any] = []

        def ready(receiver: Any) -> None:
            receivers.append(receiver)
            forward.target = httpx.ASGITransport(app=receiver.app)

        started = loop.time()
        try:
            summary = await run_batch_async(
                records_for(jobs),
                out_dir=out,
                catalog=default_catalog(),
                api_key=KEY,
                base_url="http://sim",
                transport=(wrap_api or (lambda t: t))(httpx.ASGITransport(app=app)),
                download_transport=httpx.ASGITransport(app=app),
                callbacks=CallbackOptions(
                    public_base="https://hook.example/lx",
                    hmac_key=receiver_hmac,
                    in_process=True,
                    clock=loop.time,
                    trust_signed=trust_signed,
                ),
                receiver_ready=ready,
            )
        finally:
            await sim_of(app).aclose()
            await callback_client.aclose()
        counters.update(receivers[0].counters)
        if span is not None:
            span[:] = [started, loop.time()]
        return summary, sim_of(app)

    summary, sim = in_virtual_time(main)
    return summary, sim, counters


def test_signed_callbacks_finish_tasks_with_few_polls(tmp_path: Path) -> None:
    summary, sim, counters = run_with_callbacks(tmp_path, 120, sim_hmac=HMAC, receiver_hmac=HMAC)
    assert summary.counts == {"succeeded": 120}
    assert summary.finished_by_callback == 120
    assert len(sim.ledger.polls()) / 120 < 1.5
    assert counters["accepted"] == 120
    assert sim.ledger.duplicates() == {}


def test_trusted_signed_callbacks_cost_no_recordinfo_but_failures_are_checked(
    tmp_path: Path,
) -> None:
    """--trust-signed-callbacks: a signed success with its URLs needs no recordInfo; a
    signed failure is still asked about (a paid result is never given up on a body)."""
    summary, sim, counters = run_with_callbacks(
        tmp_path,
        60,
        sim_hmac=HMAC,
        receiver_hmac=HMAC,
        faults=FaultProfile(fail=0.2),
        trust_signed=True,
    )
    failed = summary.counts.get("failed", 0)
    assert failed > 3 and summary.counts.get("succeeded", 0) == 60 - failed
    assert summary.finished_by_callback == 60
    from tests.state_support import jobs_in

    failed_tasks = {j.task_id for j in jobs_in(tmp_path).values() if j.state.value == "failed"}
    polled = {e.task_id for e in sim.ledger.polls()}
    assert failed_tasks <= polled, "every failure was checked with recordInfo"
    # Successes were taken from their signed callbacks; a few safety-net polls (the first
    # tasks of a kind look early) may still have asked about one before it finished.
    assert len(polled - failed_tasks) <= 6
    assert counters["accepted"] == 60


def test_unsigned_callbacks_are_hints_checked_by_one_poll(tmp_path: Path) -> None:
    summary, sim, _counters = run_with_callbacks(tmp_path, 60, sim_hmac=None, receiver_hmac=None)
    assert summary.counts == {"succeeded": 60}
    assert summary.finished_by_callback == 60
    assert len(sim.ledger.polls()) / 60 < 1.5


def test_unsigned_callbacks_are_refused_when_a_key_is_set(tmp_path: Path) -> None:
    summary, _sim, counters = run_with_callbacks(tmp_path, 20, sim_hmac=None, receiver_hmac=HMAC)
    assert summary.counts == {"succeeded": 20}  # polling still finishes the run
    assert summary.finished_by_callback == 0
    assert counters["refused_signature"] == 20


def test_dropped_callbacks_still_finish_by_polling(tmp_path: Path) -> None:
    summary, _sim, counters = run_with_callbacks(
        tmp_path, 40, sim_hmac=HMAC, receiver_hmac=HMAC, faults=FaultProfile(drop_callbacks=True)
    )
    assert summary.counts == {"succeeded": 40}
    assert summary.finished_by_callback == 0
    assert counters["accepted"] == 0


def test_lost_replies_are_reconciled_by_callbacks_without_paying_twice(tmp_path: Path) -> None:
    summary, sim, _ = run_with_callbacks(
        tmp_path, 60, sim_hmac=HMAC, receiver_hmac=HMAC, faults=FaultProfile(lost_reply=0.2)
    )
    lost = [e for e in sim.ledger.create_attempts() if e.outcome == "lost_reply"]
    assert len(lost) > 3
    assert summary.counts == {"succeeded": 60}, "every lost reply was reconciled"
    assert len(sim.ledger.creates()) == 60
    assert sim.ledger.duplicates() == {}


def test_a_run_ends_as_soon_as_every_lost_reply_is_reconciled(tmp_path: Path) -> None:
    """It used to wait out the whole callback window (3 x typical + 30 s) regardless."""
    span: list[float] = []
    summary, sim, _ = run_with_callbacks(
        tmp_path,
        20,
        sim_hmac=HMAC,
        receiver_hmac=HMAC,
        faults=FaultProfile(lost_reply=0.2),
        span=span,
    )
    assert summary.counts == {"succeeded": 20}
    assert any(e.outcome == "lost_reply" for e in sim.ledger.create_attempts())
    last_event = max(e.at for e in sim.ledger.events)
    assert span[1] - last_event < 5.0, "ended soon after the last reconciled task finished"


class SlowLostCreate(httpx.AsyncBaseTransport):
    """Every `every`-th createTask reaches the service, then its reply is lost after `delay`
    seconds: long enough for the task's callback to arrive while the job is `submitting`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, every: int, delay: float) -> None:
        self.inner = inner
        self.every = every
        self.delay = delay
        self.creates = 0
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/createTask"):
            self.creates += 1
            if self.creates % self.every == 0:
                await response.aread()
                self.lost += 1
                await asyncio.sleep(self.delay)  # virtual time: the reply never comes
                raise httpx.ReadTimeout("reply lost", request=request)
        return response


def test_a_callback_that_beats_a_lost_reply_still_reconciles_the_job(tmp_path: Path) -> None:
    """The callback arrives while createTask is still waiting for its (lost) reply."""
    slow: list[SlowLostCreate] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        slow.append(SlowLostCreate(inner, every=5, delay=45.0))
        return slow[0]

    summary, sim, counters = run_with_callbacks(
        tmp_path, 30, sim_hmac=HMAC, receiver_hmac=HMAC, wrap_api=wrap
    )
    assert slow[0].lost == 6
    assert summary.counts == {"succeeded": 30}, "every job whose reply was lost was reconciled"
    assert len(sim.ledger.creates()) == 30
    assert sim.ledger.duplicates() == {}
    assert counters["accepted"] == 30


def test_callbacks_for_tasks_from_before_a_crash_reach_the_resumed_run(tmp_path: Path) -> None:
    """The callback token belongs to the batch, so a restart keeps accepting them."""
    import asyncio

    jobs = make_jobs(30)

    async def main() -> tuple[RunSummary, Simulator, list[Any]]:
        loop = asyncio.get_running_loop()
        forward = ForwardTransport()
        callback_client = httpx.AsyncClient(transport=forward)
        config = SimConfig(api_key=KEY, seed=4, hmac_key=HMAC)
        app = create_app(config, clock=loop.time, callback_client=callback_client)
        receivers: list[Any] = []

        def ready(receiver: Any) -> None:
            receivers.append(receiver)
            forward.target = httpx.ASGITransport(app=receiver.app)

        async def one_run(interrupt_after: float | None) -> RunSummary:
            from liangxin_batch.run._run import RunHandle

            handle = RunHandle()
            if interrupt_after is not None:
                loop.call_later(interrupt_after, handle.interrupt)
            return await run_batch_async(
                records_for(jobs),
                out_dir=tmp_path,
                catalog=default_catalog(),
                api_key=KEY,
                base_url="http://sim",
                transport=httpx.ASGITransport(app=app),
                download_transport=httpx.ASGITransport(app=app),
                handle=handle,
                callbacks=CallbackOptions(
                    public_base="https://hook.example/lx",
                    hmac_key=HMAC,
                    in_process=True,
                    clock=loop.time,
                ),
                receiver_ready=ready,
            )

        try:
            first = await one_run(interrupt_after=4.0)
            assert first.interrupted and first.counts.get("submitted", 0) > 0
            second = await one_run(interrupt_after=None)
        finally:
            await sim_of(app).aclose()
            await callback_client.aclose()
        return second, sim_of(app), receivers

    second, sim, receivers = in_virtual_time(main)
    assert second.counts == {"succeeded": 30}
    assert receivers[0].token == receivers[1].token
    assert receivers[1].counters["refused_token"] == 0
    assert second.finished_by_callback == 30
    assert sim.ledger.duplicates() == {}


class SwapBody(httpx.AsyncBaseTransport):
    """An attacker on the path: keeps the signature headers, swaps the result URLs."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(await request.aread())
        data = body.get("data") or {}
        data["resultJson"] = json.dumps({"resultUrls": ["http://evil.test/x.png"]})
        data["state"] = "success"
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        forged = httpx.Request(request.method, request.url, headers=headers, json=body)
        return await self.inner.handle_async_request(forged)


def run_with_callbacks_swapped(out: Path, n: int, key: str) -> tuple[RunSummary, Simulator]:
    summary, sim, _ = run_with_callbacks(
        out, n, sim_hmac=key, receiver_hmac=key, wrap_callbacks=SwapBody
    )
    return summary, sim
