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

from liangxin_batch.cli._exit import exit_code_for
from liangxin_batch.errors import ConfigError
from liangxin_batch.simulator import QUIRKS, FaultProfile, SimConfig, load_fault_profile
from liangxin_batch.simulator._reply import ERROR_MESSAGES
from tests.sim_support import MODEL, RECORD, harness, result_urls

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


# -- forced error codes and envelope quirks ------------------------------------------------


@pytest.mark.parametrize("code", [400, 408, 433, 501, 505])
@pytest.mark.parametrize("style", ["body", "status", "bare"])
async def test_create_errors_force_a_code_in_each_style(code: int, style: str) -> None:
    async with harness(faulty(create_errors={code: 1.0}, error_style=style)) as h:
        response = await h.create()
        if style == "body":  # the service's usual way: HTTP 200, the code in the body
            assert response.status_code == 200
            assert response.json() == {"code": code, "msg": ERROR_MESSAGES[code], "data": None}
        elif style == "status":
            assert response.status_code == code
            assert response.json() == {"code": code, "msg": ERROR_MESSAGES[code], "data": None}
        else:  # a gateway's plain page: only the status says what happened
            assert response.status_code == code
            assert response.headers["content-type"].startswith("text/plain")
            assert response.text == ERROR_MESSAGES[code]
        (event,) = h.sim.ledger.create_attempts()
        assert event.outcome == str(code) and event.http_status == response.status_code
        assert h.sim.ledger.creates() == [] and h.sim.balance() == SimConfig().credits


async def test_error_style_applies_to_create_500_and_455_too() -> None:
    async with harness(faulty(create_455=1.0, error_style="status")) as h:
        response = await h.create()
        assert response.status_code == 455 and response.json()["code"] == 455


async def test_create_errors_share_the_create_roll_deterministically() -> None:
    faults: dict[str, Any] = {"create_500": 0.1, "create_errors": {433: 0.2, 408: 0.2}}

    async def outcomes(seed: int) -> list[str]:
        async with harness(SimConfig(seed=seed, faults=FaultProfile(**faults))) as h:
            seen = []
            for n in range(200):
                h.clock.advance(1.0)  # stay under the create limit
                seen.append(str((await h.create(f"p{n}")).json()["code"]))
            assert len(h.sim.ledger.creates()) == seen.count("200")
            return seen

    first = await outcomes(7)
    counts = {code: first.count(code) for code in set(first)}
    assert set(counts) == {"200", "500", "408", "433"}
    for code, expected in (("500", 20), ("408", 40), ("433", 40), ("200", 100)):
        assert expected / 2 <= counts[code] <= expected * 1.6, counts
    assert await outcomes(7) == first  # same seed, same answers
    assert await outcomes(8) != first


async def test_poll_errors_force_recordinfo_codes_and_ledger_them() -> None:
    async with harness(faulty(poll_errors={505: 0.5})) as h:
        task_id = await h.create_id()
        codes = []
        for _ in range(40):
            h.clock.advance(0.2)  # stay under the recordInfo limit
            codes.append((await h.record(task_id))["code"])
        assert {505, 200} == set(codes) and 8 <= codes.count(505) <= 32
        ledgered = [e.outcome for e in h.sim.ledger.polls()]
        assert ledgered.count("505") == codes.count(505)


async def test_no_quirks_keep_the_documented_shape() -> None:
    async with harness() as h:
        body = (await h.create()).json()
        assert set(body) == {"code", "msg", "data"} and set(body["data"]) == {"taskId"}
        data = (await h.record(body["data"]["taskId"]))["data"]
        assert data["state"] == "waiting" and data["resultJson"] == ""


