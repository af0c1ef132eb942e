"""A report card's local input images: the paths as the manifest wrote them, and small
thumbnails of them beside the output.

A job's stored input holds file tokens (`file:sha256:<hex>`) where its manifest gave
local files; the upload URL that replaced them at createTask is temporary and means
nothing to the reader. A card shows the path as written instead (the state's
`local_files` rows know it), and a ~128 px thumbnail of each input image, made with
Pillow from the file on disk and cached in `DIR/thumbs/` under the file's sha256: 300
jobs on one photo make one thumbnail, decoded once, and later reports only see it is
there (the name is the content, so it cannot be out of date). A file that is gone,
unreadable, or no longer holds the bytes the job used shows its path alone.

Only cards read this (at most `MAX_CARDS` jobs), and only when the state knows any local
file: a batch of URLs alone pays one query per report, nothing per job.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liangxin_batch.core._local_files import TOKEN_PREFIX, LocalFile, token_sha256, tokens_in
from liangxin_batch.state._store import StateStore

__all__ = [
    "INPUT_THUMB_SIZE",
    "CardInputs",
    "InputImage",
    "input_thumb_name",
    "same_bytes",
]

INPUT_THUMB_SIZE = 128
#: What a card shows for a token the state has no row for (never the token itself).
UNRECORDED = "(local file)"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class InputImage:
    """One local input of a card."""

    written: str  # the path as the manifest wrote it
    thumb: str | None  # thumbnail URL relative to report.html (None: the path alone)


def input_thumb_name(sha256: str) -> str:
    """The cached thumbnail of an input, by its bytes (relative to `DIR/thumbs/`)."""
    return f"input-{sha256}.jpg"


def same_bytes(path: Path, sha256: str, size: int) -> bool:
    """Whether the file still holds the bytes a job used (its size first: a stat)."""
    try:
        if path.stat().st_size != size:
            return False
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest() == sha256
    except OSError:
        return False


class CardInputs:
    """The local inputs of the report's cards, read from the state as cards ask."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        #: Off for a batch without local files: cards then cost what they always did.
        self.enabled = store.local_file_count() > 0
        self._files: dict[str, LocalFile | None] = {}
        #: Thumbnails to make: name relative to `DIR/thumbs/` -> the input it shows.
        self.wanted: dict[str, LocalFile] = {}

    def resolve(
        self, input_json: str, inputs: Mapping[str, Any]
    ) -> tuple[Mapping[str, Any], tuple[InputImage, ...]]:
        """`inputs` with every file token replaced by its path as written, and the
        card's input images in the order the input names them."""
        if not self.enabled or TOKEN_PREFIX not in input_json:
            return inputs, ()
        shas = list(dict.fromkeys(tokens_in(inputs)))
        missing = [s for s in shas if s not in self._files]
        if missing:
            found = {f.sha256: f for f in self._store.local_files_of({"files": missing})}
            self._files.update((s, found.get(s)) for s in missing)
        images = []
        for sha in shas:
            known = self._files[sha]
            if known is None:
                images.append(InputImage(UNRECORDED, None))
                continue
            name = input_thumb_name(sha)
            self.wanted[name] = known
            images.append(InputImage(known.written, name))
        return _written(inputs, self._files), tuple(images)

    def error(self, text: str, images: Sequence[InputImage], shas: Sequence[str]) -> str:
        """An error message with each upload URL of the job's files (named by their
        sha256, `upload_name`) shown as the path as written."""
        for sha, image in zip(shas, images, strict=False):
            text = re.sub(rf"\S*{sha}\.[A-Za-z0-9]+\S*?(?=[\s)\],;]|$)", image.written, text)
        return text


def _written(value: Any, files: Mapping[str, LocalFile | None]) -> Any:
    """A copy of an input with its file tokens as their paths as written."""
    if isinstance(value, str):
        sha = token_sha256(value)
        if sha is None:
            return value
        known = files.get(sha)
        return known.written if known is not None else UNRECORDED
    if isinstance(value, list):
        return [_written(v, files) for v in value]
    if isinstance(value, Mapping):
        return {k: _written(v, files) for k, v in value.items()}
    return value
