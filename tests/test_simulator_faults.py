"""Injected faults, callbacks and fault profile files, in-process on a ManualClock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from liangxin_batch._errors import ConfigError
from liangxin_batch.simulator import FaultProfile, SimConfig, load_fault_profile
from tests.sim_support import MODEL, harness, result_urls

pytestmark = pytest.mark.anyio


def faulty(**faults: Any) -> SimConfig:
    return SimConfig(faults=FaultProfile(**faults))


@pytest.mark.parametrize(("fault", "code"), [("create_500", 500), ("create_455", 455)])
async def test_create_faults_answer_without_creating(fault: str, code: int) -> None:
    async with harness(faulty(**{fault: 1.0})) as h:
        answer = (await h.create()).json()
        assert answer["code"] == code and answer["data"] is None
        assert h.sim.ledger.creates() == [] and h.sim.task_ids() == []
        assert h.sim.balance() == SimConfig().credits
        assert [e.outcome for e in h.sim.ledger.create_attempts()] == [str(code)]


async def test_fault_shares_split_one_roll() -> None:
    async with harness(faulty(create_500=0.2, create_455=0.2, lost_reply=0.2)) as h:
        seen: dict[str, int] = {}
        for n in range(300):
            h.clock.advance(1.0)  # stay under the create limit
            try:
                outcome = str((await h.create(f"p{n}")).json()["code"])
            except httpx.RemoteProtocolError:
                outcome = "lost"
            seen[outcome] = seen.get(outcome, 0) + 1
        assert set(seen) == {"200", "500", "455", "lost"}
        for name in ("500", "455", "lost"):
            assert 30 <= seen[name] <= 95, seen  # ~60 each; the seed makes this fixed
        assert len(h.sim.ledger.creates()) == seen["200"] + seen["lost"]


async def test_lost_reply_creates_and_charges_but_answers_nothing() -> None:
    async with harness(faulty(lost_reply=1.0)) as h:
        with pytest.raises(httpx.RemoteProtocolError):
            await h.create("ghost")
        (event,) = h.sim.ledger.creates()
        assert event.outcome == "lost_reply" and event.http_status is None
        assert event.input == {"prompt": "ghost"}
        assert h.sim.balance() == SimConfig().credits - 4
        assert event.task_id is not None
        data = await h.finish(event.task_id)  # the task is real and finishes
        assert data["state"] == "success"


async def test_fail_share_fails_some_tasks_with_code_500() -> None:
    async with harness(faulty(fail=0.5)) as h:
        states = []
        for n in range(40):
            h.clock.advance(1.0)
            states.append((await h.finish(await h.create_id(f"p{n}")))["state"])
        assert (
            8 <= states.count("fail") <= 32 and states.count("success") + states.count("fail") == 40
        )


async def test_broken_download_breaks_only_the_first_serve() -> None:
    async with harness(faulty(broken_download=1.0)) as h:
        task_id = await h.create_id()
        (url,) = result_urls(await h.finish(task_id))
        with pytest.raises(httpx.RemoteProtocolError):
            await h.client.get(url)
        whole = await h.client.get(url)
        assert whole.content == h.sim.file_bytes(task_id, 0)
        broken, complete = h.sim.ledger.files_served()
        size = len(whole.content)
        assert (broken.outcome, broken.complete, broken.bytes_sent) == ("broken", False, size // 2)
        assert (complete.outcome, complete.complete, complete.bytes_sent) == (
            "complete",
            True,
            size,
        )
        assert broken.sha256 == complete.sha256 == hashlib.sha256(whole.content).hexdigest()


async def test_slow_download_is_paced_by_the_byte_rate() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async with harness(faulty(slow_download_bps=2000), sleep=fake_sleep) as h:
        task_id = await h.create_id()
        (url,) = result_urls(await h.finish(task_id))
        content = (await h.client.get(url)).content
        assert content == h.sim.file_bytes(task_id, 0)
        assert sum(slept) == pytest.approx(len(content) / 2000)
        assert len(slept) >= len(content) // 200  # paced in 0.1 s steps, not one wait


async def test_expired_result_url_is_403_and_download_url_renews_it() -> None:
    async with harness(faulty(url_ttl_seconds=60)) as h:
        task_id = await h.create_id()
        (url,) = result_urls(await h.finish(task_id))
        h.clock.advance(60)
        assert (await h.client.get(url)).status_code == 200
        h.clock.advance(1)
        expired = await h.client.get(url)
        assert expired.status_code == 403 and "download-url" in expired.text

        fresh = (await h.client.post("/api/v1/common/download-url", json={"url": url})).json()
        assert fresh["code"] == 200
        signed = fresh["data"]
        assert (await h.client.get(signed)).content == h.sim.file_bytes(task_id, 0)
        tampered = signed[:-1] + ("0" if signed[-1] != "0" else "1")
        assert (await h.client.get(tampered)).status_code == 403
        h.clock.advance(20 * 60 - 1)
        assert (await h.client.get(signed)).status_code == 200
        h.clock.advance(1)
        assert (await h.client.get(signed)).status_code == 403  # a link lasts 20 minutes
        statuses = [e.http_status for e in h.sim.ledger.files_served()]
        assert statuses == [200, 403, 200, 403, 200, 403]


async def test_poll_404_window_after_create() -> None:
    async with harness(faulty(poll_404_seconds=2.0)) as h:
        task_id = await h.create_id()
        assert (await h.record(task_id))["code"] == 404
        h.clock.advance(1.999)
        assert (await h.record(task_id))["code"] == 404
        h.clock.advance(0.001)
        assert (await h.record(task_id))["code"] == 200


# -- callbacks ------------------------------------------------------------------------


class Receiver:
    """A callback endpoint collecting what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.arrived = asyncio.Event()

        async def hook(request: Request) -> JSONResponse:
            self.received.append((dict(request.headers), await request.json()))
            self.arrived.set()
            return JSONResponse({"code": 200, "msg": "success"})

        self.app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@asynccontextmanager
