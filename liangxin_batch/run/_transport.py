"""LeanTransport: HTTP/1.1 keep-alive for httpx, straight on asyncio protocols.

httpx's default transport (httpcore on anyio) spent about 1 ms of CPU per request here,
most of it outside the bytes: on every request its pool looks at every idle connection
(a readability syscall wrapped in anyio's attribute machinery), and h11 and anyio add
layers per read and write. At 10,000 jobs and ~3 requests each that was a third of the
run's CPU. This transport keeps httpx's public API (the client, its auth, redirects,
cookies and response decoding stay httpx's) and only replaces the wire:

- one `asyncio.Protocol` per connection: the loop tells it when the peer closes, so an
  idle connection is known dead without a syscall per request; the one connection
  picked for reuse gets a single non-blocking readability check (a FIN or stray bytes
  that arrived but were not yet seen: never send a createTask on a dead connection);
- a per-origin stack of idle connections (the most recent taken first); at most
  `max_keepalive` kept over all origins, none older than `keepalive_expiry`: whenever
  one is added, the longest idle of any origin are closed while over the cap or expired
  (with many file hosts, none waits for its own host to be asked again);
- at most `max_connections` requests in progress (a semaphore held until the response
  is closed), like httpcore's pool with `pool=None`;
- the `trace` extension's "http11.send_request_headers.started" fires right before the
  head is written, as httpcore fires it: the create limiter counts the send there;
- errors are httpx's: ConnectError/ConnectTimeout only when nothing was written (the
  caller reads them as "not sent"), ReadError/ReadTimeout/RemoteProtocolError after.

Proxies from the environment still go through httpx's own mounts (httpcore).
"""

from __future__ import annotations

import asyncio
import select
import ssl
import urllib.request
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx

__all__ = ["LeanTransport", "any_env_proxy", "env_proxied"]

#: Idle connections older than this are not reused. Well below the shortest keep-alive
#: timeout servers commonly use (uvicorn's 5 s, which the simulator has): a server that
#: closes an idle connection just as a request goes out on it makes that request
#: ambiguous, and an ambiguous createTask parks its job `unknown`. The most recently used
#: connection is taken first, so the older ones do sit idle: they must expire early.
KEEPALIVE_EXPIRY = 2.0
#: The most a response head may take: larger is a broken or hostile peer.
MAX_HEAD = 64 * 1024
#: Reading pauses while this much is buffered and not yet taken (a slow consumer).
HIGH_WATER = 1024 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


def any_env_proxy() -> bool:
    """Whether the environment names any proxy (for clients whose hosts vary)."""
    return bool(urllib.request.getproxies_environment())


def env_proxied(url: str) -> bool:
    """Whether a proxy from the environment may apply to `url` (as httpx reads them)."""
    proxies = urllib.request.getproxies_environment()
    scheme = urlsplit(url).scheme
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(urlsplit(url).hostname or "")


class _Conn(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes in a buffer, and a waiter for more."""

    __slots__ = ("buffer", "closed", "error", "fd", "idle_since", "paused", "transport", "waiter")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.paused = False
        self.fd = -1
        self.idle_since = 0.0

    # -- protocol callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- used by the transport ---------------------------------------------------------

    def usable(self) -> bool:
        """Idle and still open: the peer has not closed it nor sent anything unasked."""
        if self.closed or self.buffer or self.transport is None or self.transport.is_closing():
            return False
        if self.fd < 0:
            return True
        try:  # a FIN that reached the kernel but not yet the loop (poll: any fd number)
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self.paused and len(self.buffer) <= HIGH_WATER // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def more(self, timeout: float | None) -> None:
        """Wait for more bytes (or the peer's close); httpx.ReadTimeout after `timeout`."""
        if self.closed:
            raise self._closed_error()
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def _closed_error(self) -> httpx.HTTPError:
        if self.error is not None:
            return httpx.ReadError(f"{type(self.error).__name__}: {self.error}")
        return httpx.RemoteProtocolError("Server disconnected without sending a complete response")


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("timed out waiting for the server"))


#: An origin: (TLS, host as IDNA ASCII, port).
_Key = tuple[bool, str, int]


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio protocols, keep-alive pooled (see the module docstring)."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        max_keepalive: int = 20,
        keepalive_expiry: float = KEEPALIVE_EXPIRY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._gate = asyncio.Semaphore(max_connections)
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        #: Idle connections per origin, the most recently used last (taken first).
        self._pool: dict[_Key, list[_Conn]] = {}
        #: Every idle connection and its origin, the longest idle first (evicted first).
        self._idle: dict[_Conn, _Key] = {}
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        self._pool.clear()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        host = url.host
        port = url.port or (443 if scheme == b"https" else 80)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        await self._gate.acquire()  # released with the response (or below, on failure)
        conn: _Conn | None = None
        try:
            key = (scheme == b"https", host, port)
            conn = await self._connection(key, timeouts.get("connect"))
            trace = request.extensions.get("trace")
            if trace is not None:
                await trace("http11.send_request_headers.started", {"request": request})
            if conn.closed:  # closed while the trace ran: still nothing written
                raise httpx.ConnectError("the connection closed before the request was sent")
            assert conn.transport is not None
            conn.transport.write(_head(request, body) + body)
            return await self._response(conn, origin_key=key, request=request)
        except BaseException:
            if conn is not None:
                conn.close()
            self._gate.release()
            raise

    async def _connection(self, key: _Key, timeout: float | None) -> _Conn:
        stack = self._pool.get(key)
        now = asyncio.get_running_loop().time()
        while stack:
            conn = stack.pop()
            del self._idle[conn]
            if not stack:
                del self._pool[key]
            if now - conn.idle_since < self._expiry and conn.usable():
                return conn
            conn.close()
        return await self._connect(key, timeout)

    async def _connect(self, key: _Key, timeout: float | None) -> _Conn:
        loop = asyncio.get_running_loop()
        use_tls, host, port = key
        tls: ssl.SSLContext | None = None
        if use_tls:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _Conn,
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port}") from None
        except (OSError, ssl.SSLError) as err:
            raise httpx.ConnectError(f"{type(err).__name__}: {err}") from None
        return conn

    async def _response(
        self, conn: _Conn, *, origin_key: _Key, request: httpx.Request
    ) -> httpx.Response:
        read_timeout = request.extensions.get("timeout", {}).get("read")
        while True:
            status, reason, headers, keep = await _read_head(conn, read_timeout)
            if not 100 <= status < 200:
                break  # informational answers (100 Continue) are skipped
        names = {k.lower(): v for k, v in headers}
        chunked = b"chunked" in names.get(b"transfer-encoding", b"").lower()
        length = names.get(b"content-length")
        if request.method == "HEAD" or status in _NO_BODY_STATUS:
            body_size: int | None = 0
        elif chunked:
            body_size = None
        elif length is not None:
            try:
                body_size = int(length)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad Content-Length {length!r}") from None
        else:  # delimited by the close
            body_size, keep = -1, False
        stream = _Body(self, conn, origin_key, body_size, keep=keep, timeout=read_timeout)
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _release(self, conn: _Conn, key: _Key, *, reuse: bool) -> None:
        """The response is over: its connection back to the pool (or closed)."""
        self._gate.release()
        if not reuse or conn.closed or self._closed or self._max_keepalive <= 0:
            conn.close()
            return
        now = conn.idle_since = asyncio.get_running_loop().time()
        self._pool.setdefault(key, []).append(conn)
        self._idle[conn] = key
        # Then the longest idle of any origin goes while over the cap or expired: no
        # host's connections wait for that host to be asked again (a few at most here).
        while self._idle:
            old, old_key = next(iter(self._idle.items()))
            if len(self._idle) <= self._max_keepalive and now - old.idle_since < self._expiry:
                break
            del self._idle[old]
            stack = self._pool[old_key]
            stack.remove(old)  # its origin's oldest: the first, a short list
            if not stack:
                del self._pool[old_key]
            old.close()


