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
  caller reads them as "not sent"), ReadError/ReadTimeout/RemoteProtocolError after
  (a request whose framing cannot be sent is refused before: LocalProtocolError).

The wire itself (the protocol object, request bytes, response framing read as strictly
as h11 does) is in run/_http11.py.

Proxies from the environment still go through httpx's own mounts (httpcore).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from urllib.parse import urlsplit

import httpx

from liangxin_batch.run._http11 import (
    Body,
    Conn,
    framing,
    read_head,
    request_bytes,
    request_head,
)

__all__ = ["LeanTransport", "any_env_proxy", "env_proxied"]

#: Idle connections older than this are not reused. Well below the shortest keep-alive
#: timeout servers commonly use (gunicorn's 2 s by default; uvicorn's 5 s, which the
#: simulator has): a server that closes an idle connection just as a request goes out on
#: it makes that request ambiguous, and an ambiguous createTask parks its job `unknown`.
#: The server's clock starts when it wrote the answer, ours (`idle_since`) only when the
#: answer was all read, later by the transfer and the client's own delays: hence half of
#: gunicorn's. The most recently used connection is taken first, so the older ones do sit
#: idle: they must expire early.
KEEPALIVE_EXPIRY = 1.0


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
        self._pool: dict[_Key, list[Conn]] = {}
        #: Every idle connection and its origin, the longest idle first (evicted first).
        self._idle: dict[Conn, _Key] = {}
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
        host = url.raw_host.decode("ascii")  # IDNA, for DNS and SNI (as httpcore)
        port = url.port or (443 if scheme == b"https" else 80)
        timeouts = request.extensions.get("timeout", {})
        # A body already in memory goes with the head in one write; a stream (a file
        # upload) is written as it is read, the peer's pace holding it back (flat memory).
        streamed = not isinstance(request.stream, httpx.ByteStream)
        if streamed:
            payload, chunked = request_head(request)  # may refuse: not sent
        else:
            payload = request_bytes(request, await request.aread())  # may refuse: not sent
        await self._gate.acquire()  # released with the response (or below, on failure)
        conn: Conn | None = None
        try:
            key = (scheme == b"https", host, port)
            conn = await self._connection(key, timeouts.get("connect"))
            trace = request.extensions.get("trace")
            if trace is not None:
                await trace("http11.send_request_headers.started", {"request": request})
            if conn.closed:  # closed while the trace ran: still nothing written
                raise httpx.ConnectError("the connection closed before the request was sent")
            assert conn.transport is not None
            conn.transport.write(payload)
            if streamed:
                await self._write_body(conn, request, chunked, timeouts.get("write"))
            return await self._response(conn, origin_key=key, request=request)
        except BaseException:
            if conn is not None:
                conn.close()
            self._gate.release()
            raise

    @staticmethod
    async def _write_body(
        conn: Conn, request: httpx.Request, chunked: bool, timeout: float | None
    ) -> None:
        """A streamed body, piece by piece, each written once the last has drained. A
        peer that closes meanwhile (an early answer, a refusal) ends the writing: what it
        said, if anything, is read next."""
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        transport = conn.transport
        assert transport is not None
        async for piece in stream:
            if conn.closed:
                break
            if not piece:
                continue
            if chunked:
                transport.write(b"%X\r\n" % len(piece))
                transport.write(piece)
                transport.write(b"\r\n")
            else:
                transport.write(piece)
            await conn.drain(timeout)
        else:
            if chunked and not conn.closed:
                transport.write(b"0\r\n\r\n")

    async def _connection(self, key: _Key, timeout: float | None) -> Conn:
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

    async def _connect(self, key: _Key, timeout: float | None) -> Conn:
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
                    Conn,
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
        self, conn: Conn, *, origin_key: _Key, request: httpx.Request
    ) -> httpx.Response:
        read_timeout = request.extensions.get("timeout", {}).get("read")
        while True:
            status, reason, headers, keep = await read_head(conn, read_timeout)
            if not 100 <= status < 200:
                break  # informational answers (100 Continue) are skipped
        body_size, keep = framing(request.method, status, headers, keep=keep)
        stream = Body(
            conn,
            body_size,
            keep=keep,
            timeout=read_timeout,
            release=lambda reuse: self._release(conn, origin_key, reuse=reuse),
        )
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    def _release(self, conn: Conn, key: _Key, *, reuse: bool) -> None:
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
