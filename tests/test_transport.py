"""LeanTransport on a real loopback socket: framing, reuse, and what each failure is called
(the client reads ConnectError as "not sent", anything after the write as ambiguous)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from liangxin_batch.run._transport import LeanTransport
from tests.sim_support import named

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def _run(handler: Handler, client_side: Callable[[str], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        connections = 0

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                await handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            result = await client_side(f"http://127.0.0.1:{port}")
        finally:
            server.close()
        return result, connections

    return asyncio.run(main())


def _client(base: str, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, transport=LeanTransport(**kw), timeout=2.0)


def test_keep_alive_reuses_one_connection_for_sized_and_chunked_bodies() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await _read_request(reader)
            if b"/chunked" in head:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
                )
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def client(base: str) -> list[bytes]:
        async with _client(base) as http:
            out = []
            for path in ("/a", "/chunked", "/b", "/chunked"):
                out.append((await http.post(path, json={"x": 1})).content)
            return out

    bodies, connections = _run(handler, client)
    assert bodies == [b"ok", b"hello world", b"ok", b"hello world"]
    assert connections == 1


def test_a_body_delimited_by_the_close_and_connection_close_are_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async def client(base: str) -> list[bytes]:
        async with _client(base) as http:
            return [(await http.get("/")).content for _ in range(2)]

    bodies, connections = _run(handler, client)
    assert bodies == [b"all of it"] * 2
    assert connections == 2


def test_a_server_closing_an_idle_connection_costs_a_new_one_not_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()  # then closes: the client's pooled connection is dead

    async def client(base: str) -> list[int]:
        async with _client(base) as http:
            first = (await http.get("/")).status_code
            await asyncio.sleep(0.05)
            return [first, (await http.get("/")).status_code]

    statuses, connections = _run(handler, client)
    assert statuses == [200, 200] and connections == 2


def test_a_short_body_is_a_protocol_error_never_a_whole_answer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        await writer.drain()

    async def client(base: str) -> None:
        async with _client(base) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get("/")

    _run(handler, client)


def test_no_answer_after_the_write_is_not_a_connect_error() -> None:
    """The request went out: whatever follows must not read as "not sent"."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)

    async def client(base: str) -> None:
        async with _client(base) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.post("/", json={})

    _run(handler, client)


def test_a_silent_server_is_a_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def client(base: str) -> None:
        async with httpx.AsyncClient(
            base_url=base, transport=LeanTransport(), timeout=httpx.Timeout(5.0, read=0.2)
        ) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get("/")

    _run(handler, client)


def test_a_refused_connection_is_a_connect_error() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        async with _client(f"http://127.0.0.1:{port}") as http:
            with pytest.raises(httpx.ConnectError):
                await http.get("/")

    asyncio.run(main())


def test_the_trace_hook_fires_before_the_head_is_written() -> None:
    """The create limiter counts a createTask when its headers are written
    (`_client._create`'s trace hook): the event must come, and before the bytes."""
    seen: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        seen.append("server got the request")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async def client(base: str) -> None:
        async def trace(event: str, info: Any) -> None:
            seen.append(event)

        async with _client(base) as http:
            await http.post("/", json={}, extensions={"trace": trace})

    _run(handler, client)
    assert seen == ["http11.send_request_headers.started", "server got the request"]


def test_requests_in_progress_are_capped() -> None:
    active = peak = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, peak
        while True:
            await _read_request(reader)
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def client(base: str) -> None:
        async with _client(base, max_connections=3) as http:
            await asyncio.gather(*(http.get("/") for _ in range(10)))

    _, connections = _run(handler, client)
    assert peak <= 3 and connections <= 3


def test_a_file_goes_to_the_transport_straight_and_a_redirect_to_the_client(
    tmp_path: Path,
) -> None:
    """FileFetcher's direct path: one request for a plain file; a redirect is followed by
    the client, as before the direct path existed."""
    import io

    from PIL import Image

    from liangxin_batch.run._fetch import DownloadLimits, FileFetcher

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    body = buf.getvalue()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/moved.png":
            return httpx.Response(302, headers={"Location": "http://files.test/real.png"})
        return httpx.Response(200, content=body, headers={"Content-Type": "image/png"})

    wire = httpx.MockTransport(handler)

    async def main() -> list[str]:
        async with httpx.AsyncClient(transport=wire, follow_redirects=True) as http:
            fetcher = FileFetcher(
                http=http,
                out_dir=tmp_path,
                max_file_size=10**6,
                limits=DownloadLimits(),
                direct=wire,
            )
            first = await fetcher.fetch("http://files.test/real.png", named("a"))
            second = await fetcher.fetch("http://files.test/moved.png", named("b"))
            return [first.path, second.path]

    paths = asyncio.run(main())
    assert paths == ["a.png", "b.png"]
    assert (tmp_path / "b.png").read_bytes() == body
    assert seen == ["/real.png", "/moved.png", "/moved.png", "/real.png"]


