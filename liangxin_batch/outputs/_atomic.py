"""A file written whole or not at all: the bytes go to a temporary name beside the
target (`.NAME.<random>.part`, hidden, in the same folder so the rename stays on one
filesystem) and are renamed over it. A reader sees the old file or the new one, never a
half; a failed write leaves neither a half nor its temporary file. Not fsynced: what a
power cut loses, the callers' next walk finds missing and writes again.
"""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(target: Path, data: bytes) -> None:
    """Replace `target` with `data`, whole (OSError as the write's or the rename's)."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        temp.write_bytes(data)
        os.replace(temp, target)
    except BaseException:
        with suppress(OSError):
            temp.unlink()
        raise
