"""The simulated upload host's files: stored by content, named by (uploadPath, fileName),
served until they expire, and checked when a task fetches them as inputs (as it leaves
its waiting phase).

Bytes live on disk, content-addressed (`<folder>/<sha256>`): an overwrite never changes a
blob another name (or a download in flight) still reads, a blob is written whole before
any name points at it, and a killed simulator leaves at worst an unnamed blob. The
folder is `SimConfig.uploads_dir`, else `<state_path's folder>/uploads` for a saved
simulator (so `run --simulate` resumes with its uploads), else a temporary folder
removed with the simulator. Names, sizes and times are kept in memory and, for a saved
simulator, journalled as `upload` records beside the tasks (`_saved.py`).

An upload expires `SimConfig.upload_lifetime_seconds` after it was made (default 24 h,
on the simulator's clock); reusing a name replaces the file and its expiry at once (the
service may take a while: the simulator does not).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from liangxin_batch.core._local_files import EXTENSIONS, sniff_media_type

if TYPE_CHECKING:
    from liangxin_batch.catalog._specs import FieldSpec, ModelSpec

__all__ = [
    "DOWNLOAD_PREFIX",
    "FETCH_FAILED",
    "TooLarge",
    "UploadRecord",
    "UploadStore",
    "UploadWriter",
    "accepted_media_type",
    "clean_upload_path",
    "download_url",
    "fetch_failed",
    "input_problem",
    "new_file_name",
    "own_file_path",
]

#: Where uploaded files are served: `<server root>/tempfile/<uploadPath>/<fileName>`.
DOWNLOAD_PREFIX = "/tempfile/"
#: The start of a task's failMsg when one of its input URLs cannot be fetched.
FETCH_FAILED = "Failed to fetch input image: "
_GONE = "HTTP 403: file expired or not found"


def accepted_media_type(head: bytes) -> str | None:
    """image/jpeg, image/png or image/webp from a file's first bytes (what the upload
    host accepts); None otherwise."""
    kind = sniff_media_type(head)
    return kind if kind in EXTENSIONS else None


class TooLarge(ValueError):
    """An upload went past `SimConfig.upload_max_bytes`."""


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """One name on the upload host, as it stands after its latest upload."""

    upload_path: str
    file_name: str
    sha256: str
    size: int
    media_type: str
    uploaded_at: float
    expires_at: float
    endpoint: str  # stream | base64 | url

    @property
    def file_path(self) -> str:
        return f"{self.upload_path}/{self.file_name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class UploadWriter:
    """Bytes of one upload on their way to disk: hashed and counted as they come, refused
    past the size limit; `finish()` files them under their sha256."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self._folder = folder
        self._max = max_bytes
        self._hash = hashlib.sha256()
        self._head = b""
        self.size = 0
        fd, name = tempfile.mkstemp(dir=folder, prefix=".part-")
        self._tmp = Path(name)
        self._fh: IO[bytes] = os.fdopen(fd, "wb")

    def write(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self._max:
            raise TooLarge(f"File size exceeds the limit of {self._max} bytes")
        if len(self._head) < 16:
            self._head += piece[: 16 - len(self._head)]
        self._hash.update(piece)
        self._fh.write(piece)

    @property
    def media_type(self) -> str | None:
        return accepted_media_type(self._head)

    def finish(self) -> str:
        """The blob's sha256, once it is in place under that name."""
        self._fh.close()
        sha = self._hash.hexdigest()
        os.replace(self._tmp, self._folder / sha)
        return sha

    def discard(self) -> None:
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


class UploadStore:
    """The upload host's names and blobs; thread-safe."""

    def __init__(self, folder: Path | None, *, max_bytes: int, lifetime: float) -> None:
        self._folder = folder
        self.max_bytes = max_bytes
        self.lifetime = lifetime
        self._names: dict[str, UploadRecord] = {}  # file_path -> latest
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """Where the blobs are, made on first use: a simulator that is sent no upload
        makes no folder (a temporary one goes when this store is collected)."""
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="liangxin-sim-uploads-"))
                weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
            self._folder.mkdir(parents=True, exist_ok=True)
            return self._folder

    def writer(self) -> UploadWriter:
        return UploadWriter(self.folder, self.max_bytes)

    def add(self, record: UploadRecord) -> None:
        with self._lock:
            self._names[record.file_path] = record

    def get(self, file_path: str) -> UploadRecord | None:
        with self._lock:
            return self._names.get(file_path)

    def blob(self, sha256: str) -> Path:
        return self.folder / sha256

    def live(self, file_path: str, now: float) -> UploadRecord | None:
        """The file at `file_path` if it exists and has not expired at `now`."""
        record = self.get(file_path)
        if record is None or now >= record.expires_at or not self.blob(record.sha256).is_file():
            return None
        return record


