"""Run the real Runner against the in-process simulator, in virtual time.

The simulator and the runner share the VirtualTimeLoop's clock, so real model latencies
and the real 20-per-10-s window cost no wall time, and results are deterministic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._runner import Runner
from liangxin_batch.simulator import FaultProfile, SimConfig, Simulator, create_app
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import sync_jobs
from liangxin_batch.testing import sample_input
from tests.sim_support import sim_of
from tests.virtual_time import run_virtual

T = TypeVar("T")

KEY = "sk-test-runner-0000"
MODELS = ("z-image", "seedream/4.5-text-to-image", "google/nano-banana", "nano-banana-pro")


@dataclass(frozen=True)
class TestJob:
    job_id: str
    index: int
    model: str
    input: Mapping[str, Any]
    columns: Mapping[str, str] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        blob = json.dumps({"m": self.model, "i": self.input}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


#: A prompt plus every required field at its catalog default.
valid_input = sample_input


def make_jobs(n: int, models: Sequence[str] = MODELS, tag: str = "") -> list[TestJob]:
    return [
        TestJob(
            f"job-{i:05d}",
            i,
            models[i % len(models)],
            valid_input(models[i % len(models)], f"prompt {tag}{i}"),
        )
        for i in range(n)
    ]


class SimEnv:
    """A simulator app plus a way to make runs (and restarts) against it."""

    def __init__(self, config: SimConfig | None = None, *, faults: FaultProfile | None = None):
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.config = config or SimConfig(api_key=KEY, seed=3, faults=faults or FaultProfile())
        self.app = create_app(self.config, clock=loop.time)
        self.sim: Simulator = sim_of(self.app)

    #: Wraps the API transport of the next clients (a test's fault between runner and sim).
    wrap_api: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None

    def client(self, settings: RunSettings | None = None) -> LiangXinClient:
        transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=self.app)
        if self.wrap_api is not None:
            transport = self.wrap_api(transport)
        return LiangXinClient(
            api_key=self.config.api_key,
            base_url="http://sim",
            transport=transport,
            settings=settings,
        )

    async def run(
        self,
        out: Path,
        jobs: Sequence[TestJob],
        *,
        settings: RunSettings | None = None,
        before: Callable[[Runner], Any] | None = None,
    ) -> RunSummary:
        """One run of the batch in `out`: the first, or a resume after an earlier one."""
        store = StateStore.in_dir(out)
        sync_jobs(store, jobs, allow_changed=False)
        settings = settings or RunSettings()
        client = self.client(settings)
        runner = Runner(
            store=store,
            client=client,
            catalog=default_catalog(),
            settings=settings,
        )
        try:
            if before is not None:
                before(runner)
            return await runner.run()
        finally:
            await client.aclose()
            store.close()

    async def run_library(
        self,
        out: Path,
        records: Sequence[Mapping[str, Any]],
        *,
        settings: RunSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> RunSummary:
        """One whole `run_batch_async` (sync, run, downloads, reports) against this simulator."""
        from liangxin_batch.run._run import run_batch_async

        return await run_batch_async(
            records,
            out_dir=out,
            catalog=default_catalog(),
            settings=settings,
            api_key=self.config.api_key,
            base_url="http://sim",
            transport=transport or httpx.ASGITransport(app=self.app),
            download_transport=httpx.ASGITransport(app=self.app),
        )


def in_virtual_time(main: Callable[[], Awaitable[T]]) -> T:
    """Run `main()` on a fresh VirtualTimeLoop (see `tests.virtual_time.run_virtual`)."""
    return run_virtual(main)


class ForwardTransport(httpx.AsyncBaseTransport):
    """Sends to an ASGI app chosen later (the receiver exists only once the run starts)."""

    def __init__(self) -> None:
        self.target: httpx.ASGITransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.target is None:
            raise httpx.ConnectError("nobody listening", request=request)
        return await self.target.handle_async_request(request)


def records_for(jobs: Sequence[TestJob]) -> list[dict[str, Any]]:
    return [{"id": j.job_id, "model": j.model, **j.input} for j in jobs]
