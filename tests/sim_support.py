"""Helpers for the simulator tests: an in-process client on a ManualClock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from liangxin_batch.simulator import ManualClock, SimConfig, Simulator, create_app

KEY = "sk-sim-local"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "google/nano-banana"  # cheap (4 credits), prompt is its only required field
CREATE = "/api/v1/jobs/createTask"
RECORD = "/api/v1/jobs/recordInfo"


def sim_of(app: Starlette) -> Simulator:
    """The `Simulator` behind an app from `create_app` (`app.state` is untyped)."""
    sim = app.state.sim
    assert isinstance(sim, Simulator), sim
    return sim


@dataclass
class Harness:
    client: httpx.AsyncClient
    sim: Simulator
    clock: ManualClock

    async def create(
        self, prompt: str = "a red fox", *, model: str = MODEL, **extra: Any
    ) -> httpx.Response:
        callback = extra.pop("callBackUrl", None)
        body: dict[str, Any] = {"model": model, "input": {"prompt": prompt, **extra}}
        if callback is not None:
            body["callBackUrl"] = callback
        return await self.client.post(CREATE, json=body)

    async def create_id(self, prompt: str = "a red fox", **extra: Any) -> str:
        response = await self.create(prompt, **extra)
        body = response.json()
        assert body["code"] == 200, body
        task_id: str = body["data"]["taskId"]
        return task_id

    async def record(self, task_id: str) -> dict[str, Any]:
        response = await self.client.get(RECORD, params={"taskId": task_id})
        body: dict[str, Any] = response.json()
        return body

    async def finish(self, task_id: str) -> dict[str, Any]:
        """Advance the clock past the task's end and return its recordInfo data."""
        task = self.sim.task(task_id)
        self.clock.set(max(self.clock(), task.done_at))
        body = await self.record(task_id)
        assert body["code"] == 200, body
        data: dict[str, Any] = body["data"]
        return data


def result_urls(data: dict[str, Any]) -> list[str]:
    urls: list[str] = json.loads(data["resultJson"])["resultUrls"]
    return urls


@asynccontextmanager
async def harness(
    config: SimConfig | None = None, *, clock: ManualClock | None = None, **kw: Any
) -> AsyncIterator[Harness]:
    clock = clock or ManualClock()
    app = create_app(config or SimConfig(), clock=clock, **kw)
    sim = sim_of(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim", headers=AUTH) as c:
        try:
            yield Harness(c, sim, clock)
        finally:
            await sim.aclose()


def named(stem: str) -> Callable[[str], Awaitable[str]]:
    """A Fetcher's `path_for` that names every file `stem` plus its extension."""

    async def path_for(ext: str) -> str:
        return f"{stem}{ext}"

    return path_for