async def test_quirks_on_the_wire() -> None:
    async with harness(faulty(quirks=QUIRKS, create_errors={433: 0.5}, fail=1.0)) as h:
        answers = []
        for n in range(12):  # the seed gives 433s and successes among these
            answers.append((await h.create(f"p{n}")).json())
        error = next(a for a in answers if a["code"] == "433")
        assert "msg" not in error and error["message"] == ERROR_MESSAGES[433]
        assert error["data"] is None and "requestId" in error and "meta" in error
        ok = [a for a in answers if a["code"] == "200"]
        assert ok and len(ok) == len(h.sim.ledger.creates())
        assert ok[0]["message"] == "success" and ok[0]["data"]["recordId"].startswith("rec_")
        task_id = ok[0]["data"]["taskId"]

        running = await h.record(task_id)
        assert running["code"] == "200" and running["data"] is None  # null_data
        assert h.sim.ledger.polls()[-1].outcome == "waiting"  # the ledger keeps the truth
        h.clock.set(h.sim.task(task_id).done_at)
        failed = (await h.record(task_id))["data"]
        assert failed["state"] == "fail" and failed["resultJson"] is None
        assert failed["progress"] == 100 and failed["vendor"] == {"queue": "sim-a", "retries": 0}
        # 401 (answered before the simulator core) is shaped the same way
        h.client.headers["Authorization"] = "Bearer nope"
        denied = (await h.client.get(RECORD, params={"taskId": task_id})).json()
        assert denied["code"] == "401" and "message" in denied and "msg" not in denied


async def test_quirk_unknown_state_and_null_result_json_while_running() -> None:
    quirks = frozenset({"unknown_state", "null_result_json"})
    async with harness(SimConfig(latency_scale=1.0, faults=FaultProfile(quirks=quirks))) as h:
        task_id = await h.create_id()
        task = h.sim.task(task_id)
        seen = []
        for share in (0.0, 0.2, 0.5):
            h.clock.set(task.created_at + task.duration * share)
            data = (await h.record(task_id))["data"]
            seen.append(data["state"])
            assert data["resultJson"] is None
        assert seen == ["pending", "queued", "processing"]
        assert [e.outcome for e in h.sim.ledger.polls()] == ["waiting", "queuing", "generating"]
        data = await h.finish(task_id)
        assert data["state"] == "success" and result_urls(data)


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


def test_fault_profile_codes_style_and_quirks_from_yaml_and_json(tmp_path: Path) -> None:
    expected = FaultProfile(
        create_errors={433: 0.25, 501: 0.5},
        poll_errors={408: 0.1},
        error_style="bare",
        quirks=frozenset({"message_key", "unknown_state"}),
    )
    yaml_file = tmp_path / "faults.yaml"
    yaml_file.write_text(
        "create_errors: {433: 0.25, '501': 5e-1}\npoll_errors:\n  408: 0.1\n"
        "error_style: bare\nquirks: [message_key, unknown_state]\n"
    )
    assert load_fault_profile(yaml_file) == expected
    json_file = tmp_path / "faults.json"
    json_file.write_text(
        json.dumps(
            {
                "create_errors": {"433": 0.25, "501": 0.5},  # JSON keys are always text
                "poll_errors": {"408": 0.1},
                "error_style": "bare",
                "quirks": ["unknown_state", "message_key"],
            }
        )
    )
    assert load_fault_profile(json_file) == expected


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
        ("create_errors: {abc: 0.1}\n", "abc"),
        ("create_errors: {200: 0.1}\n", "400..599"),
        ("create_errors: {433: 2}\n", "433"),
        ("create_errors: [433]\n", "create_errors"),
        ("create_500: 0.5\ncreate_errors: {433: 0.6}\n", "exceed"),
        ("poll_errors: {500: 0.6, 455: 0.6}\n", "exceed"),
        ("error_style: loud\n", "error_style"),
        ("quirks: [message_key, shouting]\n", "shouting"),
        ("quirks: message_key\n", "quirks"),
    ],
)
def test_bad_fault_profiles_are_config_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as err:
        load_fault_profile(path)
    assert exit_code_for(err.value) == 2


def test_missing_profile_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_fault_profile(tmp_path / "nope.yaml")


def test_job_key_ignores_key_order_but_not_the_model() -> None:
    from liangxin_batch.simulator import canonical_job_key

    assert canonical_job_key(MODEL, {"a": 1, "b": 2}) == canonical_job_key(MODEL, {"b": 2, "a": 1})
    assert canonical_job_key(MODEL, {"a": 1}) != canonical_job_key("z-image", {"a": 1})