def test_an_idle_connection_past_its_expiry_is_not_reused() -> None:
    """A server may close an idle connection just as a request goes out on it (then a
    createTask is ambiguous): connections idle longer than the expiry are dropped first."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def client(base: str) -> None:
        async with _client(base, keepalive_expiry=0.05) as http:
            await http.get("/")
            await http.get("/")  # at once: the same connection
            await asyncio.sleep(0.1)
            await http.get("/")  # past the expiry: a new one

    _, connections = _run(handler, client)
    assert connections == 2


def test_a_reset_during_a_body_delimited_by_the_close_is_an_error_not_the_end() -> None:
    """No Content-Length, not chunked: only a clean close ends the body. A reset
    (connection_lost with an error) mid-body must never hand back a truncated file."""
    import socket
    import struct

    head_read = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart of the fi")
        await writer.drain()
        await head_read.wait()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # linger 0: an RST, not a FIN

    async def client(base: str) -> None:
        async with _client(base) as http, http.stream("GET", "/file") as response:
            assert response.status_code == 200
            head_read.set()
            with pytest.raises(httpx.ReadError):
                async for _ in response.aiter_raw():
                    pass

    _run(handler, client)


async def _servers(n: int) -> tuple[list[asyncio.Server], list[str], dict[str, Any]]:
    """`n` keep-alive servers on loopback ports; `stats` counts connections made per
    base URL and those still open (with a Condition to await a change)."""
    stats: dict[str, Any] = {"made": {}, "open": 0, "changed": asyncio.Condition()}
    servers, bases = [], []

    async def changed(delta: int) -> None:
        async with stats["changed"]:
            stats["open"] += delta
            stats["changed"].notify_all()

    for _ in range(n):

        def serve(base: list[str]) -> Handler:
            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                stats["made"][base[0]] = stats["made"].get(base[0], 0) + 1
                await changed(+1)
                try:
                    while True:
                        await _read_request(reader)
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        await writer.drain()
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass
                finally:
                    writer.close()
                    await changed(-1)

            return handler

        box: list[str] = []
        server = await asyncio.start_server(serve(box), "127.0.0.1", 0)
        box.append(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        servers.append(server)
        bases.append(box[0])
    return servers, bases, stats


async def _open_sockets_become(stats: dict[str, Any], n: int) -> None:
    async with stats["changed"]:
        await asyncio.wait_for(stats["changed"].wait_for(lambda: stats["open"] == n), 2.0)


def test_the_idle_cap_evicts_the_oldest_connection_of_any_host() -> None:
    """Many CDN hosts: the cap must not fill with connections to hosts never asked again
    (they stay open, and the next host cannot keep its connection at all)."""

    async def main() -> None:
        servers, bases, stats = await _servers(4)
        transport = LeanTransport(max_keepalive=2)
        try:
            async with httpx.AsyncClient(transport=transport, timeout=2.0) as http:
                for base in bases:
                    await http.get(base + "/")
                for _ in range(3):
                    await http.get(bases[-1] + "/")
                assert stats["made"][bases[-1]] == 1  # kept alive, reused
                await _open_sockets_become(stats, 2)  # the two oldest closed
                assert len(transport._pool) <= 2  # no entries left for forgotten hosts
        finally:
            for server in servers:
                server.close()

    asyncio.run(main())


def test_expired_idle_connections_of_other_hosts_are_closed() -> None:
    async def main() -> None:
        servers, bases, stats = await _servers(2)
        transport = LeanTransport(keepalive_expiry=0.05)
        try:
            async with httpx.AsyncClient(transport=transport, timeout=2.0) as http:
                await http.get(bases[0] + "/")
                await asyncio.sleep(0.1)  # the time passing, not a synchronisation
                await http.get(bases[1] + "/")
                await _open_sockets_become(stats, 1)  # the first host's, expired, closed
                assert len(transport._pool) == 1
        finally:
            for server in servers:
                server.close()

    asyncio.run(main())


def test_without_select_poll_reuse_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no select.poll: the reuse check must fall back, not raise."""
    import select

    monkeypatch.delattr(select, "poll", raising=False)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def client(base: str) -> list[bytes]:
        async with _client(base) as http:
            return [(await http.get("/")).content for _ in range(3)]

    bodies, connections = _run(handler, client)
    assert bodies == [b"ok"] * 3 and connections == 1


def test_the_readability_check_sees_a_fin_without_select_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import select
    import socket

    from liangxin_batch.run._http11 import readable

    monkeypatch.delattr(select, "poll", raising=False)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert readable(ours.fileno()) is False
        theirs.shutdown(socket.SHUT_WR)  # the peer's FIN, not yet read
        assert readable(ours.fileno()) is True


