"""The simulator's HTTP face: a Starlette app over `Simulator`.

Answers mirror the service: HTTP 200 with a body `code` for most errors, a real HTTP 429
(with `Retry-After`) for rate limits, HTTP 404 for unknown routes, 403 for expired file
links. Injected errors follow `FaultProfile.error_style` (body code, real HTTP status,
or a bare status with a text body), and `FaultProfile.quirks` reshape the envelope.

Dropping a connection (lost_reply, broken_download). An ASGI app cannot close its
socket: if it raises before answering, uvicorn sends a 500; if it returns without
answering, uvicorn also sends a 500. So `SimulatorApp` keeps the server's own `send`
callable in the scope, and `_drop` reaches the asyncio transport behind it (uvicorn's
h11 and httptools cycles are bound methods of an object with `.transport`) and aborts
it: the client sees the socket close with no answer (httpx: RemoteProtocolError
"Server disconnected without sending a response") or mid-body for a broken download.
uvicorn marks the cycle disconnected, so it neither writes nor logs afterwards. With no
such transport (in-process httpx.ASGITransport, another server) `_drop` raises
httpx.RemoteProtocolError instead; ASGITransport re-raises app exceptions, so an
in-process client sees the same exception type as over a socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._clock import Clock
from ._config import SimConfig
from ._core import INVALID_JSON, Simulator
from ._files import FileServe
from ._reply import NO_ACCESS, Reply, wire_body
from ._tasks import envelope
from ._upload_app import upload_routes

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog

__all__ = ["SimulatorApp", "create_app"]

_RAW_SEND = "liangxin_sim.raw_send"
_CHUNK = 64 * 1024


class SimulatorApp(Starlette):
    """Starlette that remembers the server's raw `send` so a handler can drop the socket."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_RAW_SEND] = send  # Starlette's middleware wraps `send`; keep the original
        await super().__call__(scope, receive, send)


