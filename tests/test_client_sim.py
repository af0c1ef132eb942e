"""The real client against the real simulator, in-process and over a loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from liangxin_batch import _errors as E
from liangxin_batch._client import LiangXinClient
from liangxin_batch._envelope import TaskState
from liangxin_batch.simulator import (
    FaultProfile,
    ManualClock,
    SimConfig,
    create_app,
    serve_in_thread,
)

KEY = "sk-client-sim-0123456789"
GOOD = {"prompt": "a lighthouse", "output_format": "png"}


@pytest.fixture(params=["in-process", "loopback"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """Yields make(config, clock=None) -> (client factory, simulator)."""
    servers: list[Any] = []

    def make(config: SimConfig, clock: ManualClock | None = None) -> tuple[Any, Any]:
        app = create_app(config, clock=clock)
        if request.param == "in-process":
            transport: httpx.AsyncBaseTransport | None = httpx.ASGITransport(app=app)
            base = "http://sim"
        else:
            ctx = serve_in_thread(app)
            base = ctx.__enter__()
            servers.append(ctx)
            transport = None

        def client(key: str = KEY) -> LiangXinClient:
            return LiangXinClient(api_key=key, base_url=base, transport=transport)

        return client, app.state.sim

    yield make
    for ctx in servers:
        ctx.__exit__(None, None, None)


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro())


def test_create_poll_success_and_credits(make_client: Callable[..., Any]) -> None:
    clock = ManualClock()
    client, _ = make_client(SimConfig(api_key=KEY, credits=100), clock)

    async def main() -> None:
        async with client() as c:
            task_id = await c.create_task("google/nano-banana", GOOD)
            rec = await c.get_task(task_id)
            assert rec.state in (TaskState.WAITING, TaskState.QUEUING, TaskState.GENERATING)
            clock.advance(60)
            rec = await c.get_task(task_id)
            assert rec.state is TaskState.SUCCESS and rec.result_urls
            fresh = await c.get_download_url(rec.result_urls[0])
            assert fresh.startswith("http")
            assert await c.get_credits() < 100

    run(main)


@pytest.mark.parametrize(
    ("setup", "model", "values", "error"),
    [
        ("wrong-key", "google/nano-banana", GOOD, E.AuthError),
        ("", "no-such-model", GOOD, E.InvalidInputError),
        ("", "z-image", {"prompt": "x", "aspect_ratio": "16-9"}, E.InvalidInputError),
        ("no-credits", "google/nano-banana", GOOD, E.InsufficientCreditsError),
        ("all-500", "google/nano-banana", GOOD, E.ServerError),
        ("all-455", "google/nano-banana", GOOD, E.MaintenanceError),
        ("lost-reply", "google/nano-banana", GOOD, E.AmbiguousError),
    ],
)
def test_create_errors(
    make_client: Callable[..., Any], setup: str, model: str, values: dict[str, Any], error: type
) -> None:
    faults = FaultProfile(
        create_500=1.0 if setup == "all-500" else 0.0,
        create_455=1.0 if setup == "all-455" else 0.0,
        lost_reply=1.0 if setup == "lost-reply" else 0.0,
    )
    credits = 0 if setup == "no-credits" else 1000
    client, sim = make_client(SimConfig(api_key=KEY, credits=credits, faults=faults))
    key = "sk-wrong-000000000000" if setup == "wrong-key" else KEY

    async def main() -> None:
        async with client(key) as c:
            with pytest.raises(error):
                await c.create_task(model, values)

    run(main)
    created = len(sim.ledger.creates())
    assert created == (1 if setup == "lost-reply" else 0)


def test_rate_limit_429_with_retry_after(make_client: Callable[..., Any]) -> None:
    clock = ManualClock()
    client, _ = make_client(SimConfig(api_key=KEY, create_limit=2), clock)

    async def main() -> None:
        async with client() as c:
            await c.create_task("google/nano-banana", GOOD)
            await c.create_task("google/nano-banana", GOOD)
            with pytest.raises(E.RateLimitedError) as info:
                await c.create_task("google/nano-banana", GOOD)
            assert info.value.retry_after is not None and 0 < info.value.retry_after <= 10

    run(main)


def test_record_info_unknown_task_is_404(make_client: Callable[..., Any]) -> None:
    client, _ = make_client(SimConfig(api_key=KEY))

    async def main() -> None:
        async with client() as c:
            with pytest.raises(E.NotFoundError):
                await c.get_task("task-that-does-not-exist")

    run(main)
