"""The callback receiver: in-process over ASGITransport, and once over a real socket."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.types import Message

from liangxin_batch.core._envelope import TaskRecord, TaskState
from liangxin_batch.errors import ConfigError
from liangxin_batch.run._webhook import (
    COUNTERS,
    CallbackReceiver,
    ReceiverSettings,
    expected_signature,
    serve_receiver,
)
from liangxin_batch.simulator import ManualClock, SimConfig, webhook_signature
from tests.sim_support import harness

KEY = "whsec-test-key"
BASE = "https://public.example/hook"
JOB = "job-1"


@dataclass
class FakeSink:
    jobs: set[str] = field(default_factory=lambda: {JOB})
    deliveries: list[tuple[str, int, TaskRecord, bool]] = field(default_factory=list)

    def known_job(self, job_id: str) -> bool:
        return job_id in self.jobs

    def deliver(self, job_id: str, attempt: int, record: TaskRecord, *, verified: bool) -> None:
        self.deliveries.append((job_id, attempt, record, verified))


@dataclass
class Rig:
    receiver: CallbackReceiver
    sink: FakeSink
    client: httpx.AsyncClient
    clock: ManualClock

    def path(self, job_id: str = JOB, attempt: int = 0) -> str:
        return urlsplit(self.receiver.url_for(job_id, attempt)).path

    def signed(self, task_id: str, *, at: float | None = None, key: str = KEY) -> dict[str, str]:
        stamp = str(int(self.clock() if at is None else at))
        return {
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": webhook_signature(key, task_id, stamp),
        }

    async def post(
        self,
        body: dict[str, Any] | bytes,
        *,
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            path or self.path(),
            content=content,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    def refused_only(self, counter: str, times: int = 1) -> None:
        """Exactly `counter` moved (by `times`) and nothing reached the sink."""
        assert self.sink.deliveries == []
        assert {k: v for k, v in self.receiver.counters.items() if v} == {counter: times}


def payload(task_id: str = "task-abc", state: str = "success") -> dict[str, Any]:
    data: dict[str, Any] = {
        "taskId": task_id,
        "model": "google/nano-banana",
        "state": state,
        "param": "{}",
        "resultJson": json.dumps({"resultUrls": ["https://files.example/a.png"]}),
        "failCode": None,
        "failMsg": None,
        "costTime": 8,
        "createTime": 1_750_000_000_000,
        "completeTime": 1_750_000_008_000,
        "creditsConsumed": 4,
    }
    if state == "fail":
        data.update(resultJson=None, failCode="500", failMsg="boom", creditsConsumed=0)
        return {"code": 501, "msg": "Playground task failed.", "data": data}
    return {"code": 200, "msg": "Playground task completed successfully.", "data": data}


@asynccontextmanager
async def rig(
    *, hmac_key: str | None = KEY, attach: bool = True, **settings: Any
) -> AsyncIterator[Rig]:
    clock = ManualClock()
    receiver = CallbackReceiver(
        ReceiverSettings(public_base=BASE, hmac_key=hmac_key, **settings), clock=clock
    )
    sink = FakeSink()
    if attach:
        receiver.attach(sink)
    transport = httpx.ASGITransport(app=receiver.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        yield Rig(receiver, sink, client, clock)


# -- accepted ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_signed_callback_is_delivered_once_and_verified() -> None:
    async with rig() as r:
        response = await r.post(payload(), headers=r.signed("task-abc"), path=r.path(JOB, 2))
        assert response.status_code == 200
        assert response.json() == {"code": 200, "msg": "success"}
        [(job_id, attempt, record, verified)] = r.sink.deliveries
        assert (job_id, attempt, verified) == (JOB, 2, True)
        assert record.task_id == "task-abc"
        assert record.state is TaskState.SUCCESS
        assert record.result_urls == ("https://files.example/a.png",)
        assert record.credits_consumed == 4
        assert r.receiver.counters["accepted"] == 1


@pytest.mark.anyio
async def test_failed_task_callback_is_delivered_with_its_failure() -> None:
    async with rig(hmac_key=None) as r:
        assert (await r.post(payload(state="fail"))).status_code == 200
        [(_, _, record, verified)] = r.sink.deliveries
        assert record.state is TaskState.FAIL
        assert (record.fail_code, record.fail_msg, record.result_urls) == ("500", "boom", ())
        assert verified is False


@pytest.mark.anyio
async def test_unsigned_callback_without_a_key_is_delivered_unverified() -> None:
    async with rig(hmac_key=None) as r:
        assert (await r.post(payload())).status_code == 200
        [(job_id, attempt, record, verified)] = r.sink.deliveries
        assert (job_id, attempt, record.task_id, verified) == (JOB, 0, "task-abc", False)


@pytest.mark.anyio
async def test_path_is_accepted_with_and_without_the_public_prefix() -> None:
    async with rig(hmac_key=None) as r:
        full = r.path()
        assert full.startswith("/hook/")
        stripped = full.removeprefix("/hook")
        assert (await r.post(payload("t1"), path=full)).status_code == 200
        assert (await r.post(payload("t2"), path=stripped)).status_code == 200
        assert [d[2].task_id for d in r.sink.deliveries] == ["t1", "t2"]


@pytest.mark.anyio
async def test_duplicates_change_nothing() -> None:
    async with rig() as r:
        assert (await r.post(payload(), headers=r.signed("task-abc"))).status_code == 200
        r.clock.advance(5)  # a fresh, validly signed copy of the same outcome
        again = await r.post(payload(), headers=r.signed("task-abc"))
        assert again.status_code == 200
        assert again.json() == {"code": 200, "msg": "success"}
        assert len(r.sink.deliveries) == 1
        assert r.receiver.counters["duplicate"] == 1
        assert r.receiver.counters["accepted"] == 1


@pytest.mark.anyio
async def test_duplicates_without_a_key_change_nothing_but_a_new_state_is_delivered() -> None:
    async with rig(hmac_key=None) as r:
        for _ in range(3):
            assert (await r.post(payload(state="generating"))).status_code == 200
        assert (await r.post(payload(state="success"))).status_code == 200
        assert [d[2].state for d in r.sink.deliveries] == [TaskState.GENERATING, TaskState.SUCCESS]
        assert r.receiver.counters["duplicate"] == 2


# -- refused ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_forged_signature_is_refused() -> None:
    async with rig() as r:
        response = await r.post(payload(), headers=r.signed("task-abc", key="not-the-key"))
        assert response.status_code == 401
        r.refused_only("refused_signature")


@pytest.mark.anyio
async def test_signature_for_another_task_is_refused() -> None:
    async with rig() as r:
        response = await r.post(payload("task-abc"), headers=r.signed("task-other"))
        assert response.status_code == 401
        r.refused_only("refused_signature")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Webhook-Timestamp": "1750000000"},
        {"X-Webhook-Signature": "c2lnbmF0dXJl"},
        {"X-Webhook-Timestamp": "soon", "X-Webhook-Signature": "c2lnbmF0dXJl"},
    ],
    ids=["unsigned", "no-signature", "no-timestamp", "bad-timestamp"],
)
async def test_unsigned_or_half_signed_when_a_key_is_set_is_refused(
    headers: dict[str, str],
) -> None:
    async with rig() as r:
        response = await r.post(payload(), headers=headers)
        assert response.status_code == 401
        r.refused_only("refused_signature")


@pytest.mark.anyio
async def test_replayed_post_is_refused_409_and_not_delivered_twice() -> None:
    async with rig() as r:
        headers = r.signed("task-abc")
        assert (await r.post(payload(), headers=headers)).status_code == 200
        r.clock.advance(10)
        replay = await r.post(payload(), headers=headers)
        assert replay.status_code == 409
        assert len(r.sink.deliveries) == 1
        assert r.receiver.counters["refused_replay"] == 1


@pytest.mark.anyio
async def test_replayed_signature_with_another_body_is_refused() -> None:
    # The replay set is keyed on the signed triple, not on (taskId, state).
    async with rig() as r:
        headers = r.signed("task-abc")
        assert (await r.post(payload(state="fail"), headers=headers)).status_code == 200
        replay = await r.post(payload(state="success"), headers=headers)
        assert replay.status_code == 409
        assert [d[2].state for d in r.sink.deliveries] == [TaskState.FAIL]


@pytest.mark.anyio
@pytest.mark.parametrize("offset", [-301, 301])
async def test_timestamp_outside_the_window_is_stale(offset: int) -> None:
    async with rig() as r:
        headers = r.signed("task-abc", at=r.clock() + offset)
        response = await r.post(payload(), headers=headers)
        assert response.status_code == 401
        r.refused_only("refused_stale")


@pytest.mark.anyio
async def test_an_old_replay_is_stale_once_the_window_has_passed() -> None:
    async with rig() as r:
        headers = r.signed("task-abc")
        assert (await r.post(payload(), headers=headers)).status_code == 200
        r.clock.advance(301)
        assert (await r.post(payload(), headers=headers)).status_code == 401
        assert r.receiver.counters["refused_stale"] == 1
        assert len(r.sink.deliveries) == 1


@pytest.mark.anyio
async def test_declared_oversized_body_is_refused_without_reading_it() -> None:
    receiver = CallbackReceiver(ReceiverSettings(public_base=BASE, max_body=100))
    sink = FakeSink()
    receiver.attach(sink)
    sent: list[Message] = []

    async def receive() -> Message:
        raise AssertionError("the body was read")

    async def send(message: Message) -> None:
        sent.append(message)

    path = urlsplit(receiver.url_for(JOB, 0)).path
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", b"101"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("receiver", 80),
    }
    await receiver.app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert sink.deliveries == []
    assert receiver.counters["oversized"] == 1


@pytest.mark.anyio
async def test_streamed_oversized_body_is_refused_at_the_cap() -> None:
    chunks_read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal chunks_read
        for _ in range(1000):
            chunks_read += 1
            yield b"x" * 64

    async with rig(hmac_key=None, max_body=256) as r:
        # An async iterable goes out chunked: no Content-Length to refuse up front.
        response = await r.client.post(r.path(), content=endless())
        assert response.status_code == 413
        r.refused_only("oversized")
        assert chunks_read < 1000


@pytest.mark.anyio
async def test_body_at_the_cap_is_accepted() -> None:
    body = json.dumps(payload()).encode()
    async with rig(hmac_key=None, max_body=len(body)) as r:
        assert (await r.post(body)).status_code == 200
        assert len(r.sink.deliveries) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe{}",
        b"[]",
        b'{"code": 200}',
        b'{"data": "task-abc"}',
        b'{"data": {}}',
        b'{"data": {"taskId": ""}}',
        b'{"data": {"taskId": 5}}',
        b"[" * 50_000,
    ],
    ids=[
        "empty",
        "not-json",
        "not-utf8",
        "array",
        "no-data",
        "data-string",
        "no-task-id",
        "empty-task-id",
        "numeric-task-id",
        "deep-nesting",
    ],
)
async def test_malformed_body_is_400(body: bytes) -> None:
    async with rig(hmac_key=None) as r:
        response = await r.post(body)
        assert response.status_code == 400
        r.refused_only("malformed")


@pytest.mark.anyio
async def test_malformed_is_checked_before_the_signature() -> None:
    async with rig() as r:
        assert (await r.post(b"nope", headers=r.signed("task-abc"))).status_code == 400
        r.refused_only("malformed")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path_for",
    [
        lambda token: f"/hook/{'x' * len(token)}/{JOB}/0",
        lambda token: f"/hook/{token[:-1]}/{JOB}/0",
        lambda token: f"/other/{token}/{JOB}/0",
        lambda token: f"/hook/{token}/{JOB}",
        lambda token: f"/hook/{token}/{JOB}/0/extra",
        lambda token: "/",
    ],
    ids=["wrong-token", "short-token", "wrong-prefix", "too-short", "too-long", "root"],
)
async def test_wrong_token_or_path_is_404(path_for: Any) -> None:
    async with rig() as r:
        path = path_for(r.receiver.token)
        response = await r.post(payload(), path=path, headers=r.signed("task-abc"))
        assert response.status_code == 404
        r.refused_only("refused_token")


@pytest.mark.anyio
@pytest.mark.parametrize("attempt", ["x", "-1", "1.0", "99999999999"])
async def test_unknown_job_or_bad_attempt_is_404(attempt: str) -> None:
    async with rig() as r:
        unknown = await r.post(payload(), path=r.path("job-nobody-knows"))
        assert unknown.status_code == 404
        bad = r.path().rsplit("/", 1)[0] + "/" + attempt
        assert (await r.post(payload(), path=bad)).status_code == 404
        r.refused_only("refused_job", 2)


@pytest.mark.anyio
async def test_no_sink_attached_is_503() -> None:
    async with rig(attach=False) as r:
        response = await r.post(payload(), headers=r.signed("task-abc"))
        assert response.status_code == 503
        r.refused_only("unattached")


@pytest.mark.anyio
async def test_only_post_is_routed() -> None:
    async with rig(hmac_key=None) as r:
        assert (await r.client.get(r.path())).status_code == 405
        assert r.sink.deliveries == []


@dataclass
class FailOnceSink(FakeSink):
    failed: bool = False

    def deliver(self, job_id: str, attempt: int, record: TaskRecord, *, verified: bool) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("queue closed")
        super().deliver(job_id, attempt, record, verified=verified)


@pytest.mark.anyio
async def test_a_failing_sink_does_not_mark_the_callback_delivered() -> None:
    async with rig(hmac_key=None) as r:
        sink = FailOnceSink()
        r.receiver.attach(sink)
        with pytest.raises(RuntimeError, match="queue closed"):
            await r.post(payload())
        assert (await r.post(payload())).status_code == 200
        assert len(sink.deliveries) == 1
        assert r.receiver.counters["duplicate"] == 0


def test_counters_start_at_zero() -> None:
    receiver = CallbackReceiver(ReceiverSettings(public_base=BASE))
    assert dict(receiver.counters) == dict.fromkeys(COUNTERS, 0)


# -- urls -------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["job-1", "a b/c?d#e%f&g", "日本語", "x+y", "..", "%2F"])
def test_url_for_and_matches_round_trip(job_id: str) -> None:
    receiver = CallbackReceiver(ReceiverSettings(public_base=BASE + "/"), token="T" * 32)
    url = receiver.url_for(job_id, 3)
    parts = urlsplit(url)
    assert url.startswith(f"{BASE}/{'T' * 32}/")
    assert url.endswith("/3")
    assert parts.query == "" and parts.fragment == ""
    assert len(parts.path.strip("/").split("/")) == 4  # hook/token/job/attempt
    assert receiver.matches(url, job_id, 3)
    assert not receiver.matches(url, job_id, 4)
    assert not receiver.matches(url, job_id + "x", 3)
    assert not receiver.matches(url + "/", job_id, 3)
    assert not receiver.matches(None, job_id, 3)


@pytest.mark.anyio
@pytest.mark.parametrize("job_id", ["a b/c?d#e%f&g", "日本語", "x+y", "%2F"])
async def test_quoted_job_ids_reach_the_sink_intact(job_id: str) -> None:
    async with rig(hmac_key=None) as r:
        r.sink.jobs.add(job_id)
        assert (await r.post(payload(), path=r.path(job_id, 1))).status_code == 200
        assert [(d[0], d[1]) for d in r.sink.deliveries] == [(job_id, 1)]


def test_each_receiver_gets_its_own_unguessable_token() -> None:
    a = CallbackReceiver(ReceiverSettings(public_base=BASE))
    b = CallbackReceiver(ReceiverSettings(public_base=BASE))
    assert a.token != b.token
    assert len(a.token) >= 32


def test_expected_signature_matches_the_simulators() -> None:
    assert expected_signature(KEY, "t", "1750000000") == webhook_signature(KEY, "t", 1750000000)


@pytest.mark.parametrize(
    "settings",
    [
        {"public_base": "ftp://public.example/hook"},
        {"public_base": "public.example/hook"},
        {"public_base": "https://"},
        {"public_base": "https://public.example/hook?x=1"},
        {"public_base": BASE, "hmac_key": "  "},
        {"public_base": BASE, "max_body": 0},
        {"public_base": BASE, "timestamp_window": 0},
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ReceiverSettings(**settings)


@pytest.mark.parametrize("token", ["", "short", "has/slash" * 4, "spaces here " * 3])
def test_a_bad_token_is_refused(token: str) -> None:
    with pytest.raises(ConfigError):
        CallbackReceiver(ReceiverSettings(public_base=BASE), token=token)


def test_the_key_never_appears_in_reprs_or_urls() -> None:
    settings = ReceiverSettings(public_base=BASE, hmac_key="s3cret-key")
    receiver = CallbackReceiver(settings)
    assert "s3cret-key" not in repr(settings)
    assert "s3cret-key" not in repr(receiver.counters)
    assert "s3cret-key" not in receiver.url_for(JOB, 0)


# -- over a real socket -----------------------------------------------------------------


@pytest.mark.anyio
async def test_serve_receiver_gets_the_simulators_signed_callback_over_loopback() -> None:
    before = signal.getsignal(signal.SIGINT)
    async with harness(SimConfig(hmac_key=KEY)) as h:
        receiver = CallbackReceiver(ReceiverSettings(public_base=BASE, hmac_key=KEY), clock=h.clock)
        sink = FakeSink()
        receiver.attach(sink)
        async with serve_receiver(receiver, "127.0.0.1:0") as served:
            # uvicorn in the main thread would have swapped this for its own handler.
            assert signal.getsignal(signal.SIGINT) is before
            assert served.startswith("http://127.0.0.1:")
            assert not served.endswith(":0")
            callback_url = served + urlsplit(receiver.url_for(JOB, 1)).path
            task_id = await h.create_id(callBackUrl=callback_url)
            h.clock.set(h.sim.task(task_id).done_at)
            assert await h.sim.run_due_callbacks() == 1
        assert signal.getsignal(signal.SIGINT) is before
        [event] = [e for e in h.sim.ledger.events if e.kind == "callback"]
        assert (event.outcome, event.http_status) == ("delivered", 200)
        [(job_id, attempt, record, verified)] = sink.deliveries
        assert (job_id, attempt, record.task_id, verified) == (JOB, 1, task_id, True)
        assert record.state is TaskState.SUCCESS
        assert record.result_urls


@pytest.mark.anyio
async def test_serve_receiver_with_a_plain_post_and_a_client_left_open() -> None:
    receiver = CallbackReceiver(ReceiverSettings(public_base=BASE))
    sink = FakeSink()
    receiver.attach(sink)
    # The server exits first, with the client's keep-alive connection still open.
    async with httpx.AsyncClient() as client, serve_receiver(receiver, "localhost:0") as served:
        path = urlsplit(receiver.url_for(JOB, 0)).path
        ok = await client.post(served + path.removeprefix("/hook"), json=payload())
        assert ok.status_code == 200
        wrong = await client.post(served + "/hook/nope/job-1/0", json=payload())
        assert wrong.status_code == 404
    assert len(sink.deliveries) == 1
    assert receiver.counters["refused_token"] == 1


@pytest.mark.anyio
async def test_cancelling_the_serving_task_shuts_the_receiver_down() -> None:
    receiver = CallbackReceiver(ReceiverSettings(public_base=BASE))
    receiver.attach(FakeSink())
    up = asyncio.Event()
    urls: list[str] = []

    async def serve_forever() -> None:
        async with serve_receiver(receiver, "127.0.0.1:0") as served:
            urls.append(served)
            up.set()
            await asyncio.Event().wait()  # until cancelled, like a runner's Ctrl-C path

    task = asyncio.create_task(serve_forever())
    await up.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(urls[0] + "/x", json={})


@pytest.mark.anyio
@pytest.mark.parametrize(
    "listen", ["8787", "127.0.0.1", ":8787", "127.0.0.1:", "::1:8787", "h:99999", "h:x", "[::1"]
)
async def test_bad_listen_is_a_config_error(listen: str) -> None:
    receiver = CallbackReceiver(ReceiverSettings(public_base=BASE))
    with pytest.raises(ConfigError):
        async with serve_receiver(receiver, listen):
            raise AssertionError("should not serve")


@pytest.mark.anyio
async def test_a_port_in_use_is_a_config_error() -> None:
    receiver = CallbackReceiver(ReceiverSettings(public_base=BASE))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            async with serve_receiver(receiver, f"127.0.0.1:{port}"):
                raise AssertionError("should not serve")