async def _drop(scope: Scope, what: str) -> None:
    """Close the client's connection without a (complete) answer; see the module doc."""
    server_send = scope.get(_RAW_SEND)
    transport = getattr(getattr(server_send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()
        await asyncio.sleep(0)  # let connection_lost run: the server then stops writing
        return
    raise httpx.RemoteProtocolError(f"Server disconnected without sending {what} (simulated)")


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def _reply(sim: Simulator, reply: Reply) -> Response:
    headers = dict(reply.headers)
    if reply.bare:  # a gateway's answer: no envelope, only the status says what happened
        return Response(
            reply.msg, status_code=reply.http_status, headers=headers, media_type=reply.media_type
        )
    body = wire_body(reply.body, sim.config.faults.quirks)
    return JSONResponse(body, status_code=reply.http_status, headers=headers)


def _unauthorized(sim: Simulator) -> Response:
    return _reply(sim, Reply(401, NO_ACCESS))  # HTTP 200, like the service


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return INVALID_JSON


async def create_task(request: Request) -> Response:
    sim = _sim(request)
    key = sim.authorize(request.headers.get("authorization"))
    if key is None:
        return _unauthorized(sim)
    reply = sim.create(key, await _json_body(request), str(request.base_url))
    if reply.drop:
        await _drop(request.scope, "a response")
        return Response(status_code=200)  # discarded: the connection is already gone
    return _reply(sim, reply)


async def record_info(request: Request) -> Response:
    sim = _sim(request)
    key = sim.authorize(request.headers.get("authorization"))
    if key is None:
        return _unauthorized(sim)
    return _reply(sim, sim.record_info(key, request.query_params.get("taskId")))


async def credit(request: Request) -> Response:
    sim = _sim(request)
    key = sim.authorize(request.headers.get("authorization"))
    if key is None:
        return _unauthorized(sim)
    return _reply(sim, sim.credit(key))


async def download_url(request: Request) -> Response:
    sim = _sim(request)
    key = sim.authorize(request.headers.get("authorization"))
    if key is None:
        return _unauthorized(sim)
    return _reply(sim, sim.download_url(await _json_body(request), key))


class _FileResponse(Response):
    """Streams a result file: throttled when slow, cut off and dropped when broken."""

    def __init__(self, serve: FileServe, sim: Simulator) -> None:
        super().__init__(status_code=200, media_type=serve.media_type)
        self.serve = serve
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content, cut = self.serve.content, self.serve.cut_at
        # The full size even when we will stop early: that is what makes it "broken"
        # (short_content_length lowers both the size announced and the bytes sent).
        length = self.serve.length
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", self.serve.media_type.encode()),
                    (b"content-length", str(length).encode()),
                ],
            }
        )
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        bps = self.sim.config.faults.slow_download_bps
        chunk = max(1, bps // 10) if bps else _CHUNK
        end = self.serve.sent
        for start in range(0, end, chunk):
            piece = content[start : min(start + chunk, end)]
            if bps:
                await self.sim.sleep(len(piece) / bps)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        if cut is not None:
            await _drop(scope, "the complete message body")
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def get_file(request: Request) -> Response:
    sim = _sim(request)
    params = request.path_params
    # Rendering a file the first time takes milliseconds of Pillow work (several times
    # that on a busy machine): do it in a worker thread so API answers on this loop are
    # not held up behind downloads. serve_file and the file store are thread-safe.
    serve = await asyncio.to_thread(
        sim.serve_file, params["task_id"], params["name"], request.url.query
    )
    if serve.status != 200:
        return PlainTextResponse(serve.message, status_code=serve.status)
    return _FileResponse(serve, sim)


async def top_up(request: Request) -> Response:
    body = await _json_body(request)
    credits = body.get("credits") if isinstance(body, dict) else None
    if not isinstance(credits, int) or isinstance(credits, bool) or credits <= 0:
        return JSONResponse(envelope(422, "credits: expected a positive integer"))
    return JSONResponse(envelope(200, "success", _sim(request).top_up(credits)))


async def ledger(request: Request) -> Response:
    """Everything seen; `?since=N`: only the events after the first N (cheap polling)."""
    sim = _sim(request)
    try:
        since = max(0, int(request.query_params.get("since", "0")))
    except ValueError:
        return JSONResponse(envelope(422, "since: expected a whole number"), status_code=422)
    data = {
        "balance": sim.balance(),
        "duplicates": sim.ledger.duplicates(),
        "uploads_by_sha256": sim.ledger.upload_counts_by_sha256(),
        "events": [e.to_json() for e in sim.ledger.events[since:]],
    }
    return JSONResponse(envelope(200, "success", data))


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Server Error"
    return JSONResponse(envelope(status, detail), status_code=status)


def create_app(
    config: SimConfig | None = None,
    *,
    clock: Clock | None = None,
    catalog: Catalog | None = None,
    callback_client: httpx.AsyncClient | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> Starlette:
    """A fresh simulator app; `app.state.sim` is its `Simulator`.

    `clock` (unix seconds) drives every decision; `catalog` defaults to the builtin one;
    `callback_client` sends callbacks (e.g. over httpx.ASGITransport in tests); `sleep`
    paces slow downloads.
    """
    sim = Simulator(
        config, clock=clock, catalog=catalog, callback_client=callback_client, sleep=sleep
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sim.resume_callbacks()  # loaded tasks' callbacks need this loop to wait on
        yield
        await sim.aclose()  # cancel waiting callbacks on server shutdown

    routes = [
        Route("/api/v1/jobs/createTask", create_task, methods=["POST"]),
        Route("/api/v1/jobs/recordInfo", record_info, methods=["GET"]),
        Route("/api/v1/chat/credit", credit, methods=["GET"]),
        Route("/api/v1/common/download-url", download_url, methods=["POST"]),
        Route("/files/{task_id}/{name}", get_file, methods=["GET"]),
        Route("/_sim/top-up", top_up, methods=["POST"]),
        Route("/_sim/ledger", ledger, methods=["GET"]),
        *upload_routes(sim.config.upload_prefix),
    ]
    app = SimulatorApp(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.sim = sim
    return app
