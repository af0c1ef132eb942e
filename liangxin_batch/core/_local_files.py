"""Local files as model inputs: how a job names them, and how they are uploaded. No I/O.

A manifest may give a local path wherever a model takes a list of image URLs. The job
builder reads the file once, and the job's input then holds a *file token*
(`file:sha256:<hex>`) in place of the path: the job's identity (its derived id and its
content hash) depends on the file's bytes, never on where the file lives or on the
temporary URL an upload returns. Just before a createTask, the submitter replaces each
token by the URL of a fresh upload of those bytes.

Uploads are keyed by content (sha256) and account, and named by content
(`<sha256>.<ext>`), so the same bytes under two names, or used by 300 jobs, are
uploaded once, and a retried upload overwrites itself harmlessly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EXTENSIONS",
    "TOKEN_PREFIX",
    "LocalFile",
    "bytes_text",
    "distinct_tokens",
    "file_token",
    "replace_tokens",
    "sniff_media_type",
    "token_sha256",
    "tokens_in",
    "upload_name",
]

TOKEN_PREFIX = "file:sha256:"
_TOKEN = re.compile(r"file:sha256:([0-9a-f]{64})\Z")

#: The file types an image input may have, by media type (sniffed from the bytes).
EXTENSIONS: Mapping[str, str] = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
}


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A local input file as the job builder found it."""

    sha256: str  # of the bytes: the file's identity
    size: int  # bytes
    media_type: str  # sniffed from the bytes: a key of EXTENSIONS
    path: str  # absolute, resolved against the manifest's folder: what is uploaded
    written: str  # as the manifest wrote it (relative paths stay relative): what reports show


def sniff_media_type(head: bytes) -> str | None:
    """The image type a file's first bytes (16 are enough) say, or None for none we know.

    The one place these magic numbers live: the manifest's checks, the simulator's upload
    host and the download verification all ask here. Types no model takes (gif, bmp,
    tiff, heic, avif) are named too, so a refusal can say what the file is."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "image/heic" if b"avif" not in head[4:12] else "image/avif"
    return None


def file_token(sha256: str) -> str:
    """The string a job's input holds in place of a local file."""
    return TOKEN_PREFIX + sha256


def token_sha256(value: Any) -> str | None:
    """The sha256 a file token names, or None for anything else (a URL, a number)."""
    if isinstance(value, str) and value.startswith(TOKEN_PREFIX):
        m = _TOKEN.match(value)
        if m:
            return m.group(1)
    return None


def tokens_in(value: Any) -> Iterator[str]:
    """Every file token's sha256 in an input (lists and objects walked), in order."""
    if isinstance(value, str):
        sha = token_sha256(value)
        if sha is not None:
            yield sha
    elif isinstance(value, list):
        for item in value:
            yield from tokens_in(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from tokens_in(item)


def replace_tokens(value: Any, replace: Callable[[str, str], Any]) -> Any:
    """A copy of an input with each file token replaced by `replace(sha256, token)`
    (lists and objects walked; everything else as it is): what createTask is sent, what a
    report or a sidecar shows."""
    if isinstance(value, str):
        sha = token_sha256(value)
        return value if sha is None else replace(sha, value)
    if isinstance(value, list):
        return [replace_tokens(item, replace) for item in value]
    if isinstance(value, Mapping):
        return {key: replace_tokens(item, replace) for key, item in value.items()}
    return value


def distinct_tokens(value: Any) -> list[str]:
    """The sha256 of each file an input names, once each, in the order it first names it."""
    return list(dict.fromkeys(tokens_in(value)))


def upload_name(sha256: str, media_type: str) -> str:
    """The deterministic name an upload is given: a retried upload overwrites itself."""
    return f"{sha256}.{EXTENSIONS.get(media_type, 'bin')}"


def bytes_text(size: int) -> str:
    """'31.4 MB', or '7.5 KB' below 0.1 MB (a few small photos are not "0.0 MB")."""
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.1f} KB"