async def receiver_client() -> AsyncIterator[tuple[Receiver, httpx.AsyncClient]]:
    receiver = Receiver()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app)) as client:
        yield receiver, client


def expected_signature(key: str, task_id: str, timestamp: str) -> str:
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


async def test_success_callback_is_sent_once_and_signed() -> None:
    async with receiver_client() as (receiver, cb_client):
        config = SimConfig(hmac_key="whsec-123")
        async with harness(config, callback_client=cb_client) as h:
            task_id = await h.create_id(callBackUrl="http://receiver/hook")
            assert await h.sim.run_due_callbacks() == 0  # not finished yet
            assert receiver.received == []
            data = await h.finish(task_id)
            assert await h.sim.run_due_callbacks() == 1
            assert await h.sim.run_due_callbacks() == 0  # exactly once

        ((headers, payload),) = receiver.received
        assert payload["code"] == 200
        assert payload["msg"] == "Playground task completed successfully."
        assert payload["data"] == data  # the same shape as recordInfo
        timestamp = headers["x-webhook-timestamp"]
        assert int(timestamp) == int(h.clock())
        assert headers["x-webhook-signature"] == expected_signature("whsec-123", task_id, timestamp)
        (event,) = h.sim.ledger.callbacks()
        assert (event.task_id, event.outcome, event.http_status) == (task_id, "delivered", 200)
        assert event.path == "http://receiver/hook"


async def test_fail_callback_has_code_501_and_no_signature_without_key() -> None:
    async with receiver_client() as (receiver, cb_client):
        async with harness(faulty(fail=1.0), callback_client=cb_client) as h:
            task_id = await h.create_id(callBackUrl="http://receiver/hook")
            await h.finish(task_id)
            await h.sim.run_due_callbacks()
        ((headers, payload),) = receiver.received
        assert (payload["code"], payload["msg"]) == (501, "Playground task failed.")
        data = payload["data"]
        assert (data["taskId"], data["state"], data["failCode"]) == (task_id, "fail", "500")
        assert data["resultJson"] is None and data["creditsConsumed"] == 0
        assert "x-webhook-signature" not in headers