def test_a_non_ascii_host_is_looked_up_by_its_idna_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """As httpcore does: the URL's IDNA 2008 bytes (faß -> xn--fa-hia), not the unicode
    name (which Python's own codec would turn into IDNA 2003's "fass", another host)."""
    import socket

    looked_up: list[Any] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        looked_up.append(host)
        return real("127.0.0.1" if host == "xn--fa-hia.test" else host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def client(base: str) -> bytes:
        port = base.rsplit(":", 1)[1]
        async with _client(base) as http:
            return (await http.get(f"http://faß.test:{port}/")).content

    body, _ = _run(handler, client)
    assert body == b"ok" and looked_up == ["xn--fa-hia.test"]


def test_a_streamed_request_body_is_sent_chunked() -> None:
    """httpx frames a body of unknown length with Transfer-Encoding: chunked: the bytes
    must then be chunks (and no Content-Length beside it), or the server misreads them."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        assert b"transfer-encoding: chunked\r\n" in head and b"content-length" not in head
        body = b""
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += await reader.readexactly(size)
            assert await reader.readexactly(2) == b"\r\n"
        assert await reader.readexactly(2) == b"\r\n"  # no trailers
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async def pieces() -> AsyncIterator[bytes]:
        yield b"hello"
        yield b" world"

    async def client(base: str) -> bytes:
        async with _client(base) as http:
            return (await http.post("/", content=pieces())).content

    body, _ = _run(handler, client)
    assert body == b"hello world"


def test_a_transfer_coding_other_than_chunked_is_refused_before_anything_is_written() -> None:
    seen: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append("connected")

    async def client(base: str) -> None:
        async def trace(event: str, info: Any) -> None:
            seen.append(event)

        async with _client(base) as http:
            with pytest.raises(httpx.LocalProtocolError):
                await http.post(
                    "/",
                    content=b"x",
                    headers={"Transfer-Encoding": "gzip"},
                    extensions={"trace": trace},
                )

    _run(handler, client)
    assert seen == []


_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "answer",
    [
        _CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n",  # negative: read until the close
        _CHUNKED + b"+5\r\nhello\r\n0\r\n\r\n",
        _CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n",
        _CHUNKED + b"0_5\r\nhello\r\n0\r\n\r\n",
        _CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunkedx\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0_5\r\n\r\nhello",
    ],
)
def test_lax_framing_is_a_protocol_error(answer: bytes) -> None:
    """As h11 reads them: chunk sizes are hex digits only, Transfer-Encoding is exactly
    "chunked", and Content-Length is digits, one value however many times it is sent."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()  # open until the client closes: the framing must decide

    async def client(base: str) -> None:
        async with _client(base) as http:
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get("/")

    _run(handler, client)


def test_a_repeated_equal_content_length_is_accepted() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5, 5\r\n\r\nhello")
        await writer.drain()

    async def client(base: str) -> bytes:
        async with _client(base) as http:
            return (await http.get("/")).content

    body, _ = _run(handler, client)
    assert body == b"hello"


def test_the_default_expiry_leaves_a_margin_under_the_shortest_common_server_keep_alive() -> None:
    """gunicorn closes an idle keep-alive connection after 2 s, counted from its write;
    our idle time counts from when the answer was all read, later: half of it at most."""
    from liangxin_batch.run._transport import KEEPALIVE_EXPIRY

    assert KEEPALIVE_EXPIRY <= 1.0
    assert LeanTransport()._expiry == KEEPALIVE_EXPIRY


def test_the_wait_for_an_output_name_is_not_counted_as_a_stalled_download(
    tmp_path: Path,
) -> None:
    """The output's name is claimed in the state once the headers say its extension (on
    PostgreSQL a round trip behind the store's queue). That wait is not the file host's
    slowness: it neither stalls the download nor is cut short by its deadline (whose
    cancel would leave a failed claim's error, a full disk say, unseen)."""
    import io

    from PIL import Image

    from liangxin_batch.run._fetch import DownloadLimits, FileFetcher
    from tests.runner_harness import in_virtual_time

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    body = buf.getvalue()
    wire = httpx.MockTransport(
        lambda request: httpx.Response(200, content=body, headers={"Content-Type": "image/png"})
    )
    limits = DownloadLimits()

    async def slow_claim(ext: str) -> str:
        await asyncio.sleep(limits.deadline_base + limits.stall_window + 1)
        return f"a{ext}"

    async def main() -> str:
        async with httpx.AsyncClient(transport=wire) as http:
            fetcher = FileFetcher(
                http=http, out_dir=tmp_path, max_file_size=10**6, limits=limits, direct=wire
            )
            return (await fetcher.fetch("http://files.test/a.png", slow_claim)).path

    assert in_virtual_time(main) == "a.png"
    assert (tmp_path / "a.png").read_bytes() == body
