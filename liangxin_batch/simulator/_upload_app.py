"""The upload host's HTTP face: three upload endpoints under `SimConfig.upload_prefix`
and the uploaded files under /tempfile/.

    POST <prefix>/api/file-stream-upload   multipart: file, uploadPath, fileName?
    POST <prefix>/api/file-base64-upload   JSON: base64Data (raw or data:...;base64,),
                                           uploadPath, fileName?
    POST <prefix>/api/file-url-upload      JSON: fileUrl, uploadPath?, fileName?
    GET  /tempfile/<uploadPath>/<fileName> the file, until it expires (then 403)

Answers follow the upload docs: `{"success": true, "code": 200, "msg": "File uploaded
successfully", "data": {...}}` (the data's shape per `SimConfig.upload_answer`), and
for errors `{"success": false, "code": N, "msg": "...", "data": null}` with N as the HTTP
status too: 401 "Authentication failed: Invalid API Key", 400 "Missing required
parameter: uploadPath", 400 "Base64 decoding failed", 400 "Unsupported file type: ...",
413 "File size exceeds the limit of N bytes". The file's type is sniffed from its bytes
(jpeg, png, webp). The stream endpoint reads the body as it arrives (`_multipart`), so
a big file is never in memory whole.

`file-url-upload` fetches only this server's own upload links (read from the store) and
loopback URLs: the simulator never reaches beyond the machine it runs on.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ._core import Simulator
from ._multipart import MultipartError, boundary_of, read_form
from ._uploads import (
    DOWNLOAD_PREFIX,
    TooLarge,
    UploadRecord,
    UploadWriter,
    clean_upload_path,
    download_url,
    new_file_name,
    own_file_path,
)

__all__ = ["AUTH_FAILED", "upload_routes"]

AUTH_FAILED = "Authentication failed: Invalid API Key"
_URL_TIMEOUT = 30.0  # the documented download timeout of file-url-upload
_CHUNK = 64 * 1024
_DEFAULT_URL_PATH = "url-uploads"


class _Refused(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def _error(code: int, msg: str) -> JSONResponse:
    return JSONResponse({"success": False, "code": code, "msg": msg, "data": None}, code)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _answer(sim: Simulator, request: Request, record: UploadRecord) -> JSONResponse:
    url = download_url(str(request.base_url), record)
    data: dict[str, Any] = {"fileName": record.file_name, "filePath": record.file_path}
    if sim.config.upload_answer == "file_url":
        data = {"fileId": secrets.token_hex(12), **data, "fileUrl": url}
    else:
        data["downloadUrl"] = url
    data.update(
        fileSize=record.size, mimeType=record.media_type, uploadedAt=_iso(record.uploaded_at)
    )
    if sim.config.upload_answer == "file_url":
        data["expiresAt"] = _iso(record.expires_at)
    body = {"success": True, "code": 200, "msg": "File uploaded successfully", "data": data}
    return JSONResponse(body)


def _upload_path(value: Any, default: str | None = None) -> str:
    if value is None or value == "":
        if default is not None:
            return default
        raise _Refused(400, "Missing required parameter: uploadPath")
    path = clean_upload_path(value) if isinstance(value, str) else None
    if path is None:
        raise _Refused(400, f"Invalid uploadPath: {str(value)[:80]!r}")
    return path


def _file_name(value: Any, media_type: str) -> str:
    if value is None or value == "":
        return new_file_name(media_type)
    if not isinstance(value, str) or "/" in value or value in (".", ".."):
        raise _Refused(400, f"Invalid fileName: {str(value)[:80]!r}")
    return value


def _store(
    sim: Simulator, writer: UploadWriter, endpoint: str, upload_path: str, name: Any
) -> UploadRecord:
    """The written bytes filed under their name; the writer is finished or discarded."""
    media_type = writer.media_type
    if media_type is None:
        raise _Refused(
            400, "Unsupported file type: only image/jpeg, image/png and image/webp are accepted"
        )
    file_name = _file_name(name, media_type)
    sha = writer.finish()
    now = sim.clock()
    record = UploadRecord(
        upload_path=upload_path,
        file_name=file_name,
        sha256=sha,
        size=writer.size,
        media_type=media_type,
        uploaded_at=now,
        expires_at=now + sim.config.upload_lifetime_seconds,
        endpoint=endpoint,
    )
    sim.record_upload(record)
    return record


async def _handle(request: Request, endpoint: str) -> Response:
    sim = _sim(request)
    if sim.authorize(request.headers.get("authorization")) is None:
        sim.log_upload(endpoint, 401)
        return _error(401, AUTH_FAILED)
    writer = sim.uploads.writer()
    try:
        if endpoint == "stream":
            upload_path, name = await _read_stream(request, writer)
        elif endpoint == "base64":
            upload_path, name = await _read_base64(request, writer)
        else:
            upload_path, name = await _read_url(sim, request, writer)
        record = _store(sim, writer, endpoint, upload_path, name)
    except TooLarge as err:
        writer.discard()
        sim.log_upload(endpoint, 413)
        return _error(413, str(err))
    except _Refused as err:
        writer.discard()
        sim.log_upload(endpoint, err.code)
        return _error(err.code, err.msg)
    except BaseException:
        writer.discard()
        raise
    return _answer(sim, request, record)


async def _read_stream(request: Request, writer: UploadWriter) -> tuple[str, Any]:
    try:
        boundary = boundary_of(request.headers.get("content-type", ""))
        form = await read_form(request.stream(), boundary, file_field="file", sink=writer.write)
    except MultipartError as err:
        raise _Refused(400, f"Invalid multipart body: {err}") from None
    upload_path = _upload_path(form.fields.get("uploadPath"))
    if form.file_field is None:
        raise _Refused(400, "Missing required parameter: file")
    return upload_path, form.fields.get("fileName")


async def _json(request: Request, limit: int) -> dict[str, Any]:
    raw = bytearray()
    async for piece in request.stream():
        raw.extend(piece)
        if len(raw) > limit:
            raise TooLarge(f"File size exceeds the limit of {limit * 3 // 4} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise _Refused(400, "The request body must be a JSON object")
    return body


async def _read_base64(request: Request, writer: UploadWriter) -> tuple[str, Any]:
    body = await _json(request, _json_limit(request))
    upload_path = _upload_path(body.get("uploadPath"))
    data = body.get("base64Data")
    if not isinstance(data, str) or not data:
        raise _Refused(400, "Missing required parameter: base64Data")
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if not head.endswith(";base64"):
            raise _Refused(400, "Base64 decoding failed")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(400, "Base64 decoding failed") from None
    writer.write(raw)
    return upload_path, body.get("fileName")


def _json_limit(request: Request) -> int:
    """The largest JSON body a base64 upload may send: the size limit in base64, plus room."""
    return _sim(request).uploads.max_bytes * 4 // 3 + 64 * 1024


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _read_url(sim: Simulator, request: Request, writer: UploadWriter) -> tuple[str, Any]:
    body = await _json(request, 64 * 1024)
    url = body.get("fileUrl")
    if not isinstance(url, str) or not url:
        raise _Refused(400, "Missing required parameter: fileUrl")
    upload_path = _upload_path(body.get("uploadPath"), _DEFAULT_URL_PATH)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Refused(400, f"File download failed: not an http(s) URL: {url[:80]!r}")
    own = own_file_path(url, request.url.netloc)
    if own is not None:
        record = sim.uploads.live(own, sim.clock())
        if record is None:
            raise _Refused(400, "File download failed: HTTP 403")
        with sim.uploads.blob(record.sha256).open("rb") as fh:
            while piece := fh.read(_CHUNK):
                writer.write(piece)
    elif _loopback(parts.hostname):
        await _fetch(url, writer)
    else:
        raise _Refused(400, "File download failed: the simulator fetches loopback URLs only")
    return upload_path, body.get("fileName")


async def _fetch(url: str, writer: UploadWriter) -> None:
    try:
        async with (
            httpx.AsyncClient(timeout=_URL_TIMEOUT, trust_env=False) as client,
            client.stream("GET", url) as reply,
        ):
            if reply.status_code != 200:
                raise _Refused(400, f"File download failed: HTTP {reply.status_code}")
            chunks: AsyncIterator[bytes] = reply.aiter_bytes(_CHUNK)
            async for piece in chunks:
                writer.write(piece)
    except httpx.HTTPError as err:
        raise _Refused(400, f"File download failed: {type(err).__name__}") from None


async def stream_upload(request: Request) -> Response:
    return await _handle(request, "stream")


async def base64_upload(request: Request) -> Response:
    return await _handle(request, "base64")


async def url_upload(request: Request) -> Response:
    return await _handle(request, "url")


async def uploaded_file(request: Request) -> Response:
    """An uploaded file, until it expires: then (or for a name never used) a 403, as a
    CDN link that is gone answers."""
    sim = _sim(request)
    path = request.url.path[len(DOWNLOAD_PREFIX) :]
    record = sim.uploads.live(unquote(path), sim.clock())
    if record is None:
        return PlainTextResponse("Forbidden: file expired or not found", status_code=403)
    return FileResponse(sim.uploads.blob(record.sha256), media_type=record.media_type)


def upload_routes(prefix: str) -> list[Route]:
    """The upload host's routes under `prefix`, and the uploaded files' route."""
    return [
        Route(f"{prefix}/api/file-stream-upload", stream_upload, methods=["POST"]),
        Route(f"{prefix}/api/file-base64-upload", base64_upload, methods=["POST"]),
        Route(f"{prefix}/api/file-url-upload", url_upload, methods=["POST"]),
        Route(DOWNLOAD_PREFIX + "{path:path}", uploaded_file, methods=["GET", "HEAD"]),
    ]
