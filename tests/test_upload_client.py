"""UploadClient on a real loopback socket, against a bare HTTP server that reads what
arrives: the multipart streamed from disk (and memory flat as the file grows), the
base64 body, both answer shapes, retries of the service's trouble, 401 and 400 said as
the batch needs them, and the key nowhere but in the Authorization header."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import stamina

from liangxin_batch.core._envelope import check_envelope
from liangxin_batch.core._local_files import LocalFile
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.errors import AuthError, BadRequestError, ServerError
from liangxin_batch.run._upload_client import LocalFileChanged, UploadClient

KEY = "sk-upload-test-5555"


def _local(tmp_path: Path, data: bytes, name: str = "shoe.png") -> LocalFile:
    path = tmp_path / name
    path.write_bytes(data)
    return LocalFile(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        media_type="image/png",
        path=str(path),
        written=f"photos/{name}",
    )


class Seen:
    """What the server received, request by request."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []


Answer = Callable[[int, bytes, bytes], tuple[int, bytes]]


def _ok(url: str = "https://tempfile.example/u/x.png", **data: Any) -> tuple[int, bytes]:
    body = {"success": True, "code": 200, "msg": "ok", "data": {"downloadUrl": url, **data}}
    return 200, json.dumps(body).encode()


def _on_loopback(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    client_side: Callable[[str], Awaitable[Any]],
) -> Any:
    """Serve `handler` on 127.0.0.1 (a free port) while `client_side(base_url)` runs in
    a fresh event loop; its result, the server closed however it ends."""

    async def main() -> Any:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await client_side(f"http://127.0.0.1:{port}")
        finally:
            server.close()

    return asyncio.run(main())


def _serve(answer: Answer, client_side: Callable[[str, Seen], Awaitable[Any]]) -> Any:
    seen = Seen()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length: *(\d+)", head)
                body = await reader.readexactly(int(m[1])) if m else b""
                seen.heads.append(head)
                seen.bodies.append(body)
                status, payload = answer(len(seen.heads), head, body)
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (status, len(payload), payload)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    return _on_loopback(handler, lambda base: client_side(base, seen))


def _client(base: str, **settings: Any) -> UploadClient:
    return UploadClient(upload_base_url=base, api_key=KEY, settings=RunSettings(**settings))


def _upload_and_see(tmp_path: Path, data: bytes, answer: Answer, **settings: Any) -> Any:
    file = _local(tmp_path, data)

    async def client(base: str, seen: Seen) -> Any:
        uploads = _client(base, **settings)
        try:
            try:
                result: Any = await uploads.upload(file)
            except Exception as err:  # the test looks at it
                result = err
            return result, seen, file
        finally:
            await uploads.aclose()

    return _serve(answer, client)


