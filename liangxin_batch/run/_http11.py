"""HTTP/1.1 on one asyncio connection for LeanTransport (see run/_transport): the
protocol object that buffers a connection's bytes, the request head, and the response's
head and body framing. The pool, the limits and the error kinds around them are there.
"""

from __future__ import annotations

import asyncio
import re
import select
from collections.abc import AsyncIterator, Callable

import httpx

__all__ = ["Body", "Conn", "framing", "read_head", "readable", "request_bytes", "request_head"]

#: The most a response head may take: larger is a broken or hostile peer.
MAX_HEAD = 64 * 1024
#: Reading pauses while this much is buffered and not yet taken (a slow consumer).
HIGH_WATER = 1024 * 1024
_NO_BODY_STATUS = frozenset({204, 304})
#: A chunk's size line: hex digits only, then any extension (h11's reading).
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;.*)?[ \t]*")
_DIGITS = re.compile(rb"[0-9]{1,19}")


class Conn(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes in a buffer, and a waiter for more."""

    __slots__ = (
        "buffer",
        "closed",
        "drain_waiter",
        "error",
        "fd",
        "idle_since",
        "paused",
        "transport",
        "waiter",
        "write_paused",
    )

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.paused = False
        self.fd = -1
        self.idle_since = 0.0
        #: The transport's write buffer is full (a streamed request body waits).
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None

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

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    def _wake(self) -> None:
        for waiter in (self.waiter, self.drain_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # -- used by the transport ---------------------------------------------------------

    def usable(self) -> bool:
        """Idle and still open: the peer has not closed it nor sent anything unasked."""
        if self.closed or self.buffer or self.transport is None or self.transport.is_closing():
            return False
        if self.fd < 0:
            return True
        try:  # a FIN that reached the kernel but not yet the loop
            return not readable(self.fd)
        except (OSError, ValueError):  # cannot tell (select's fd range): not reusable
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
        timer = (
            loop.call_later(timeout, _expire, waiter, httpx.ReadTimeout, _READ_LATE)
            if timeout is not None
            else None
        )
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    async def drain(self, timeout: float | None) -> None:
        """Wait while the write buffer is over its high mark (a streamed body is written
        no faster than the peer reads it: memory stays flat); httpx.WriteTimeout after
        `timeout`. Returns at once when the connection closed (the caller looks)."""
        loop = asyncio.get_running_loop()
        while self.write_paused and not self.closed:
            waiter = self.drain_waiter = loop.create_future()
            timer = (
                loop.call_later(timeout, _expire, waiter, httpx.WriteTimeout, _WRITE_LATE)
                if timeout is not None
                else None
            )
            try:
                await waiter
            finally:
                self.drain_waiter = None
                if timer is not None:
                    timer.cancel()

    def _closed_error(self) -> httpx.HTTPError:
        if self.error is not None:
            return httpx.ReadError(f"{type(self.error).__name__}: {self.error}")
        return httpx.RemoteProtocolError("Server disconnected without sending a complete response")


def readable(fd: int) -> bool:
    """Whether bytes or a FIN wait unread on the socket `fd` (without blocking)."""
    if hasattr(select, "poll"):  # any fd number
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    # Windows has no poll; select takes sockets there (elsewhere fds < FD_SETSIZE only:
    # a ValueError above that, which the caller reads as "cannot tell").
    return bool(select.select([fd], [], [], 0)[0])


_READ_LATE = "timed out waiting for the server"
_WRITE_LATE = "timed out writing the request body"


def _expire(waiter: asyncio.Future[None], error: type[httpx.TimeoutException], text: str) -> None:
    """A wait's deadline: the waiter fails with `error(text)` unless it is done already
    (the error is made only when the deadline comes: most waits end before)."""
    if not waiter.done():
        waiter.set_exception(error(text))


def _head(request: httpx.Request, *, host: bool) -> tuple[list[bytes], bytes | None, bytes | None]:
    """The request line and headers (a Host added when `host` and none is set), with the
    Content-Length and Transfer-Encoding they say. Any transfer coding but chunked alone
    is refused here, before anything is written (httpx.LocalProtocolError)."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    if host and "host" not in request.headers:
        parts.append(b"Host: " + request.url.netloc + b"\r\n")
    length = coding = None
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
        lower = name.lower()
        if lower == b"content-length":
            length = value
        elif lower == b"transfer-encoding":
            coding = value if coding is None else coding + b"," + value
    if coding is not None and (coding.strip().lower() != b"chunked" or length is not None):
        raise httpx.LocalProtocolError(
            f"unsupported request framing: Transfer-Encoding {coding!r}"
            + (" with Content-Length" if length is not None else "")
        )
    return parts, length, coding


def request_head(request: httpx.Request) -> tuple[bytes, bool]:
    """The request line and headers of a request whose body is streamed (written as it is
    read: a file upload), and whether the body goes as chunks: with a Content-Length it
    goes as it is; without, chunked (httpx says so for a stream of unknown length; added
    when nothing says). httpx sets Host only for bodies it encodes itself: added here."""
    parts, length, coding = _head(request, host=True)
    chunked = length is None
    if chunked and coding is None:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunked


def request_bytes(request: httpx.Request, body: bytes) -> bytes:
    """The request line, headers and body, framed as the headers say: httpx sets Host,
    and Content-Length, or Transfer-Encoding: chunked for a stream of unknown length
    (read whole by now: sent as one chunk). Any other transfer coding is refused
    (`_head`), before anything is written."""
    parts, length, coding = _head(request, host=False)
    if coding is not None:
        if body:
            body = b"%X\r\n%s\r\n" % (len(body), body)
        body += b"0\r\n\r\n"
    elif body and length is None:
        parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


async def read_head(
    conn: Conn, timeout: float | None
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


class Body(httpx.AsyncByteStream):
    """The response body as it arrives; the connection goes back once it is all read."""

    def __init__(
        self,
        conn: Conn,
        size: int | None,
        *,
        keep: bool,
        timeout: float | None,
        release: Callable[[bool], None],
    ) -> None:
        self._conn = conn
        self._release = release  # the connection back (True: to be reused) or closed
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
            if (match := _CHUNK_SIZE.fullmatch(line)) is None:  # not int(): "-5", "0x5"
                raise httpx.RemoteProtocolError(f"bad chunk size {line[:40]!r}")
            size = int(match[1], 16)
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
            self._release(reuse)

    async def aclose(self) -> None:
        self._finish(reuse=False)  # closed before its end: the connection cannot be reused


def framing(
    method: str, status: int, headers: list[tuple[bytes, bytes]], *, keep: bool
) -> tuple[int | None, bool]:
    """The body's size (None: chunked; -1: until the close) and whether to keep the
    connection after it. Strict, as h11: Transfer-Encoding once and exactly "chunked",
    Content-Length digits only and one value however often it is repeated."""
    coding: bytes | None = None
    lengths: set[bytes] = set()
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            if coding is not None:
                raise httpx.RemoteProtocolError("more than one Transfer-Encoding header")
            coding = value.lower()
        elif lower == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
    if coding is not None and coding != b"chunked":
        raise httpx.RemoteProtocolError(f"unsupported Transfer-Encoding {coding[:40]!r}")
    if len(lengths) > 1 or not all(_DIGITS.fullmatch(v) for v in lengths):
        raise httpx.RemoteProtocolError(f"bad Content-Length {sorted(lengths)[:3]!r}")
    if method == "HEAD" or status in _NO_BODY_STATUS:
        return 0, keep
    if coding is not None:
        return None, keep
    if lengths:
        return int(lengths.pop()), keep
    return -1, False  # delimited by the close
