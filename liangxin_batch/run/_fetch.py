"""One file from one URL: streamed to `DIR/.partial/<random>.part` (kept in memory up to
a megabyte first), hashed on the way, checked, synced and renamed into place.

A transfer is bounded (`DownloadLimits`: stall window, minimum average rate, size cap)
and checked against Content-Length (never empty, never short) and by decoding it as its
type. What went wrong is said by the exception's class, which is the downloader's
policy: `Refused` (trade the link for a fresh one), `Transient` (try the same URL again),
`Failed` (the job becomes download_failed). A full disk raises DiskFullError.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

from liangxin_batch.core._settings import RunSettings, parse_size
from liangxin_batch.errors import DiskFullError
from liangxin_batch.outputs._layout import extension_for
from liangxin_batch.run._media_check import check_media

__all__ = [
    "CHUNK",
    "DEFAULT_MAX_FILE_SIZE",
    "FILE_TIMEOUT",
    "DownloadLimits",
    "Failed",
    "FileFetcher",
    "Refused",
    "Saved",
    "Stalled",
    "Stopped",
    "Transient",
    "parse_size",
    "short_url",
]

#: The run's defaults are the settings' defaults: written once, in RunSettings.
_DEFAULTS = RunSettings()
DEFAULT_MAX_FILE_SIZE = _DEFAULTS.max_file_size
CHUNK = 1024 * 1024  # file writes go to a thread in pieces at least this big
#: Downloads in progress, under DIR: `<random>.part`, renamed into outputs/ when verified.
PARTIAL_DIR = ".partial"
FILE_TIMEOUT = httpx.Timeout(connect=15.0, read=60.0, write=30.0, pool=None)
_REFUSED = frozenset({403, 404, 410})


def short_url(url: str) -> str:
    """A URL fit for logs: host and file name only (query strings carry signed tokens)."""
    parts = urlsplit(url)
    name = parts.path.rstrip("/").rsplit("/", 1)[-1]
    return f"{parts.scheme}://{parts.hostname or ''}/…/{name[:60]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadLimits:
    """Bounds on one file's transfer, headers included: a host that drips must not hold a
    run for ever.

    A file that moves fewer than `stall_bytes` in any `stall_window` seconds is stalled
    (`stall_window` inf: never); and after `deadline_base` seconds a file must keep an
    average of `min_average_bps` (it may take `deadline_base` plus its size at that rate).
    A stalled or slow file is tried again with a refreshed URL, then the job is
    `download_failed`, saying which setting to change.
    """

    stall_bytes: int = _DEFAULTS.stall_bytes
    stall_window: float = _DEFAULTS.stall_window
    deadline_base: float = 120.0
    min_average_bps: int = _DEFAULTS.min_download_rate
    #: Images over this many pixels are verified without a full decode (memory).
    max_image_pixels: int = _DEFAULTS.max_image_pixels
    #: Bytes a file write must leave free on its disk (RunSettings.min_free_disk).
    min_free_disk: int = _DEFAULTS.min_free_disk

    @classmethod
    def from_settings(cls, settings: RunSettings) -> DownloadLimits:
        return cls(
            stall_bytes=settings.stall_bytes,
            stall_window=settings.stall_window,
            min_average_bps=settings.min_download_rate,
            max_image_pixels=settings.max_image_pixels,
            min_free_disk=settings.min_free_disk,
        )


class Pace:
    """When one transfer must have made progress by; why it was too slow."""

    __slots__ = ("limits", "received", "started", "window_bytes", "window_start")

    def __init__(self, limits: DownloadLimits, now: float) -> None:
        self.limits = limits
        self.started = self.window_start = now
        self.received = self.window_bytes = 0

    def moved(self, n: int, now: float) -> None:
        self.received += n
        self.window_bytes += n
        if self.window_bytes >= self.limits.stall_bytes:  # moving: a new stall window
            self.window_start, self.window_bytes = now, 0

    def skip(self, seconds: float) -> None:
        """A pause of ours (not the host's) is left out of the transfer's time."""
        self.started += seconds
        self.window_start += seconds

    def deadline(self) -> float:
        lim = self.limits
        average = self.started + lim.deadline_base + self.received / lim.min_average_bps
        return min(average, self.window_start + lim.stall_window)

    def why(self, now: float) -> str:
        lim = self.limits
        if now < self.window_start + lim.stall_window:
            return (
                f"too slow: {self.received:,} bytes in {now - self.started:,.0f} s (after "
                f"{lim.deadline_base:g} s a file must average {lim.min_average_bps:,} "
                "bytes/s; see --download-min-rate)"
            )
        return (
            f"stalled: fewer than {lim.stall_bytes:,} bytes in {lim.stall_window:g} s "
            "(see --download-stall)"
        )


@dataclass(frozen=True, slots=True)
class Saved:
    path: str  # relative to DIR, POSIX
    sha256: str
    size: int
    mtime_ns: int | None = None
    #: Its preview was made from the image the check decoded.
    previewed: bool = False


#: Makes a file's preview from its decoded image (a PIL image); whether it was made.
Preview = Callable[[Any], bool]


class Refused(Exception):  # 403/404/410: the link expired or was refused; refresh it
    pass


class Transient(Exception):  # dropped stream, 5xx, timeout, short body: try again
    pass


class Failed(Exception):  # this file cannot be had: the job becomes download_failed
    pass


class Stalled(Refused):  # too slow: another URL for the same file may come from elsewhere
    pass


class Stopped(Exception):  # a stop was requested: leave the job `succeeded` for next run
    pass


class LowDiskError(OSError):
    """A write would leave less than `min_free_disk` free (errno ENOSPC: a full disk)."""

    def __init__(self, reserve: int) -> None:
        super().__init__(
            errno.ENOSPC,
            f"less than {reserve:,} bytes would be left free (min_free_disk: the state "
            "needs room for its own commits)",
        )


def _write(
    fh: IO[bytes] | None, part: Path, digest: hashlib._Hash, data: bytes, reserve: int
) -> IO[bytes]:
    """Append `data` to `part` (created, with its folder, on the first piece), unless
    that would leave less than `reserve` bytes free."""
    if (
        reserve
        and shutil.disk_usage(part.parent if fh else _existing(part)).free - len(data) < reserve
    ):
        if fh is not None:
            fh.close()
        raise LowDiskError(reserve)
    if fh is None:
        part.parent.mkdir(parents=True, exist_ok=True)
        fh = part.open("wb")
    try:
        digest.update(data)
        fh.write(data)
    except BaseException:
        fh.close()  # the caller never gets it to close
        raise
    return fh


def _move_across(part: Path, target: Path) -> None:
    """outputs/ (or a folder in it) is on another disk than DIR/.partial: copy beside
    the target, sync, then rename there, so the target still appears whole or not at
    all."""
    beside = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        with part.open("rb") as src, beside.open("wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(beside, target)
    except BaseException:
        with suppress(OSError):
            beside.unlink()
        raise
    part.unlink()


def _existing(path: Path) -> Path:
    """The nearest folder of `path` that exists (its disk is the one it will be on)."""
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(".")


def _publish(
    fh: IO[bytes] | None,
    part: Path,
    target: Path,
    digest: hashlib._Hash,
    rest: bytes,
    limits: DownloadLimits,
    preview: Preview | None = None,
) -> tuple[IO[bytes], str | None, int, bool]:
    """The last piece, fsync, the media check, the rename and the preview, in ONE thread
    hop (most files fit in one piece: a hop costs more CPU than writing 20 KB). Returns
    the file, why it is broken (None: published), the published file's mtime, and
    whether `preview` was made from the image the check decoded (no second decode)."""
    fh = _write(fh, part, digest, rest, limits.min_free_disk)
    try:
        fh.flush()
        os.fsync(fh.fileno())  # the rename must never publish bytes still in a cache
    finally:
        fh.close()
    decoded: list[Any] | None = [] if preview is not None else None
    broken = check_media(
        part, ext=target.suffix, max_pixels=limits.max_image_pixels, decoded=decoded
    )
    if broken:
        return fh, broken, 0, False
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(part, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        _move_across(part, target)
    mtime_ns = target.stat().st_mtime_ns
    previewed = False
    if preview is not None and decoded:
        try:
            previewed = preview(decoded[0])
        except Exception:  # a preview is a cache: the downloader tries again from the file
            previewed = False
    return fh, None, mtime_ns, previewed


class FileFetcher:
    """Fetches one URL into one file under `out_dir`, or says why not (an exception
    whose class is the policy: refresh the link, try again, or give up)."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        out_dir: Path,
        max_file_size: int,
        limits: DownloadLimits,
        direct: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.http = http
        self.out_dir = out_dir
        self.max_file_size = max_file_size
        self.limits = limits
        #: A GET needs nothing of the client's per-request machinery but redirects (~250
        #: µs of CPU a file): given a transport, files go to it straight, and only a
        #: redirect is handed back to the client to follow.
        self.direct = direct
        self._headers = http.headers
        self._timeout = http.timeout.as_dict()

    @contextlib.asynccontextmanager
    async def _open(self, url: str) -> AsyncIterator[httpx.Response]:
        if self.direct is not None:
            request = httpx.Request(
                "GET", url, headers=self._headers, extensions={"timeout": self._timeout}
            )
            response = await self.direct.handle_async_request(request)
            response.request = request
            if not response.is_redirect:
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            await response.aclose()  # a redirect: the client follows it, as it always did
        async with self.http.stream("GET", url) as response:
            yield response

    async def fetch(
        self, url: str, path_for: Callable[[str], Awaitable[str]], preview: Preview | None = None
    ) -> Saved:
        """GET `url` into the relative path `path_for(extension)` names (and its preview,
        when `preview` is given and the file is a decodable image)."""
        short = short_url(url)
        loop = asyncio.get_running_loop()
        pace = Pace(self.limits, loop.time())
        try:
            async with (
                asyncio.timeout_at(pace.deadline()) as watch,
                self._open(url) as response,
            ):
                status = response.status_code
                if status in _REFUSED:
                    raise Refused(f"{short}: HTTP {status}")
                if status == 429 or status >= 500:
                    raise Transient(f"{short}: HTTP {status}")
                if status != 200:
                    raise Failed(f"{short}: HTTP {status}")
                expected = content_length(response)
                if expected is not None and expected > self.max_file_size:
                    raise Failed(
                        f"{expected:,} bytes, over the {self.max_file_size:,}-byte cap "
                        "(raise it with --max-file-size)"
                    )
                ext = extension_for(response.headers.get("content-type"), str(response.url))
                # A name claimed in the state (on PostgreSQL, a round trip behind the
                # store's queue): not the host's time, and never cut short by the watch.
                watch.reschedule(None)
                paused = loop.time()
                path = await path_for(ext)
                pace.skip(loop.time() - paused)
                watch.reschedule(pace.deadline())
                return await self._save(response, path, expected, pace, watch, preview)
        except TimeoutError:  # the watch: headers or body too slow
            raise Stalled(f"{short}: {pace.why(loop.time())}") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise Failed(f"not a usable http(s) URL: {short}") from None
        except (httpx.TimeoutException, httpx.TransportError) as err:
            # httpx's message may quote the URL; the type name says enough.
            raise Transient(f"{short}: {type(err).__name__}") from None
        except httpx.HTTPError as err:  # too many redirects, undecodable body
            raise Failed(f"{short}: {type(err).__name__}") from None

    async def _save(
        self,
        response: httpx.Response,
        rel: str,
        expected: int | None,
        pace: Pace,
        watch: asyncio.Timeout,
        preview: Preview | None = None,
    ) -> Saved:
        target = self.out_dir / rel
        # Not beside the target: a restart clears one folder instead of walking outputs/.
        part = self.out_dir / PARTIAL_DIR / f"{secrets.token_hex(8)}.part"
        fh: IO[bytes] | None = None
        digest = hashlib.sha256()
        size = 0
        published = False
        loop = asyncio.get_running_loop()
        try:
            buffer = bytearray()
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_file_size:
                    raise Failed(
                        f"more than the {self.max_file_size:,}-byte cap "
                        "(raise it with --max-file-size)"
                    )
                pace.moved(len(chunk), loop.time())
                watch.reschedule(pace.deadline())
                buffer += chunk
                if len(buffer) >= CHUNK:
                    fh = await asyncio.to_thread(
                        _write, fh, part, digest, bytes(buffer), self.limits.min_free_disk
                    )
                    buffer.clear()
            # Content-Length counts bytes on the wire: the encoded ones if it was compressed.
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            received = response.num_bytes_downloaded if encoded else size
            if expected is not None and received != expected:
                raise Transient(f"truncated: {received:,} of {expected:,} bytes")
            if size == 0:
                raise Transient("empty body")
            fh, broken, mtime_ns, previewed = await asyncio.to_thread(
                _publish, fh, part, target, digest, bytes(buffer), self.limits, preview
            )
            if broken:
                raise Transient(f"not a complete file: {broken}")
            published = True
        except OSError as err:  # disk full, name too long, permissions
            raise write_error(self.out_dir, rel, err) from None
        finally:
            if fh is not None:
                fh.close()
            if not published:  # a failure, a stall, or a cancelled (Ctrl-C) stream
                with suppress(OSError):
                    part.unlink()
        return Saved(rel, digest.hexdigest(), size, mtime_ns, previewed)


def write_error(out_dir: Path, rel: str, err: OSError) -> Exception:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        why = err.strerror if isinstance(err, LowDiskError) else "is full"
        return DiskFullError(
            f"the disk under {out_dir} {why} (writing {rel}): free some space, then run "
            "the same command again to continue (everything committed so far is kept)"
        )
    return Failed(f"cannot write {rel}: {err.strerror or err}")


def content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None