async def test_callback_fires_by_itself_when_the_clock_reaches_the_end() -> None:
    async with receiver_client() as (receiver, cb_client):
        async with harness(callback_client=cb_client) as h:
            task_id = await h.create_id(callBackUrl="http://receiver/hook")
            h.clock.set(h.sim.task(task_id).done_at)
            with anyio.fail_after(5):
                await receiver.arrived.wait()  # the scheduled task noticed the clock
            assert await h.sim.run_due_callbacks() == 0  # ...and it was not sent twice
        assert [p["data"]["taskId"] for _, p in receiver.received] == [task_id]


async def test_dropped_callbacks_are_ledgered_but_not_sent() -> None:
    async with receiver_client() as (receiver, cb_client):
        async with harness(faulty(drop_callbacks=True), callback_client=cb_client) as h:
            task_id = await h.create_id(callBackUrl="http://receiver/hook")
            await h.finish(task_id)
            assert await h.sim.run_due_callbacks() == 1
        assert receiver.received == []
        (event,) = h.sim.ledger.callbacks()
        assert (event.outcome, event.http_status) == ("dropped", None)


async def test_unreachable_callback_url_is_ledgered_as_an_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = httpx.MockTransport(refuse)
    async with (
        httpx.AsyncClient(transport=transport) as cb_client,
        harness(callback_client=cb_client) as h,
    ):
        task_id = await h.create_id(callBackUrl="http://nowhere/hook")
        await h.finish(task_id)
        await h.sim.run_due_callbacks()
        (event,) = h.sim.ledger.callbacks()
        assert event.outcome == "error: ConnectError"


async def test_closing_cancels_waiting_callbacks() -> None:
    async with receiver_client() as (receiver, cb_client):
        async with harness(callback_client=cb_client) as h:
            await h.create_id(callBackUrl="http://receiver/hook")
            tasks = set(h.sim.callbacks._tasks)
            assert len(tasks) == 1
        assert all(t.cancelled() for t in tasks)
        assert receiver.received == []


# -- profile files --------------------------------------------------------------------


def test_fault_profile_from_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "faults.yaml"
    yaml_file.write_text("faults:\n  fail: 0.25\n  lost_reply: 1e-3\n  drop_callbacks: true\n")
    assert load_fault_profile(yaml_file) == FaultProfile(
        fail=0.25, lost_reply=0.001, drop_callbacks=True
    )
    json_file = tmp_path / "faults.json"
    json_file.write_text(json.dumps({"slow_download_bps": 5000, "url_ttl_seconds": 30}))
    assert load_fault_profile(json_file) == FaultProfile(slow_download_bps=5000, url_ttl_seconds=30)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_fault_profile(empty) == FaultProfile()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("fial: 0.1\n", "fial"),
        ("fail: 1.5\n", "fail"),
        ("fail: lots\n", "fail"),
        ("drop_callbacks: 1\n", "drop_callbacks"),
        ("slow_download_bps: 0.5\n", "slow_download_bps"),
        ("create_500: 0.6\ncreate_455: 0.6\n", "exceed"),
        ("- fail\n", "mapping"),
        ("fail: [\n", "YAML"),
    ],
)
def test_bad_fault_profiles_are_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as err:
        load_fault_profile(path)
    assert err.value.exit_code == 2


def test_missing_profile_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_fault_profile(tmp_path / "nope.yaml")


def test_job_key_ignores_key_order_but_not_the_model() -> None:
    from liangxin_batch.simulator import canonical_job_key

    assert canonical_job_key(MODEL, {"a": 1, "b": 2}) == canonical_job_key(MODEL, {"b": 2, "a": 1})
    assert canonical_job_key(MODEL, {"a": 1}) != canonical_job_key("z-image", {"a": 1})
