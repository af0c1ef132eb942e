"""The sha256 a file is checked by, read streamed (a file of gigabytes never whole in
memory): the downloader's check of a recorded output and the report's check that a
local input still holds the bytes a job used."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_of"]

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """The file's sha256 (hex); OSError as reading it raises."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()
