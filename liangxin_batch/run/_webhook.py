"""The built-in callback receiver: LiangXin POSTs each task's final record here.

Each task is submitted with ``callBackUrl = public_base/TOKEN/JOB_ID/ATTEMPT``. The
token is unguessable and per run, so a post names the job it belongs to and a stranger
cannot guess a valid address. The handler only checks and forwards: it never touches
disk or network; `CallbackSink.deliver` puts the record on an in-memory queue and the
runner does the rest.

Checks, in order (each refusal bumps one counter and never delivers):

=================  ======  =====================================================
counter            status  when
=================  ======  =====================================================
refused_token      404     the path has no valid token (constant-time compare)
unattached         503     no sink attached yet (the runner is not ready)
refused_job        404     bad attempt number, or the sink does not know the job
oversized          413     declared Content-Length or streamed body > max_body
malformed          400     not JSON, not an object, `data` not an object, no taskId
refused_signature  401     key set: signature/timestamp header missing or wrong
refused_stale      401     key set: good signature, timestamp outside the window
refused_replay     409     key set: this exact (taskId, timestamp, signature) again
duplicate          200     (taskId, state) was delivered already: no second delivery
accepted           200     delivered; body ``{"code":200,"msg":"success"}``
=================  ======  =====================================================

Replays get 409, not 200: they are refusals ("change nothing") and the service
documents no retry that a 4xx could upset; the first copy was already delivered.

Reverse proxies often strip the public path prefix, so both
``/hook/TOKEN/JOB/N`` and ``/TOKEN/JOB/N`` are accepted (their segment counts differ,
so the two readings never collide).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import hmac
import json
import logging
import re
import secrets
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from liangxin_batch.core._envelope import TaskRecord, parse_task_record
from liangxin_batch.errors import ConfigError

__all__ = [
    "COUNTERS",
    "CallbackReceiver",
    "CallbackSink",
    "ReceiverSettings",
    "expected_signature",
    "serve_receiver",
]

log = logging.getLogger(__name__)

#: Every counter `CallbackReceiver.counters` holds (all start at 0).
COUNTERS: tuple[str, ...] = (
    "accepted",
    "duplicate",
    "refused_token",
    "refused_job",
    "refused_signature",
    "refused_replay",
    "refused_stale",
    "malformed",
    "oversized",
    "unattached",
)

_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{16,}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_ATTEMPT = re.compile(r"[0-9]{1,9}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # unix seconds; milliseconds would read as stale
_SIG_TS = "x-webhook-timestamp"
_SIG = "x-webhook-signature"


class CallbackSink(Protocol):
    """Where accepted callbacks go (the runner). Both calls must return at once."""

    def known_job(self, job_id: str) -> bool: ...

    def deliver(self, job_id: str, attempt: int, record: TaskRecord, *, verified: bool) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverSettings:
    """How the receiver is reached and what it accepts."""

    public_base: str
    hmac_key: str | None = field(default=None, repr=False)  # never shown in logs
    max_body: int = 1 << 20
    timestamp_window: float = 300.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"--callback-url must be an http(s) URL, got {self.public_base[:80]!r}"
            )
        if parts.query or parts.fragment:
            raise ConfigError("--callback-url must not carry a query string or fragment")
        if self.hmac_key is not None and not self.hmac_key.strip():
            # An empty key would silently turn verification off; say so instead.
            raise ConfigError("the webhook HMAC key is empty; unset it or give a real key")
        if self.max_body <= 0:
            raise ConfigError(f"max_body must be positive, got {self.max_body}")
        if not self.timestamp_window > 0:
            raise ConfigError(f"timestamp_window must be positive, got {self.timestamp_window}")


def expected_signature(key: str, task_id: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(key, f"{taskId}.{timestamp}")), the documented webhook signature."""
    mac = hmac.new(key.encode("utf-8"), f"{task_id}.{timestamp}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def _segments(path: str) -> list[str]:
    stripped = path.strip("/")
    return stripped.split("/") if stripped else []


class CallbackReceiver:
    """The receiver's state and its Starlette `app` (see the module docstring)."""

    def __init__(
        self,
        settings: ReceiverSettings,
        *,
        token: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token is None:
            token = secrets.token_urlsafe(24)
        elif not _TOKEN_CHARS.fullmatch(token):
            raise ConfigError("the callback token must be 16+ URL-safe characters")
        self.settings = settings
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self._token = token.encode("ascii")
        self._clock = clock
        self._base = settings.public_base.rstrip("/")
        self._prefix = [unquote(s) for s in _segments(urlsplit(self._base).path)]
        self._sink: CallbackSink | None = None
        # (taskId, state) already handed to the sink: later copies are duplicates.
        self._delivered: set[tuple[str, str]] = set()
        # Signed posts seen inside the window; older ones are refused as stale anyway,
        # so the heap lets them be forgotten and memory stays bounded.
        self._seen: set[tuple[str, str, str]] = set()
        self._seen_heap: list[tuple[int, tuple[str, str, str]]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    @property
    def token(self) -> str:
        return self._token.decode("ascii")

    def url_for(self, job_id: str, attempt: int) -> str:
        # safe="": a "/" inside a job id must not become a path separator.
        return f"{self._base}/{self.token}/{quote(job_id, safe='')}/{int(attempt)}"

    def matches(self, callback_url: str | None, job_id: str, attempt: int) -> bool:
        """Is `callback_url` (e.g. recordInfo's param.callBackUrl) exactly ours for this job?"""
        return callback_url is not None and callback_url == self.url_for(job_id, attempt)

    def attach(self, sink: CallbackSink) -> None:
        self._sink = sink

    # -- the handler -----------------------------------------------------------------

    def _refuse(self, counter: str, status: int, msg: str, job_id: str = "") -> JSONResponse:
        self.counters[counter] += 1
        log.debug("callback refused (%s) job=%r", counter, job_id)
        return JSONResponse({"code": status, "msg": msg}, status_code=status)

    def _route(self, raw_path: bytes) -> tuple[bytes, str, str] | None:
        """(token, job_id, attempt text) from the path, with or without the base prefix."""
        parts = _segments(raw_path.decode("latin-1"))
        if len(parts) == len(self._prefix) + 3 and self._prefix:
            if [unquote(p) for p in parts[: len(self._prefix)]] != self._prefix:
                return None
            parts = parts[len(self._prefix) :]
        if len(parts) != 3:
            return None
        token, job, attempt = parts
        return token.encode("latin-1"), unquote(job), attempt

    async def _handle(self, request: Request) -> JSONResponse:
        # raw_path keeps %2F inside a job id from splitting it; `path` is the fallback.
        raw_path = request.scope.get("raw_path") or quote(request.scope["path"]).encode()
        routed = self._route(raw_path.split(b"?", 1)[0])
        # compare_digest on equal-length inputs is constant-time; length itself is public.
        if routed is None or not hmac.compare_digest(routed[0], self._token):
            return self._refuse("refused_token", 404, "not found")
        _, job_id, attempt_text = routed
        sink = self._sink
        if sink is None:
            return self._refuse("unattached", 503, "not ready", job_id)
        if not _ATTEMPT.fullmatch(attempt_text) or not sink.known_job(job_id):
            return self._refuse("refused_job", 404, "not found", job_id)
        attempt = int(attempt_text)

        body = await self._read_body(request)
        if isinstance(body, JSONResponse):
            return body
        parsed = _callback_data(body)
        if parsed is None:
            return self._refuse("malformed", 400, "malformed callback", job_id)
        data, task_id = parsed

        verified = self.settings.hmac_key is not None
        if verified:
            refusal = self._verify(request.headers, task_id, job_id)
            if refusal is not None:
                return refusal

        record = parse_task_record(data)
        key = (record.task_id, (record.raw_state or "").lower())
        if key in self._delivered:
            self.counters["duplicate"] += 1
            return _ok()
        # No await from here to the end: check-and-deliver is atomic on the loop.
        self._delivered.add(key)
        try:
            sink.deliver(job_id, attempt, record, verified=verified)
        except BaseException:
            self._delivered.discard(key)  # not delivered: a later copy may still be
            raise
        self.counters["accepted"] += 1
        return _ok()

    async def _read_body(self, request: Request) -> bytes | JSONResponse:
        cap = self.settings.max_body
        declared = request.headers.get("content-length")
        if declared is not None:
            if not _DIGITS.fullmatch(declared.strip()):  # str.isdigit() would pass "²"
                return self._refuse("malformed", 400, "bad Content-Length")
            if int(declared) > cap:  # refuse before reading a byte
                return self._refuse("oversized", 413, "callback body too large")
        buf = bytearray()
        try:
            async for chunk in request.stream():
                buf += chunk
                if len(buf) > cap:  # stop at the cap: never buffer an unbounded body
                    return self._refuse("oversized", 413, "callback body too large")
        except ClientDisconnect:
            return self._refuse("malformed", 400, "truncated callback")
        return bytes(buf)

    def _verify(self, headers: Mapping[str, str], task_id: str, job_id: str) -> JSONResponse | None:
        key = self.settings.hmac_key
        assert key is not None
        timestamp = headers.get(_SIG_TS, "").strip()
        given = headers.get(_SIG, "").strip()
        if not _TIMESTAMP.fullmatch(timestamp) or not given:
            return self._refuse("refused_signature", 401, "bad signature", job_id)
        want = expected_signature(key, task_id, timestamp)
        # Header values arrive latin-1 decoded, so this encode cannot fail.
        if not hmac.compare_digest(given.encode("latin-1"), want.encode("ascii")):
            return self._refuse("refused_signature", 401, "bad signature", job_id)
        now = self._clock()
        window = self.settings.timestamp_window
        stamp = int(timestamp)
        if abs(now - stamp) > window:
            return self._refuse("refused_stale", 401, "stale timestamp", job_id)
        self._forget_before(now - window)
        seen = (task_id, timestamp, given)
        if seen in self._seen:
            return self._refuse("refused_replay", 409, "replayed callback", job_id)
        self._seen.add(seen)
        heapq.heappush(self._seen_heap, (stamp, seen))
        return None

    def _forget_before(self, oldest: float) -> None:
        heap = self._seen_heap
        while heap and heap[0][0] < oldest:
            _, seen = heapq.heappop(heap)
            self._seen.discard(seen)


def _ok() -> JSONResponse:
    return JSONResponse({"code": 200, "msg": "success"})


def _callback_data(body: bytes) -> tuple[dict[str, object], str] | None:
    """(the envelope's `data`, its taskId) if data is an object with a non-empty taskId."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON/UTF-8, or absurdly deep nesting
        return None
    if not isinstance(parsed, dict):
        return None
    data = parsed.get("data")
    if not isinstance(data, dict):
        return None
    task_id = data.get("taskId")
    if not isinstance(task_id, str) or not task_id.strip():
        return None
    return data, task_id


# -- serving on a real socket ---------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside someone else's event loop: no signal handlers, a startup event."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host program owns SIGINT/SIGTERM (the runner's Ctrl-C rules); uvicorn's
        # version would swap them out in the main thread and re-raise them later.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8787), got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"--listen: write an IPv6 host in brackets ([::1]:8787), got {listen!r}")
    return host, int(port_text)


async def _bind(host: str, port: int, listen: str) -> socket.socket:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as err:
        raise ConfigError(f"--listen {listen}: cannot resolve {host!r} ({err})") from err
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":  # on Windows it would allow stealing a bound port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise ConfigError(f"--listen {listen}: cannot listen there ({err.strerror})") from err
    return sock


@asynccontextmanager
async def serve_receiver(receiver: CallbackReceiver, listen: str) -> AsyncIterator[str]:
    """Serve `receiver.app` on `listen` ("HOST:PORT", port 0 = any) in the current loop.

    Yields "http://HOST:PORT" with the real port. uvicorn runs as a task of the caller's
    loop and installs no signal handlers. On exit it stops accepting, lets in-flight
    requests finish and closes its sockets.
    """
    host, port = _parse_listen(listen)
    sock = await _bind(host, port, listen)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        receiver.app,
        log_level="warning",
        log_config=None,  # in-process: leave the host program's logging alone
        access_log=False,
        http="h11",
        ws="none",
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = _EmbeddedServer(config)

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as err:  # uvicorn's startup failure must not end the program
            raise RuntimeError(f"the callback receiver failed to start on {url}") from err
        finally:
            server.ready.set()  # wake the waiter even if startup never finished

    task = asyncio.create_task(run(), name=f"liangxin-webhook-{url}")
    try:
        try:
            await server.ready.wait()
            if server.started:
                yield url
        finally:
            server.should_exit = True
            await task
    finally:
        sock.close()
    if not server.started:
        raise RuntimeError(f"the callback receiver did not start on {url}")
