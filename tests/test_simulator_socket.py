"""The simulator over real loopback sockets: uvicorn in a thread, wall-clock time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from liangxin_batch.simulator import FaultProfile, SimConfig, Simulator, create_app, serve_in_thread
from tests.sim_support import AUTH, CREATE, MODEL, RECORD, sim_of

pytestmark = pytest.mark.slow

BODY = {"model": MODEL, "input": {"prompt": "a paper boat on a pond"}}


def client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=AUTH, timeout=10)


def wait_for_success(c: httpx.Client, task_id: str) -> dict[str, Any]:
    """Poll until terminal (latency_scale=0 makes this immediate); bounded, no sleeps."""
    for _ in range(50):
        data: dict[str, Any] = c.get(RECORD, params={"taskId": task_id}).json()["data"]
        if data["state"] in ("success", "fail"):
            return data
    raise AssertionError(f"task {task_id} did not finish")


@pytest.fixture
def instant() -> Iterator[tuple[str, Simulator]]:
    app = create_app(SimConfig(latency_scale=0))
    with serve_in_thread(app) as base_url:
        yield base_url, sim_of(app)


def test_full_flow_over_a_socket(instant: tuple[str, Simulator]) -> None:
    base_url, sim = instant
    assert base_url.startswith("http://127.0.0.1:") and not base_url.endswith(":0")
    with client(base_url) as c:
        task_id = c.post(CREATE, json=BODY).json()["data"]["taskId"]
        data = wait_for_success(c, task_id)
        assert data["state"] == "success"
        (url,) = json.loads(data["resultJson"])["resultUrls"]
        assert url.startswith(base_url + "/files/")
        file = c.get(url)
        image = Image.open(io.BytesIO(file.content))
        image.verify()
        assert image.format == "PNG"
        assert c.get("/api/v1/chat/credit").json()["data"] == SimConfig().credits - 4
    (served,) = sim.ledger.files_served()
    assert served.sha256 == hashlib.sha256(file.content).hexdigest()


def test_lost_reply_drops_the_connection_but_the_task_exists() -> None:
    app = create_app(SimConfig(latency_scale=0, faults=FaultProfile(lost_reply=1.0)))
    sim = sim_of(app)
    with serve_in_thread(app) as base_url, client(base_url) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.post(CREATE, json=BODY)
        (event,) = sim.ledger.creates()
        assert event.outcome == "lost_reply" and event.task_id is not None
        # The server is fine afterwards, and the task really was created and billed.
        assert wait_for_success(c, event.task_id)["state"] == "success"
        assert c.get("/api/v1/chat/credit").json()["data"] == SimConfig().credits - 4


def test_broken_download_cuts_the_body_over_a_socket() -> None:
    app = create_app(SimConfig(latency_scale=0, faults=FaultProfile(broken_download=1.0)))
    sim = sim_of(app)
    with serve_in_thread(app) as base_url, client(base_url) as c:
        task_id = c.post(CREATE, json=BODY).json()["data"]["taskId"]
        (url,) = json.loads(wait_for_success(c, task_id)["resultJson"])["resultUrls"]
        with pytest.raises(httpx.RemoteProtocolError), c.stream("GET", url) as response:
            assert response.headers["content-length"] == str(len(sim.file_bytes(task_id, 0)))
            response.read()
        assert c.get(url).content == sim.file_bytes(task_id, 0)
    assert [e.complete for e in sim.ledger.files_served()] == [False, True]


def test_rate_limit_is_a_real_http_429_over_a_socket() -> None:
    app = create_app(SimConfig(create_limit=2, create_window=60.0))
    with serve_in_thread(app) as base_url, client(base_url) as c:
        codes = [c.post(CREATE, json=BODY).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        refused = c.post(CREATE, json=BODY)
        assert refused.json()["code"] == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_signed_callback_reaches_a_real_receiver() -> None:
    received: list[tuple[dict[str, str], dict[str, Any]]] = []
    arrived = threading.Event()

    async def hook(request: Request) -> JSONResponse:
        received.append((dict(request.headers), await request.json()))
        arrived.set()
        return JSONResponse({"code": 200, "msg": "success"})

    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    app = create_app(SimConfig(latency_scale=0.01, hmac_key="k3y"))
    sim = sim_of(app)
    with serve_in_thread(receiver) as hook_url, serve_in_thread(app) as base_url:
        with client(base_url) as c:
            body = {**BODY, "callBackUrl": f"{hook_url}/hook"}
            task_id = c.post(CREATE, json=body).json()["data"]["taskId"]
        assert arrived.wait(timeout=10), "no callback within 10 s"
    ((headers, payload),) = received
    assert payload["code"] == 200 and payload["data"]["taskId"] == task_id
    assert payload["data"]["state"] == "success"
    stamp = headers["x-webhook-timestamp"]
    mac = hmac.new(b"k3y", f"{task_id}.{stamp}".encode(), hashlib.sha256).digest()
    assert headers["x-webhook-signature"] == base64.b64encode(mac).decode()
    (event,) = sim.ledger.callbacks()
    assert event.outcome == "delivered"


def test_server_is_gone_after_the_context_exits() -> None:
    app = create_app()
    with serve_in_thread(app) as base_url, client(base_url) as c:
        assert c.get("/api/v1/chat/credit").json()["code"] == 200
    with client(base_url) as c, pytest.raises(httpx.ConnectError):
        c.get("/api/v1/chat/credit")


def test_port_in_use_is_an_os_error() -> None:
    with serve_in_thread(create_app()) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        with pytest.raises(OSError), serve_in_thread(create_app(), port=port):
            pass


def test_listening_socket_is_tcp_so_answers_are_not_delayed() -> None:
    """asyncio sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP; with
    proto 0, Nagle held every answer's body for the client's delayed ACK (~40 ms each)."""
    import socket

    from liangxin_batch.simulator._server import _bind

    sock, base_url = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert base_url == f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