def new_file_name(media_type: str) -> str:
    """The random name the host picks when an upload gives none."""
    ext = EXTENSIONS[media_type]
    return f"{secrets.token_hex(8)}.{ext}"


def clean_upload_path(value: str) -> str | None:
    """`uploadPath` without surrounding slashes; None when it is empty or climbs (..)."""
    path = value.strip().strip("/")
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts):
        return None
    return path


def download_url(root: str, record: UploadRecord) -> str:
    """Where the file is served: `root` is the server's base URL (ending in /)."""
    return root.rstrip("/") + DOWNLOAD_PREFIX + quote(record.file_path)


def own_file_path(url: str, netloc: str) -> str | None:
    """The `uploadPath/fileName` a URL names on this server (netloc), or None when the
    URL is not one of this server's upload links."""
    parts = urlsplit(url)
    if parts.netloc != netloc or not parts.path.startswith(DOWNLOAD_PREFIX):
        return None
    return unquote(parts.path[len(DOWNLOAD_PREFIX) :])


def fetch_failed(url: str, reason: str = _GONE) -> str:
    """A task's failMsg for an input it could not fetch (the pattern the client knows)."""
    return f"{FETCH_FAILED}{url} ({reason})"


def _inputs(spec: ModelSpec, values: Mapping[str, Any]) -> Iterator[tuple[FieldSpec, str]]:
    """(field, URL) for every URL in the model's url_list fields, object_list items too."""
    for f in spec.fields.values():
        value = values.get(f.name)
        if not isinstance(value, list):
            continue
        if f.type == "url_list":
            yield from ((f, url) for url in value if isinstance(url, str))
        elif f.type == "object_list" and f.item_fields:
            lists = [g for g in f.item_fields.values() if g.type == "url_list"]
            for item in value:
                if isinstance(item, Mapping):
                    for g in lists:
                        urls = item.get(g.name)
                        if isinstance(urls, list):
                            yield from ((g, url) for url in urls if isinstance(url, str))


def input_problem(
    spec: ModelSpec,
    values: Mapping[str, Any],
    store: UploadStore,
    *,
    now: float,
    netloc: str,
    foreign: str,
) -> str | None:
    """Why a task fetching its inputs at `now` (as it leaves its waiting phase) could
    not use them (its failMsg), or None.

    This server's upload links must name a live file (not expired at `now`) of a type and
    size the field takes; links to other hosts fail only with `foreign == "fail"`."""
    for f, url in _inputs(spec, values):
        path = own_file_path(url, netloc)
        if path is None:
            if foreign == "fail" and urlsplit(url).netloc != netloc:
                return fetch_failed(url, "host not reachable from the service")
            continue
        record = store.live(path, now)
        if record is None:
            return fetch_failed(url)
        if f.file_types is not None and record.media_type not in f.file_types:
            return (
                f"Unsupported input image type: {url} is {record.media_type}; "
                f"{f.name} takes {', '.join(f.file_types)}"
            )
        if f.max_file_mb is not None and record.size > f.max_file_mb * 1_000_000:
            return (
                f"Input image too large: {url} is {record.size} bytes; "
                f"{f.name} takes at most {f.max_file_mb:g} MB per image"
            )
    return None
