"""UploadClient: the one module that speaks HTTP to LiangXin's upload host, and owns its
limits. The sibling of `_client.LiangXinClient` (the task API), on the same wire
(`_transport.LeanTransport`, or a caller's transport in tests).

`POST /api/file-stream-upload` sends a local file as multipart (`file`, `uploadPath`,
`fileName`), read from disk a piece at a time as the connection takes it: memory stays
flat however large the file. `--upload-method base64` uses `/api/file-base64-upload`
instead (a JSON body: the whole file in memory, about a third larger: small files only).
Either way the bytes are checked against the sha256 the manifest's validation recorded
as they are read; a file changed since is refused before its last byte leaves.

Uploads are idempotent (the name is the content's sha256 plus its extension, so a retry
overwrites itself): 5xx, 429, timeouts and dropped connections are retried with jittered
backoff within `RunSettings.upload_retries` tries and `upload_retry_timeout` seconds.
401 is `AuthError` (the batch stops, as for createTask); a refusal of the file itself
(400, 413, 415, 422) is a `BadRequestError` naming the local file. The key goes in the
`Authorization` header and nowhere else: errors are redacted, and a URL that would
carry it is refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import stamina

from liangxin_batch._version import package_version
from liangxin_batch.core._local_files import LocalFile, upload_name
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._uploads import account_fingerprint, parse_expires_at
from liangxin_batch.errors import (
    AmbiguousError,
    APIError,
    BadRequestError,
    ConfigError,
    LiangXinBatchError,
    TransportError,
)
from liangxin_batch.run._client import read_envelope, retry_hook, wire_error
from liangxin_batch.run._credentials import ENV_API_KEY, Secret
from liangxin_batch.run._ratelimit import SlidingWindowLimiter
from liangxin_batch.run._transport import LeanTransport, env_proxied

__all__ = [
    "BASE64_PATH",
    "ENV_UPLOAD_BASE_URL",
    "STREAM_PATH",
    "FileRefusedError",
    "LocalFileChanged",
    "UploadAnswer",
    "UploadClient",
    "upload_base_url_from",
]

ENV_UPLOAD_BASE_URL = "LIANGXIN_UPLOAD_BASE_URL"
STREAM_PATH = "/api/file-stream-upload"
BASE64_PATH = "/api/file-base64-upload"
#: The folder uploads go to on the host (no leading or trailing slash, as documented).
UPLOAD_FOLDER = "liangxin-batch"
#: A file is read and written this much at a time.
CHUNK = 256 * 1024
#: An upload's answer may take a while (the host stores the file first).
UPLOAD_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=60.0, pool=None)
#: HTTP statuses that refuse the file itself (not the account or the service).
_FILE_REFUSED = frozenset({400, 413, 415, 422})
#: The most of an upload answer read: a JSON envelope of a few hundred bytes; a host
#: answering more is not taken into memory whole.
ANSWER_LIMIT = 1 << 20
#: One upload attempt's deadline: this long, plus the file's size at this many bytes per
#: second (a slow link still gets its time). The httpx timeouts bound each read; this
#: bounds a host that drips its answer a byte at a time, each read within them.
ATTEMPT_BASE_SECONDS = 120.0
ATTEMPT_MIN_RATE = 50_000.0


def upload_base_url_from(value: str | None) -> str | None:
    """The upload host's base URL from an argument, then `$LIANGXIN_UPLOAD_BASE_URL`;
    None when neither says (a batch without local files needs none)."""
    url = (value or os.environ.get(ENV_UPLOAD_BASE_URL) or "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"the upload base URL must start with http:// or https://, got {url!r} "
            f"(--upload-base-url or {ENV_UPLOAD_BASE_URL})"
        )
    return url.rstrip("/")


class LocalFileChanged(LiangXinBatchError):
    """A local input is gone, unreadable, or no longer the bytes the manifest's
    validation saw: it is not uploaded (its jobs stay pending)."""


@dataclass(frozen=True, slots=True)
class UploadAnswer:
    url: str
    #: The answer's own expiry (unix seconds), when it gave one.
    expires_at: float | None


def _user_agent() -> str:
    # The upload host may sit behind a CDN that refuses requests without a descriptive
    # User-Agent (reference, section 8).
    return f"liangxin-batch/{package_version()} (batch uploads of local inputs; httpx)"


def _changed(file: LocalFile, what: str) -> LocalFileChanged:
    return LocalFileChanged(
        f"{file.written}: {what} since the manifest was checked; it was not uploaded. "
        "Put the file back as it was, or run again so the manifest is read anew"
    )


class _FileParts(httpx.AsyncByteStream):
    """A multipart body with one file, read from disk as it is sent and checked against
    its sha256 before its last piece goes (a changed file is never uploaded whole)."""

    def __init__(self, file: LocalFile, fields: dict[str, str], boundary: str) -> None:
        self._file = file
        head = b""
        for name, value in fields.items():
            head += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
        name = upload_name(file.sha256, file.media_type)
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: {file.media_type}\r\n\r\n'
        ).encode()
        self._head = head
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self.length = len(head) + file.size + len(self._tail)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        for piece in _read_checked(self._file):
            yield piece
        yield self._tail


def _read_checked(file: LocalFile) -> Any:
    """The file's bytes a piece at a time; LocalFileChanged before the last piece when
    they are not the bytes validated (size or sha256), or the file cannot be read."""
    digest = hashlib.sha256()
    left = file.size
    try:
        with open(file.path, "rb") as handle:
            while left > 0:
                piece = handle.read(min(CHUNK, left))
                if not piece:
                    raise _changed(file, "got shorter")
                left -= len(piece)
                digest.update(piece)
                if left == 0 and (handle.read(1) or digest.hexdigest() != file.sha256):
                    raise _changed(file, "changed")
                yield piece
    except OSError as err:
        raise _changed(file, f"cannot be read ({err.strerror or err})") from None


async def _read_limited(response: httpx.Response, path: str) -> bytes:
    """The answer's body, up to ANSWER_LIMIT bytes (AmbiguousError past it)."""
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) > ANSWER_LIMIT:
            raise AmbiguousError(
                f"{path}: an answer of more than {ANSWER_LIMIT >> 20} MiB; not read further",
                path=path,
            )
    return bytes(body)


