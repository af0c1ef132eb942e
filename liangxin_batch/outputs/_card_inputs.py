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

Only the report's heavy rows read this, and only when the state knows any local file: a
batch of URLs alone pays one query per report, nothing per job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liangxin_batch.core._local_files import (
    TOKEN_PREFIX,
    LocalFile,
    distinct_tokens,
    file_token,
    replace_tokens,
)
from liangxin_batch.outputs._hashing import sha256_of
from liangxin_batch.outputs._thumbs import (
    MAX_THUMB_PIXELS,
    THUMBS_DIR,
    _make_thumb,
    make_thumbs,
)
from liangxin_batch.state._store import StateStore

__all__ = [
    "INPUT_THUMB_SIZE",
    "CardInputs",
    "InputImage",
    "Resolved",
    "input_thumb_name",
    "make_input_thumbs",
    "same_bytes",
]

INPUT_THUMB_SIZE = 128
#: What a card shows for a token the state has no row for (never the token itself).
UNRECORDED = "(local file)"


@dataclass(frozen=True, slots=True)
class InputImage:
    """One local input of a card."""

    written: str  # the path as the manifest wrote it
    thumb: str | None  # thumbnail URL relative to report.html (None: the path alone)


def input_thumb_name(sha256: str) -> str:
    """The cached thumbnail of an input, by its bytes (relative to `DIR/thumbs/`). The
    `~` keeps it apart from an output's (`_thumbs.thumb_name`: a job id
    `input-<sha256>` is a name slugify keeps)."""
    return f"input~{sha256}.jpg"


def same_bytes(path: Path, sha256: str, size: int) -> bool:
    """Whether the file still holds the bytes a job used (its size first: a stat)."""
    try:
        if path.stat().st_size != size:
            return False
        return sha256_of(path) == sha256
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Resolved:
    """A card's input as the report shows it."""

    inputs: Mapping[str, Any]  # file tokens replaced by the paths as written
    images: tuple[InputImage, ...]  # its local input images, in the order it names them
    error: str  # upload URLs of its files replaced by the paths as written


class CardInputs:
    """The local inputs of the report's cards, read from the state as cards ask."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        #: Off for a batch without local files: cards then cost what they always did.
        self.enabled = store.has_local_files()
        self._files: dict[str, LocalFile | None] = {}
        #: Thumbnails to make: name relative to `DIR/thumbs/` -> the input it shows.
        self.wanted: dict[str, LocalFile] = {}

    def resolve(self, input_json: str, inputs: Mapping[str, Any], error: str) -> Resolved:
        """A card's input (`inputs`, decoded from `input_json`) and error as shown."""
        if not self.enabled or TOKEN_PREFIX not in input_json:
            return Resolved(inputs, (), error)
        shas = distinct_tokens(inputs)
        missing = [s for s in shas if s not in self._files]
        if missing:
            asked = {"files": [file_token(s) for s in missing]}
            found = {f.sha256: f for f in self._store.local_files_of(asked)}
            self._files.update((s, found.get(s)) for s in missing)
        images = []
        for sha in shas:
            known = self._files[sha]
            if known is None:
                images.append(InputImage(UNRECORDED, None))
                continue
            name = f"{THUMBS_DIR}/{input_thumb_name(sha)}"
            self.wanted[name] = known
            images.append(InputImage(known.written, name))
            if error and sha in error:
                error = _url_as_path(error, sha, known.written)
        return Resolved(_written(inputs, self._files), tuple(images), error)


def make_input_thumbs(
    wanted: Mapping[str, LocalFile], out_dir: Path, max_pixels: int = MAX_THUMB_PIXELS
) -> set[str]:
    """Make the input thumbnails `wanted` (`CardInputs.wanted`) not made yet, each
    distinct file decoded once; the set of those that exist afterwards. File work only,
    no state: safe on a worker thread while the state is used on another."""
    return make_thumbs(wanted, out_dir, max_pixels, make=_input_thumb)


def _input_thumb(file: LocalFile, target: Path, max_pixels: int) -> bool:
    """A thumbnail of the bytes a job used: made once (its name is its content), and
    not of a file that has changed since."""
    if target.exists():
        return True
    source = Path(file.path)
    if not same_bytes(source, file.sha256, file.size):
        return False
    return _make_thumb(source, target, max_pixels, INPUT_THUMB_SIZE)


def _url_as_path(text: str, sha256: str, written: str) -> str:
    """`text` with every URL of an upload of `sha256` (uploads are named `<sha256>.<ext>`,
    `upload_name`) as the path written in the manifest."""
    url = rf"[^\s\"'(]*{sha256}\.[A-Za-z0-9]+(?:\?[^\s\"')]*)?"
    return re.sub(url, lambda _: written, text)


def _written(value: Any, files: Mapping[str, LocalFile | None]) -> Any:
    """A copy of an input with its file tokens as their paths as written."""

    def written(sha: str, _token: str) -> Any:
        known = files.get(sha)
        return known.written if known is not None else UNRECORDED

    return replace_tokens(value, written)