def test_the_request_is_what_the_upload_host_documents(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3000
    result, seen, file = _upload_and_see(tmp_path, data, lambda n, h, b: _ok())
    assert result.url == "https://tempfile.example/u/x.png"
    assert len(seen.heads) == 1
    head = seen.heads[0].decode()
    assert head.startswith("POST /api/file-stream-upload HTTP/1.1\r\n")
    assert f"Authorization: Bearer {KEY}" in head
    assert re.search(r"(?i)\r\nhost: 127\.0\.0\.1:\d+\r\n", head)  # HTTP/1.1 wants it
    agent = re.search(r"(?i)user-agent: *(.+)\r\n", head)
    assert agent is not None and agent[1].startswith("liangxin-batch/")
    boundary = re.search(r"boundary=(\w+)", head)
    assert boundary is not None
    body = seen.bodies[0]
    fields = {}
    for part in body.split(b"--" + boundary[1].encode())[1:-1]:
        meta, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="(\w+)"', meta)
        assert name is not None
        fields[name[1].decode()] = value[:-2]  # the part's closing CRLF
    assert fields["file"] == data
    assert fields["fileName"] == f"{file.sha256}.png".encode()
    assert fields["uploadPath"] == b"liangxin-batch"
    assert KEY.encode() not in body


def test_the_other_answer_shape_and_its_expiry_are_read(tmp_path: Path) -> None:
    def answer(n: int, h: bytes, b: bytes) -> tuple[int, bytes]:
        data = {"fileId": "f1", "fileUrl": "https://cdn.example/f1.png"}
        data["expiresAt"] = "2030-01-01T00:00:00Z"
        return 200, json.dumps({"code": 200, "msg": "ok", "data": data}).encode()

    result, _seen, _file = _upload_and_see(tmp_path, b"x" * 100, answer)
    assert result.url == "https://cdn.example/f1.png"
    assert result.expires_at == 1893456000.0


def test_download_url_is_preferred_to_file_url(tmp_path: Path) -> None:
    answer = _ok("https://tempfile.example/d.png", fileUrl="https://other.example/f.png")
    result, _seen, _file = _upload_and_see(tmp_path, b"x" * 100, lambda n, h, b: answer)
    assert result.url == "https://tempfile.example/d.png"


def test_base64_method_sends_the_file_in_a_json_body(tmp_path: Path) -> None:
    data = b"\x89PNG" + b"y" * 5000
    result, seen, file = _upload_and_see(
        tmp_path, data, lambda n, h, b: _ok(), upload_method="base64"
    )
    assert result.url.startswith("https://")
    assert seen.heads[0].startswith(b"POST /api/file-base64-upload ")
    sent = json.loads(seen.bodies[0])
    assert base64.b64decode(sent["base64Data"]) == data
    assert sent["fileName"] == f"{file.sha256}.png" and sent["uploadPath"] == "liangxin-batch"


def test_server_errors_are_retried_and_the_upload_made_once(tmp_path: Path) -> None:
    def answer(n: int, h: bytes, b: bytes) -> tuple[int, bytes]:
        if n < 3:
            return 500, json.dumps({"code": 500, "msg": "busy"}).encode()
        return _ok()

    with stamina.set_testing(True, attempts=5):  # no backoff waits in tests
        result, seen, _file = _upload_and_see(tmp_path, b"z" * 1000, answer)
    assert result.url == "https://tempfile.example/u/x.png"
    assert len(seen.heads) == 3


def test_retries_stop_at_the_settings_bound(tmp_path: Path) -> None:
    def answer(n: int, h: bytes, b: bytes) -> tuple[int, bytes]:
        return 500, json.dumps({"code": 500, "msg": f"down, key {KEY}"}).encode()

    with stamina.set_testing(True, attempts=3):
        result, seen, _file = _upload_and_see(tmp_path, b"z" * 10, answer)
    assert isinstance(result, ServerError)
    assert len(seen.heads) == 3
    assert KEY not in str(result)


def test_an_envelope_message_that_echoes_the_key_is_redacted() -> None:
    """The service's own `msg` reaches error messages (the task API's too): a key it
    echoes is scrubbed there, as it already was from bare-status snippets."""
    body = json.dumps({"code": 500, "msg": f"bad key {KEY} for this call"}).encode()
    with pytest.raises(ServerError) as caught:
        check_envelope(500, body, redact_with=KEY)
    assert KEY not in str(caught.value) and "bad key *** for this call" in str(caught.value)


def test_401_is_the_credentials_error(tmp_path: Path) -> None:
    body = json.dumps({"code": 401, "msg": "Authentication failed: Invalid API Key"}).encode()
    result, seen, _file = _upload_and_see(tmp_path, b"z" * 10, lambda n, h, b: (401, body))
    assert isinstance(result, AuthError) and result.fatal
    assert len(seen.heads) == 1
    assert KEY not in str(result)


def test_400_names_the_local_file(tmp_path: Path) -> None:
    body = json.dumps({"code": 400, "msg": "Missing required parameter: uploadPath"}).encode()
    result, seen, _file = _upload_and_see(tmp_path, b"z" * 10, lambda n, h, b: (400, body))
    assert isinstance(result, BadRequestError)
    assert "photos/shoe.png" in str(result) and "uploadPath" in str(result)
    assert len(seen.heads) == 1


def test_a_bare_400_names_the_local_file_too(tmp_path: Path) -> None:
    result, _seen, _file = _upload_and_see(
        tmp_path, b"z" * 10, lambda n, h, b: (400, b"Invalid HTTP request received.")
    )
    assert isinstance(result, BadRequestError)
    assert str(result).startswith("the upload host refused photos/shoe.png (HTTP 400")


def test_a_success_without_a_url_is_not_taken(tmp_path: Path) -> None:
    body = json.dumps({"code": 200, "msg": "ok", "data": {"fileName": "x"}}).encode()
    with stamina.set_testing(True, attempts=2):
        result, _seen, _file = _upload_and_see(tmp_path, b"z" * 10, lambda n, h, b: (200, body))
    assert "without a download URL" in str(result) and "photos/shoe.png" in str(result)


def test_a_file_changed_since_validation_is_not_uploaded_whole(tmp_path: Path) -> None:
    data = b"a" * 600_000
    file = _local(tmp_path, data)
    Path(file.path).write_bytes(b"b" * 600_000)  # same size, other bytes

    async def client(base: str, seen: Seen) -> Any:
        uploads = _client(base)
        try:
            with pytest.raises(LocalFileChanged, match=r"photos/shoe\.png"):
                await uploads.upload(file)
        finally:
            await uploads.aclose()
        await asyncio.sleep(0.05)  # the server sees the connection end
        return seen

    seen = _serve(lambda n, h, b: _ok(), client)
    assert seen.bodies == []  # the server never got a whole body


def test_a_missing_file_is_said_with_its_name(tmp_path: Path) -> None:
    file = _local(tmp_path, b"q" * 10)
    Path(file.path).unlink()

    async def client(base: str, seen: Seen) -> Any:
        uploads = _client(base, upload_method="base64")
        try:
            with pytest.raises(LocalFileChanged, match=r"photos/shoe\.png.*cannot be read"):
                await uploads.upload(file)
        finally:
            await uploads.aclose()
        return seen

    assert _serve(lambda n, h, b: _ok(), client).heads == []


@pytest.mark.slow
def test_streaming_keeps_memory_flat_as_the_file_grows(tmp_path: Path) -> None:
    """The peak of Python's allocations during an upload is about the same for a 4 MB
    and a 40 MB file: the file is never read whole (nor the body built whole)."""

    def peak_for(size: int) -> int:
        data = b"\x00" * size
        file = _local(tmp_path, data, f"f{size}.png")
        del data

        async def client(base: str, seen: Seen) -> int:
            uploads = _client(base)
            try:
                tracemalloc.start()
                tracemalloc.reset_peak()
                await uploads.upload(file)
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
                await uploads.aclose()

        def answer(n: int, h: bytes, b: bytes) -> tuple[int, bytes]:
            return _ok()

        return int(_serve_unbuffered(answer, client))

    small, large = peak_for(4_000_000), peak_for(40_000_000)
    assert large < 4_000_000, large  # far below the file's 40 MB
    assert large < small + 2_000_000, (small, large)


def _serve_unbuffered(answer: Answer, client_side: Callable[[str, Seen], Awaitable[Any]]) -> Any:
    """A server that reads and drops the body (the server's own memory is not the
    client's to measure: it runs in this process too)."""
    seen = Seen()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            left = int(m[1]) if m else 0
            while left:
                piece = await reader.read(min(left, 65536))
                if not piece:
                    return
                left -= len(piece)
            status, payload = answer(1, head, b"")
            writer.write(
                b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(payload), payload)
            )
            await writer.drain()
        finally:
            writer.close()

    return _on_loopback(handler, lambda base: client_side(base, seen))
