"""The real client against the real simulator, in-process and over a loopback socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import stamina

import liangxin_batch.errors as E
from liangxin_batch.cli._exit import exit_code_for
from liangxin_batch.core._envelope import TaskState
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.simulator import (
    QUIRKS,
    FaultProfile,
    ManualClock,
    SimConfig,
    create_app,
    serve_in_thread,
)
from liangxin_batch.simulator._reply import ERROR_MESSAGES
from tests.sim_support import sim_of

T = TypeVar("T")

KEY = "sk-client-sim-0123456789"
GOOD = {"prompt": "a lighthouse", "output_format": "png"}


class Switch:
    """An ASGI app that forwards each request to the current test's simulator app.

    One uvicorn server per module (starting and stopping one costs ~0.4 s) while every
    test still gets a fresh simulator behind a real loopback socket. The server's own
    `send` is passed through untouched, so a lost reply still drops the real connection.
    """

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # the per-test apps need no startup
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        assert self.app is not None, "no simulator app for this request"
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def loopback() -> Iterator[tuple[Switch, str]]:
    switch = Switch()
    with serve_in_thread(switch) as base_url:
        yield switch, base_url


@pytest.fixture(params=["in-process", "loopback"])
def make_client(
    request: pytest.FixtureRequest, loopback: tuple[Switch, str]
) -> Iterator[Callable[..., Any]]:
    """Yields make(config, clock=None) -> (client factory, simulator)."""
    switch, base_url = loopback

    def make(config: SimConfig, clock: ManualClock | None = None) -> tuple[Any, Any]:
        app = create_app(config, clock=clock)
        if request.param == "in-process":
            transport: httpx.AsyncBaseTransport | None = httpx.ASGITransport(app=app)
            base = "http://sim"
        else:
            switch.app = app
            base = base_url
            transport = None

        def client(key: str = KEY) -> LiangXinClient:
            return LiangXinClient(api_key=key, base_url=base, transport=transport)

        return client, sim_of(app)

    yield make
    switch.app = None


def run(coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
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
    # Never retried by the client (an unauthenticated call is not ledgered at all).
    assert len(sim.ledger.create_attempts()) == (0 if setup == "wrong-key" else 1)


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


# -- every listed error code, forced by the simulator ------------------------------------

#: code -> (class, retryable, fatal): the contract of _errors.py, written out so a change
#: to a flag is a visible test change.
CONTRACT: dict[int, tuple[type[E.APIError], bool, bool]] = {
    400: (E.BadRequestError, False, False),
    401: (E.AuthError, False, True),
    402: (E.InsufficientCreditsError, False, True),
    404: (E.NotFoundError, False, False),
    408: (E.UpstreamTimeoutError, True, False),
    422: (E.InvalidInputError, False, False),
    429: (E.RateLimitedError, True, False),
    433: (E.QuotaExceededError, False, True),
    455: (E.MaintenanceError, True, False),
    500: (E.ServerError, True, False),
    501: (E.GenerationFailedError, False, False),
    505: (E.FeatureDisabledError, False, True),
}
STYLES = ("body", "status", "bare")


def check_error(err: E.APIError, code: int, style: str) -> None:
    cls, retryable, fatal = CONTRACT[code]
    assert type(err) is cls
    assert err.api_code == code
    assert err.retryable is retryable
    assert err.fatal is fatal
    assert exit_code_for(err) == (3 if fatal else 1)  # fatal: the run stops, exit 3
    assert isinstance(err, E.APIError) and not isinstance(err, E.TransportError)
    assert err.http_status == (200 if style == "body" else code)
    # "bare": no envelope, so only the HTTP status can say what happened.
    assert err.message == (f"HTTP {code}" if style == "bare" else ERROR_MESSAGES[code])
    assert KEY not in str(err) and KEY not in repr(err)


def create_error(make_client: Callable[..., Any], faults: FaultProfile) -> tuple[E.APIError, Any]:
    """The error one createTask gets from a simulator with these faults, and the simulator."""
    client, sim = make_client(SimConfig(api_key=KEY, faults=faults))

    async def main() -> E.APIError:
        async with client() as c:
            with pytest.raises(E.APIError) as info:
                await c.create_task("google/nano-banana", GOOD)
            return info.value

    return run(main), sim


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("code", sorted(CONTRACT))
def test_create_task_every_error_code_typed_and_never_retried(
    make_client: Callable[..., Any], code: int, style: str
) -> None:
    faults = FaultProfile(create_errors={code: 1.0}, error_style=style)
    err, sim = create_error(make_client, faults)
    check_error(err, code, style)
    (attempt,) = sim.ledger.create_attempts()  # exactly one request, whatever the code
    assert attempt.outcome == str(code)
    assert attempt.http_status == (200 if style == "body" else code)
    assert sim.ledger.creates() == [] and sim.task_ids() == []
    assert sim.balance() == SimConfig().credits


@pytest.mark.parametrize("code", sorted(CONTRACT))
def test_record_info_every_error_code_retried_only_when_retryable(
    make_client: Callable[..., Any], code: int
) -> None:
    faults = FaultProfile(poll_errors={code: 1.0})
    client, sim = make_client(SimConfig(api_key=KEY, faults=faults))
    attempts = 3

    async def main() -> E.APIError:
        async with client() as c:
            task_id = await c.create_task("google/nano-banana", GOOD)
            with pytest.raises(E.APIError) as info:
                await c.get_task(task_id)
            return info.value

    with stamina.set_testing(True, attempts=attempts):  # no backoff waits in tests
        err = run(main)
    check_error(err, code, "body")
    polls = sim.ledger.polls()
    assert [p.outcome for p in polls] == [str(code)] * len(polls)
    # recordInfo is idempotent: retried on retryable codes, given up at once otherwise.
    assert len(polls) == (attempts if CONTRACT[code][1] else 1)
    assert len(sim.ledger.create_attempts()) == 1


def test_record_info_recovers_from_a_share_of_retryable_errors(
    make_client: Callable[..., Any],
) -> None:
    clock = ManualClock()
    faults = FaultProfile(poll_errors={408: 0.3, 500: 0.3})
    config = SimConfig(api_key=KEY, faults=faults, seed=5, poll_limit=1000)  # frozen clock
    client, sim = make_client(config, clock)

    async def main() -> list[TaskState]:
        async with client() as c:
            task_id = await c.create_task("google/nano-banana", GOOD)
            clock.advance(60)
            return [(await c.get_task(task_id)).state for _ in range(10)]

    with stamina.set_testing(True, attempts=20):
        states = run(main)
    assert states == [TaskState.SUCCESS] * 10
    outcomes = [p.outcome for p in sim.ledger.polls()]
    assert outcomes.count("success") == 10
    assert {"408", "500"} <= set(outcomes), outcomes  # the seed makes this fixed


# -- envelope quirks --------------------------------------------------------------------


@pytest.mark.parametrize("quirks", [*sorted(QUIRKS), "all"])
def test_envelope_quirks_full_flow(make_client: Callable[..., Any], quirks: str) -> None:
    """Every documented envelope quirk, alone and all at once: the client reads through."""
    chosen = QUIRKS if quirks == "all" else frozenset({quirks})
    clock = ManualClock()
    client, sim = make_client(
        SimConfig(api_key=KEY, credits=100, faults=FaultProfile(quirks=chosen)), clock
    )

    async def main() -> None:
        async with client() as c:
            task_id = await c.create_task("google/nano-banana", GOOD)
            rec = await c.get_task(task_id)
            # Running: whatever the quirk, never terminal and never with results.
            assert not rec.state.terminal and rec.result_urls == ()
            if "null_data" in chosen:
                assert rec.state is TaskState.UNKNOWN and rec.raw_state is None
                assert rec.task_id == task_id
            elif "unknown_state" in chosen:
                assert rec.state is TaskState.UNKNOWN
                assert rec.raw_state in ("pending", "queued", "processing")
            else:
                assert rec.state in (TaskState.WAITING, TaskState.QUEUING, TaskState.GENERATING)
            clock.advance(60)
            rec = await c.get_task(task_id)
            assert rec.state is TaskState.SUCCESS and rec.raw_state == "success"
            assert rec.task_id == task_id and rec.model == "google/nano-banana"
            assert len(rec.result_urls) == 1 and rec.fail_code is None
            assert (await c.get_download_url(rec.result_urls[0])).startswith("http")
            assert await c.get_credits() == 100 - 4

    run(main)
    assert [p.outcome for p in sim.ledger.polls()][-1] == "success"  # the real state
    assert len(sim.ledger.create_attempts()) == 1


@pytest.mark.parametrize("quirks", [frozenset(), frozenset({"null_result_json"}), QUIRKS])
def test_failed_task_with_empty_or_null_result_json(
    make_client: Callable[..., Any], quirks: frozenset[str]
) -> None:
    """resultJson is "" (default) or null on a failed task: no URLs, the failure is read."""
    clock = ManualClock()
    faults = FaultProfile(fail=1.0, quirks=quirks)
    client, sim = make_client(SimConfig(api_key=KEY, faults=faults), clock)

    async def main() -> None:
        async with client() as c:
            task_id = await c.create_task("google/nano-banana", GOOD)
            clock.advance(60)
            rec = await c.get_task(task_id)
            assert rec.state is TaskState.FAIL
            assert rec.result_urls == ()
            assert rec.fail_code == "500" and rec.fail_msg

    run(main)
    assert [p.outcome for p in sim.ledger.polls()] == ["fail"]
    # (test_simulator_faults proves the wire shows resultJson "" or null as configured)


@pytest.mark.parametrize("code", [400, 408, 433, 501, 505])
def test_errors_read_through_message_key_and_string_code(
    make_client: Callable[..., Any], code: int
) -> None:
    """`message` instead of `msg`, `code` as a string, extra fields, `data: null`."""
    faults = FaultProfile(create_errors={code: 1.0}, quirks=QUIRKS)
    err, sim = create_error(make_client, faults)
    check_error(err, code, "body")
    assert len(sim.ledger.create_attempts()) == 1
