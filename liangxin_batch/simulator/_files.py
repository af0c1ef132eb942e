"""Result files: their bytes, their URLs (plain and signed) and how each GET is answered.

A plain result URL works until `url_ttl_seconds` after the task finished (then 403,
like an expired CDN link); `download-url` trades it for a signed URL valid 20 minutes.
A `broken_download` share of files break on their FIRST serve only, so a client that
retries the download gets the whole file. `short_content_length` announces and sends
fewer bytes than the file has, on every serve: a consistent but truncated file.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import parse_qs

from ._config import SimConfig
from ._media import (
    IMAGE_LONG_SIDE,
    VIDEO_LONG_SIDE,
    VIDEO_MAX_SECONDS,
    output_size,
    render_image,
    render_video,
)
from ._tasks import SimTask, result_path, unit

__all__ = ["DOWNLOAD_URL_SECONDS", "FILE_PATH", "FileServe", "FileStore"]

DOWNLOAD_URL_SECONDS = 20 * 60  # lifetime of a download-url link (documented)
FILE_PATH = re.compile(r"^/files/([0-9a-f]{32})/(\d+)\.(png|jpg|mp4)$")
_MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "mp4": "video/mp4"}
_CACHE_FILES = 256  # bounded: a benchmark may create thousands of tasks


@dataclass(frozen=True, slots=True)
class FileServe:
    """How to answer one file request: an error status, or bytes (maybe cut short)."""

    status: int
    content: bytes = b""
    media_type: str = "text/plain; charset=utf-8"
    cut_at: int | None = None  # broken download: stop after this many bytes
    message: str = ""
    short_by: int = 0  # short_content_length: announce and send this many bytes fewer

    @property
    def length(self) -> int:
        """The Content-Length announced: the file's size less `short_by`."""
        return max(0, len(self.content) - self.short_by)

    @property
    def sent(self) -> int:
        """How many body bytes go out (0 for an error answer's file part)."""
        if self.status != 200:
            return 0
        return self.length if self.cut_at is None else min(self.cut_at, self.length)


def _seconds(duration: object) -> int:
    """A video task's `duration` ("5", 5) as whole seconds of clip, 1..VIDEO_MAX_SECONDS."""
    try:
        return min(max(int(str(duration)), 1), VIDEO_MAX_SECONDS)
    except ValueError:
        return 1


class FileStore:
    """Renders, caches, signs and serves result files."""

    def __init__(self, config: SimConfig) -> None:
        self._config = config  # faults are read per request: tests may change them mid-run
        self._secret = secrets.token_bytes(16)
        self._broken_served: set[tuple[str, int]] = set()
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def content(self, task: SimTask, index: int) -> bytes:
        """The exact bytes of result file `index` (deterministic per task)."""
        if not 0 <= index < task.outputs:
            raise IndexError(f"task {task.task_id} has {task.outputs} file(s), not #{index}")
        key = (task.task_id, index)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        label = f"{task.model} · {task.task_id[:12]} #{index}"
        if task.kind == "video":
            data = render_video(
                task.prompt,
                label,
                output_size(task.aspect_ratio, VIDEO_LONG_SIDE),
                seconds=_seconds(task.input.get("duration")),
            )
        else:
            size = output_size(task.aspect_ratio, IMAGE_LONG_SIDE)
            data = render_image(task.prompt, label, size, "jpeg" if task.ext == "jpg" else "png")
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > _CACHE_FILES:
                self._cache.popitem(last=False)
        return data

    def _sign(self, path: str, expires: int) -> str:
        mac = hmac.new(self._secret, f"{path}:{expires}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def signed_url(self, task: SimTask, index: int, now: float) -> str:
        expires = int(now) + DOWNLOAD_URL_SECONDS
        path = result_path(task.task_id, index, task.ext)
        return f"{task.base_url}{path}?exp={expires}&sig={self._sign(path, expires)}"

    def decide(self, task: SimTask | None, path: str, query: str, now: float) -> FileServe:
        """Answer GET /{path}?{query} at `now` (path is files/<task>/<n>.<ext>)."""
        match = FILE_PATH.match("/" + path)
        if (
            match is None
            or task is None
            or task.state_at(now) != "success"
            or int(match.group(2)) >= task.outputs
            or match.group(3) != task.ext
        ):
            return FileServe(404, message="Not Found")
        index = int(match.group(2))
        params = parse_qs(query)
        if "sig" in params or "exp" in params:
            try:
                expires = int(params.get("exp", [""])[0])
            except ValueError:
                expires = 0
            valid = hmac.compare_digest(params.get("sig", [""])[0], self._sign(path, expires))
            if not valid or now >= expires:
                return FileServe(403, message="Forbidden: this download link is invalid or expired")
        elif (ttl := self._config.faults.url_ttl_seconds) is not None and now - task.done_at > ttl:
            return FileServe(
                403,
                message="Forbidden: this result URL has expired; get a fresh link from "
                "POST /api/v1/common/download-url",
            )
        data = self.content(task, index)
        cut: int | None = None
        key = (task.task_id, index)
        faults = self._config.faults
        short = 0
        if faults.short_content_length and (
            unit(self._config.seed, "short", task.task_id, index)
            < faults.short_content_length_share
        ):
            short = min(faults.short_content_length, len(data))
        with self._lock:
            if key not in self._broken_served and (
                unit(self._config.seed, "broken", task.task_id, index)
                < self._config.faults.broken_download
            ):
                self._broken_served.add(key)  # only the first serve breaks
                cut = len(data) // 2
        return FileServe(200, data, _MEDIA_TYPES[task.ext], cut, short_by=short)
