"""Test helpers for your own code that runs batches: a loop with virtual time, and a
simulated LiangXin service to run against.

Nothing here is used by the library, and nothing is switched on by importing it: your
tests choose it, as httpx's `MockTransport` and stamina's testing mode are chosen.

    from liangxin_batch import run_batch_async
    from liangxin_batch.testing import SimulatedService, run_in_virtual_time

    def test_my_pipeline(tmp_path):
        async def main():
            service = SimulatedService()            # on this loop's (virtual) clock
            summary = await run_batch_async(
                "prompts.csv", out_dir=tmp_path, **service.run_options()
            )
            assert service.ledger.duplicates() == {}
            return summary

        summary = run_in_virtual_time(main)      # minutes of model latency, in milliseconds
        assert summary.exit_code == 0

With pytest installed, `liangxin_service` is a fixture you can take into your own
conftest (`from liangxin_batch.testing import liangxin_service`): a `SimulatedService`
on the wall clock, for tests that run on an ordinary event loop.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

import httpx

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.simulator import FaultProfile, Ledger, SimConfig, Simulator, create_app

__all__ = [
    "SimulatedService",
    "VirtualTimeLoop",
    "run_in_virtual_time",
    "sample_input",
]

T = TypeVar("T")

#: The key the simulated service accepts (a test key: it opens nothing real).
TEST_API_KEY = "sk-liangxin-batch-testing"


def sample_input(model: str, prompt: str) -> dict[str, Any]:
    """A valid createTask input for a built-in `model`: the prompt plus every required
    field at its catalog default (KeyError for a model the catalog does not have)."""
    spec = default_catalog().get(model)
    if spec is None:
        raise KeyError(model)
    values: dict[str, Any] = {"prompt": prompt}
    for name, f in spec.fields.items():
        if f.required and name != "prompt" and f.default is not None:
            values[name] = f.default
    return values


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        loop = self.loop
        if loop is None or loop.pending_threads:
            return super().select(timeout if timeout is None else min(timeout, 0.01))
        events = super().select(0)
        if events or timeout is None or timeout <= 0:
            if not events and timeout is None:
                # Nothing scheduled: only real I/O can wake us; wait for it briefly.
                return super().select(0.01)
            return events
        loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer instead of waiting for it.

    Code under test keeps calling `asyncio.sleep` and `loop.time()`; a 10-second rate
    window passes in microseconds, deterministically. While work runs in threads
    (`run_in_executor`, `asyncio.to_thread`) the clock does not jump, so thread work is
    never "timed out".
    """

    def __init__(self, start: float = 1_000.0) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = start
        self.pending_threads = 0

    def time(self) -> float:
        return self.now

    def run_in_executor(  # type: ignore[override]  # typeshed's TypeVarTuple form
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        self.pending_threads += 1
        fut = super().run_in_executor(executor, func, *args)

        def done(_: asyncio.Future[T]) -> None:
            self.pending_threads -= 1

        fut.add_done_callback(done)
        return fut


def run_in_virtual_time(main: Callable[[], Awaitable[T]]) -> T:
    """Run `main()` to completion on a fresh `VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class SimulatedService:
    """The project's LiangXin simulator, in process, reached without a socket.

    Made inside a running loop, it keeps time on that loop's clock (virtual under
    `run_in_virtual_time`). `run_options()` are the keyword arguments that point
    `run_batch_async` at it; `ledger` is everything it saw (creates, polls, files).
    """

    def __init__(
        self,
        *,
        faults: FaultProfile | None = None,
        config: SimConfig | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if config is None:
            config = SimConfig(api_key=TEST_API_KEY, seed=1, faults=faults or FaultProfile())
        elif faults is not None:
            raise ValueError("give the faults inside `config`, or `faults` without a config")
        if clock is None:
            clock = asyncio.get_running_loop().time
        self.config = config
        self.app = create_app(config, clock=clock)
        self.sim: Simulator = self.app.state.sim
        self.transport = httpx.ASGITransport(app=self.app)

    @property
    def ledger(self) -> Ledger:
        return self.sim.ledger

    @property
    def api_key(self) -> str:
        return self.config.api_key

    def run_options(self) -> dict[str, Any]:
        """`api_key`, `base_url`, `transport` and `download_transport` for a run."""
        return {
            "api_key": self.config.api_key,
            "base_url": "http://liangxin.test",
            "transport": self.transport,
            "download_transport": self.transport,
        }


def _service_fixture() -> Iterator[SimulatedService]:
    import time

    # Wall time: model latencies shrunk a hundredfold, so a task takes well under a second.
    config = SimConfig(api_key=TEST_API_KEY, seed=1, latency_scale=0.01)
    yield SimulatedService(config=config, clock=time.time)


try:  # the fixture exists only where pytest does: the library never needs it
    import pytest
except ImportError:  # pragma: no cover - pytest is a dev dependency here
    pass
else:
    liangxin_service = pytest.fixture(name="liangxin_service")(_service_fixture)
    __all__ += ["liangxin_service"]