def _head(request: httpx.Request, body: bytes) -> bytes:
    """The request line and headers (httpx already set Host and Content-Length)."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
    if body and b"content-length" not in (n.lower() for n, _ in request.headers.raw):
        parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


async def _read_head(
    conn: _Conn, timeout: float | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bool]:
    """Status, reason, headers, and whether the peer keeps the connection open."""
    while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
        if len(conn.buffer) > MAX_HEAD:
            raise httpx.RemoteProtocolError("response head too large")
        await conn.more(timeout)
    if end > MAX_HEAD:
        raise httpx.RemoteProtocolError("response head too large")
    lines = conn.take(end + 4)[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:100]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line {line[:100]!r}")
        headers.append((name, value.strip()))
    connection = b",".join(v for n, v in headers if n.lower() == b"connection").lower()
    keep = b"close" not in connection and (version != b"HTTP/1.0" or b"keep-alive" in connection)
    return int(code), reason, headers, keep


class _Body(httpx.AsyncByteStream):
    """The response body as it arrives; the connection goes back once it is all read."""

    def __init__(
        self,
        transport: LeanTransport,
        conn: _Conn,
        key: _Key,
        size: int | None,
        *,
        keep: bool,
        timeout: float | None,
    ) -> None:
        self._transport = transport
        self._conn = conn
        self._key = key
        self._size = size  # None: chunked; -1: until the close
        self._keep = keep
        self._timeout = timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            if self._size is None:
                async for piece in self._chunked():
                    yield piece
            else:
                async for piece in self._sized(self._size):
                    yield piece
        except BaseException:
            self._finish(reuse=False)
            raise
        self._finish(reuse=self._keep)

    async def _sized(self, size: int) -> AsyncIterator[bytes]:
        conn, left = self._conn, size
        while left:
            if not conn.buffer:
                if conn.closed and size == -1 and conn.error is None:
                    return  # a clean close ends this body; a reset is a ReadError (more)
                await conn.more(self._timeout)
                continue
            piece = conn.take(len(conn.buffer) if left < 0 else min(left, len(conn.buffer)))
            if left > 0:
                left -= len(piece)
            yield piece

    async def _chunked(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            line = await self._line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad chunk size {line[:40]!r}") from None
            if size == 0:
                while await self._line():  # trailers, up to the empty line
                    pass
                return
            async for piece in self._sized(size):
                yield piece
            while len(conn.buffer) < 2:
                await conn.more(self._timeout)
            if conn.take(2) != b"\r\n":
                raise httpx.RemoteProtocolError("chunk not followed by CRLF")

    async def _line(self) -> bytes:
        conn = self._conn
        while (end := conn.buffer.find(b"\r\n")) < 0:
            if len(conn.buffer) > MAX_HEAD:
                raise httpx.RemoteProtocolError("chunk header too long")
            await conn.more(self._timeout)
        return conn.take(end + 2)[:-2]

    def _finish(self, *, reuse: bool) -> None:
        if not self._done:
            self._done = True
            self._transport._release(self._conn, self._key, reuse=reuse)

    async def aclose(self) -> None:
        self._finish(reuse=False)  # closed before its end: the connection cannot be reused
