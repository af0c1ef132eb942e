"""Small image files for the local-input tests: real magic bytes, distinct content."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["jpeg", "png", "sha", "webp"]


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def png(path: Path, body: bytes = b"png-body") -> Path:
    return _put(path, b"\x89PNG\r\n\x1a\n" + body)


def jpeg(path: Path, body: bytes = b"jpeg-body") -> Path:
    return _put(path, b"\xff\xd8\xff\xe0" + body)


def webp(path: Path, body: bytes = b"webp-body") -> Path:
    return _put(path, b"RIFF" + len(body).to_bytes(4, "little") + b"WEBP" + body)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