class UploadClient:
    """Uploads local files to LiangXin's upload host, within its own limits.

    Args:
        api_key: defaults to `$LIANGXIN_API_KEY` (the same key as the task API).
        upload_base_url: the upload host (no public default).
        settings: the upload concurrency, rate, method and retry bounds.
        transport: an httpx transport (tests pass the simulator's app).
        on_request: told the path of every request (tests count them).
    """

    def __init__(
        self,
        *,
        upload_base_url: str,
        api_key: str | None = None,
        settings: RunSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = UPLOAD_TIMEOUT,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        key = (api_key or os.environ.get(ENV_API_KEY) or "").strip()
        if not key:
            raise ConfigError(f"no API key for the upload host: set {ENV_API_KEY}")
        settings = settings or RunSettings()
        self._key = Secret(key)
        self.base_url = upload_base_url.rstrip("/")
        #: Which key and host the uploads belong to (one-way: never the key).
        self.account = account_fingerprint(self.base_url, key)
        del key, api_key
        self.settings = settings
        self._on_request = on_request
        self._gate = asyncio.Semaphore(settings.upload_concurrency)
        self.limiter = SlidingWindowLimiter(settings.upload_limit, settings.upload_window)
        wire = transport or LeanTransport(
            max_connections=settings.upload_concurrency,
            max_keepalive=settings.upload_concurrency,
        )
        self._timeout = timeout.as_dict()
        # Behind a proxy from the environment, httpx's own mounts carry the requests.
        self._direct: httpx.AsyncBaseTransport | None = (
            wire if transport is not None or not env_proxied(self.base_url) else None
        )
        self._http = httpx.AsyncClient(transport=wire, timeout=timeout)

    def __repr__(self) -> str:
        return f"UploadClient(base_url={self.base_url!r}, api_key=***)"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def upload(self, file: LocalFile) -> UploadAnswer:
        """Upload one local file (retried within the settings' bounds): its URL.

        Raises AuthError (401: the batch stops), BadRequestError naming the file when the
        host refuses the file itself, LocalFileChanged when the file is no longer what
        was validated, and the last LiangXinError when the tries are used up.
        """
        try:
            async for attempt in stamina.retry_context(
                on=retry_hook,
                attempts=self.settings.upload_retries,
                timeout=self.settings.upload_retry_timeout,
            ):
                with attempt:
                    async with self._gate:
                        await self.limiter.acquire()
                        return await self._upload_once(file)
        except APIError as err:
            refusal = file_refusal(err, file)
            if refusal is None:
                raise
            raise refusal from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _upload_once(self, file: LocalFile) -> UploadAnswer:
        name = upload_name(file.sha256, file.media_type)
        headers = {
            "Authorization": f"Bearer {self._key.reveal()}",
            "User-Agent": _user_agent(),
            "Accept": "application/json",
        }
        if self.settings.upload_method == "base64":
            path = BASE64_PATH
            data = b"".join(_read_checked(file))  # the whole file: base64 is for small ones
            body = json.dumps(
                {
                    "base64Data": base64.b64encode(data).decode("ascii"),
                    "uploadPath": UPLOAD_FOLDER,
                    "fileName": name,
                }
            ).encode()
            del data
            request = httpx.Request(
                "POST",
                self.base_url + path,
                headers={**headers, "Content-Type": "application/json"},
                content=body,
                extensions={"timeout": self._timeout},
            )
        else:
            path = STREAM_PATH
            boundary = secrets.token_hex(16)
            parts = _FileParts(file, {"uploadPath": UPLOAD_FOLDER, "fileName": name}, boundary)
            request = httpx.Request(
                "POST",
                self.base_url + path,
                headers={
                    **headers,
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(parts.length),
                },
                stream=parts,
                extensions={"timeout": self._timeout},
            )
        if self._on_request is not None:
            self._on_request(path)
        deadline = ATTEMPT_BASE_SECONDS + file.size / ATTEMPT_MIN_RATE
        try:
            async with asyncio.timeout(deadline):
                data = await self._send(request, path)
        except TimeoutError:
            raise AmbiguousError(
                f"{path}: no whole answer within {deadline:.0f}s for {file.written}", path=path
            ) from None
        return self._answer(data, file, path)

    async def _send(self, request: httpx.Request, path: str) -> Any:
        try:
            if self._direct is not None:
                response = await self._direct.handle_async_request(request)
            else:
                response = await self._http.send(request, stream=True)
            try:
                content = await _read_limited(response, path)
            finally:
                await response.aclose()
        except httpx.HTTPError as err:
            raise wire_error(path, err, self._key.reveal()) from None
        try:
            return read_envelope(response, content, path=path, key=self._key.reveal())
        except ValueError as err:  # a 2xx we could not read: the upload is retried
            raise TransportError(f"unreadable answer from {path}: {err}", path=path) from None

    def _answer(self, data: Any, file: LocalFile, path: str) -> UploadAnswer:
        url = None
        expires = None
        if isinstance(data, dict):
            for field in ("downloadUrl", "fileUrl"):  # the documented one first
                value = data.get(field)
                if isinstance(value, str) and value.startswith(("http://", "https://")):
                    url = value
                    break
            expires = parse_expires_at(data.get("expiresAt"))
        if url is None:
            raise TransportError(
                f"{path} answered success for {file.written} without a download URL", path=path
            )
        if self._key.reveal() in url:
            raise ConfigError(
                f"{path} answered a URL that holds the API key for {file.written}; "
                "it is neither stored nor used"
            )
        return UploadAnswer(url=url, expires_at=expires)


class FileRefusedError(BadRequestError):
    """The upload host refused a local file itself (400, 413, 415, 422): said with the
    file's name as the manifest wrote it, with the host's answer as evidence."""

    def __init__(self, file: LocalFile, err: APIError) -> None:
        super().__init__(
            err.message,
            code=err.api_code,
            http_status=err.http_status,
            envelope=err.envelope,
            path=err.path,
            snippet=err.snippet,
        )
        self.args = (
            f"the upload host refused {file.written} ({err}); check the file (its type "
            "and size) or leave it out",
        )


def file_refusal(err: APIError, file: LocalFile) -> FileRefusedError | None:
    """A refusal of the file itself, said with the local file's name (None: not one)."""
    status = err.api_code if err.envelope else err.http_status
    if status not in _FILE_REFUSED:
        return None
    return FileRefusedError(file, err)
