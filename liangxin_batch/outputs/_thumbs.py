"""Thumbnails for report.html, made with Pillow and cached in `DIR/thumbs/`: of a job's
output images (320 px, by job id and file number) and, in `_card_inputs`, of its local
input images (128 px, by sha256).

An output's preview is recorded in the state (`files.thumb`, `width`, `height`;
migration 010), made once: by the downloader as the file arrives, from the image its
check already decoded (`preview_from_decoded`) or else from the file in a worker thread
(`preview_of_file`); what a run did not make (a state from before previews were
recorded, a run stopped before its previews) `ensure_previews` makes before a report.
A file whose preview is recorded is never opened by the report again.

- JPEG (quality 82), not WebP: measured on 320 px thumbnails here (Pillow 11, libwebp),
  WebP was only 10% smaller on a photo (22 vs 25 KB) but 7-18x slower to encode (7-19 ms
  vs 1 ms) and 3-4x slower to decode (3.1 vs 0.8 ms); a grid of thousands decodes many.
- An output that is already a small image in a browser format (long side <= THUMB_SIZE,
  at most OWN_PREVIEW_BYTES, png/jpeg/webp/gif) is its own preview: `thumb` is its own
  path, no file is made.
- '' (no preview) is final: not an image, over `max_pixels`, unreadable. A thumbnail that
  could not be written (full disk) stays NULL and is tried again.
- Deleted previews: when `DIR/thumbs/` is gone, `ensure_previews` forgets the previews
  made there and makes them again (one stat per report). One thumbnail deleted by hand
  is not looked for (that would be a stat per file): the report shows a placeholder.

Decoding is bounded: JPEG decodes at reduced size (`draft`), and an image of more
than `max_pixels` gets no preview rather than hundreds of MB of memory. Pillow releases
the GIL while decoding and resizing, so a few threads do scale.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, overload

from liangxin_batch.outputs._layout import OUTPUTS_DIR, slugify
from liangxin_batch.state._previews import PreviewUpdate
from liangxin_batch.state._store import StateStore

logger = logging.getLogger("liangxin_batch")

__all__ = [
    "IMAGE_EXT",
    "MAX_THUMB_PIXELS",
    "OWN_PREVIEW_BYTES",
    "THUMBS_DIR",
    "THUMB_SIZE",
    "PreviewCounts",
    "Previewed",
    "ensure_previews",
    "known_preview",
    "make_thumbs",
    "preview_from_decoded",
    "preview_of_file",
    "run_thumbnail_tasks",
    "thumb_name",
]

THUMBS_DIR = "thumbs"
THUMB_SIZE = 320
IMAGE_EXT = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tiff", ".avif"})
#: Images every browser shows in an <img>: one small enough is its own preview.
BROWSER_IMAGE_EXT = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
#: The most bytes an output may have to be its own preview (a made JPEG thumbnail is
#: ~5-30 KB: a grid of small PNGs should not weigh much more).
OWN_PREVIEW_BYTES = 64 * 1024


def thumb_name(job_id: str, n: int) -> str:
    """The thumbnail of a job's file `n` in `DIR/thumbs/`: `{slug}[~{hash}][@{n+1}].jpg`.
    The slug (`[A-Za-z0-9._-]` only) is the id itself where that is safe; an id the slug
    changes (or that differs from it only by case: a case-blind disk) gets 16 hex of its
    sha256 after `~`, and a file after the first its number after `@`: slugify writes
    neither, so two files never share a name (an older scheme gave job `x`'s second file
    and job `x_2`'s first both `x_2.jpg`)."""
    name = slugify(job_id)
    if name != job_id.lower():
        name += "~" + hashlib.sha256(job_id.encode("utf-8")).hexdigest()[:16]
    return f"{name}.jpg" if n == 0 else f"{name}@{n + 1}.jpg"


#: Names the scheme before `thumb_name`'s gave more than one file: `{slug}_{k}.jpg` was
#: also a file after the first, `{slug}-{8 hex}.jpg` an id's hashed name. A thumbnail of
#: such a name that an older version left is not taken for this file's (`preview_of_file`).
_AMBIGUOUS_OLD = re.compile(r"(_[0-9]+|-[0-9a-f]{8})\.jpg$")


def _unambiguous_old_name(name: str) -> bool:
    """Whether an older version's thumbnail at `name` (a `thumb_name`) can only be of
    the file the name is made for: a first file of an id the slug keeps as it is."""
    return "~" not in name and "@" not in name and not _AMBIGUOUS_OLD.search(name)


#: Pixels an image may have for a thumbnail (after JPEG's reduced decode): a 10,000 x
#: 10,000 PNG would take ~400 MB to decode. A larger image is kept (it was paid for) and
#: shown without a preview.
MAX_THUMB_PIXELS = 40_000_000


def _draft_within(img: Any, size: int, max_pixels: int, name: str) -> bool:
    """Ask for a decode at reduced size (JPEG's `draft`), then whether the pixels still to
    decode are within `max_pixels` (logged when not: the image keeps no preview)."""
    img.draft("RGB", (size, size))
    if img.width * img.height <= max_pixels:
        return True
    logger.info(
        "%s: %dx%d pixels, over the %s-pixel preview cap: no thumbnail",
        *(name, img.width, img.height, f"{max_pixels:,}"),
    )
    return False


def _make_thumb(
    source: Path, target: Path, max_pixels: int = MAX_THUMB_PIXELS, size: int = THUMB_SIZE
) -> bool:
    """Write a JPEG thumbnail unless an up-to-date one exists; False if unreadable or over
    `max_pixels` (decoding it would cost more memory than a preview is worth)."""
    from PIL import Image  # imported when a report is written, not at CLI start

    try:
        if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
            return True
        with Image.open(source) as img:  # reads the header only
            if not _draft_within(img, size, max_pixels, source.name):
                return False
            _shrink_to(img, target, size)
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _shrink_to(img: Any, target: Path, size: int = THUMB_SIZE) -> None:
    from PIL import Image, ImageOps

    # Shrink first: transposing or converting the full image would copy it. A box
    # reduction to within 1.5x of the size, then bicubic: half the time of Pillow's
    # default (2x) on a 1024 px PNG, and a 320 px preview looks the same.
    img.thumbnail((size, size), reducing_gap=1.5)
    small = ImageOps.exif_transpose(img)
    if small.mode in ("RGBA", "LA", "PA") or "transparency" in small.info:
        rgba = small.convert("RGBA")  # transparent pixels on white, not on their junk RGB
        small = Image.new("RGB", rgba.size, "white")
        small.paste(rgba, mask=rgba.getchannel("A"))
    else:
        small = small.convert("RGB")
    tmp = target.with_name(f".{target.name}.tmp")
    small.save(tmp, "JPEG", quality=82, optimize=True)
    os.replace(tmp, target)


_Source = TypeVar("_Source")


@overload
def make_thumbs(
    thumbs: Mapping[str, Path], out_dir: Path, max_pixels: int = MAX_THUMB_PIXELS
) -> set[str]: ...
@overload
def make_thumbs(
    thumbs: Mapping[str, _Source],
    out_dir: Path,
    max_pixels: int = MAX_THUMB_PIXELS,
    *,
    make: Callable[[_Source, Path, int], bool],
) -> set[str]: ...
def make_thumbs(
    thumbs: Mapping[str, Any],
    out_dir: Path,
    max_pixels: int = MAX_THUMB_PIXELS,
    *,
    make: Callable[[Any, Path, int], bool] = _make_thumb,
) -> set[str]:
    """Make the thumbnails `thumbs` (name relative to `out_dir` -> what it shows), on a
    few threads, each by `make(source, target, max_pixels)` (by default of an image
    file, cached by date; `_card_inputs` makes its input thumbnails by its own); the set
    of those that exist afterwards."""
    if not thumbs:
        return set()
    (out_dir / THUMBS_DIR).mkdir(exist_ok=True)
    items = list(thumbs.items())
    results = run_thumbnail_tasks(
        [partial(make, src, out_dir / rel, max_pixels) for rel, src in items]
    )
    return {rel for (rel, _), ok in zip(items, results, strict=True) if ok}


def run_thumbnail_tasks(tasks: Sequence[Callable[[], bool]]) -> list[bool]:
    """Each task's answer, the tasks run on a few threads."""
    if not tasks:
        return []
    # Pillow releases the GIL while decoding and resizing: threads do scale here.
    # Few workers: each may hold one decoded image (up to --max-image-pixels) at a time.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda task: task(), tasks))


# -- previews recorded in the state ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Previewed:
    """A file's preview as the state records it (`files.thumb`, `width`, `height`)."""

    #: Relative to DIR: a made thumbnail under `thumbs/`, or the file itself; '' none can
    #: be made (final); None not made now (tried again by the next `ensure_previews`).
    thumb: str | None
    #: The pixels as shown (EXIF orientation applied); None when not an image or unread.
    width: int | None = None
    height: int | None = None
    #: A thumbnail found made (by a version that did not record previews), kept.
    kept: bool = False


def shown_size(img: Any) -> tuple[int, int]:
    """An image's (width, height) as a browser shows it: EXIF orientations 5-8 turn it."""
    width, height = img.size
    if "exif" not in img.info:  # else a PNG's getexif() would decode it all, unbounded
        return width, height
    try:
        turned = img.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # a damaged EXIF block is no reason to lose the size
        turned = False
    return (height, width) if turned else (width, height)


def known_preview(path: str, size: int, width: int | None, height: int | None) -> str | None:
    """The preview a file has without a thumbnail being made: '' when it is no image
    (none can be made), its own `path` when it is a small image in a browser format
    (long side <= THUMB_SIZE and at most OWN_PREVIEW_BYTES), None when one must be made.
    Pure: no I/O."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in IMAGE_EXT:
        return ""
    if (
        suffix in BROWSER_IMAGE_EXT
        and width is not None
        and height is not None
        and max(width, height) <= THUMB_SIZE
        and size <= OWN_PREVIEW_BYTES
    ):
        return path
    return None


def preview_from_decoded(img: Any, out_dir: Path, job_id: str, n: int) -> Previewed:
    """File `n`'s preview from the image the download check has just decoded (a PIL
    image, shrunk in place): the file is not decoded again. A small image gets no
    thumbnail (thumb None, its size given: the caller knows its bytes and asks
    `known_preview`); so does one whose thumbnail could not be written."""
    from PIL import Image

    width, height = shown_size(img)
    if max(width, height) <= THUMB_SIZE:
        return Previewed(None, width, height)
    rel = f"{THUMBS_DIR}/{thumb_name(job_id, n)}"
    try:
        (out_dir / THUMBS_DIR).mkdir(exist_ok=True)
        _shrink_to(img, out_dir / rel)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        logger.info("%s: no preview now (%s)", job_id, err)
        return Previewed(None, width, height)
    return Previewed(rel, width, height)


def _made_after(thumb: Path, source: Path) -> bool:
    try:
        return thumb.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except OSError:
        return False


def preview_of_file(
    out_dir: Path, job_id: str, n: int, path: str, max_pixels: int = MAX_THUMB_PIXELS
) -> Previewed:
    """File `n`'s preview made from the file at `path` (relative to DIR): one bounded
    decode (JPEG at reduced size; none at all over `max_pixels`). Blocking: call it in a
    worker thread. Never raises for a bad file: that is a '' preview."""
    from PIL import Image

    own = known_preview(path, 0, None, None)
    if own == "":
        return Previewed("")
    source = out_dir / path
    width = height = None
    try:
        size = source.stat().st_size
        with Image.open(source) as img:  # reads the header only
            width, height = shown_size(img)
            own = known_preview(path, size, width, height)
            if own is not None:
                return Previewed(own, width, height)
            rel = f"{THUMBS_DIR}/{thumb_name(job_id, n)}"
            if _unambiguous_old_name(rel) and _made_after(out_dir / rel, source):
                # an older version's thumbnail of this very file: kept, no decode
                return Previewed(rel, width, height, kept=True)
            if not _draft_within(img, THUMB_SIZE, max_pixels, path):
                return Previewed("", width, height)
            img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        logger.info("%s: no preview (%s: %s)", path, type(err).__name__, err)
        return Previewed("", width, height)
    try:
        (out_dir / THUMBS_DIR).mkdir(exist_ok=True)
        _shrink_to(img, out_dir / rel)
    except (OSError, ValueError) as err:  # our write failed, not the file: try again later
        logger.info("%s: no preview now (%s)", path, err)
        return Previewed(None, width, height)
    return Previewed(rel, width, height)


@dataclass(slots=True)
class PreviewCounts:
    """What `ensure_previews` did."""

    made: int = 0  # thumbnails written
    kept: int = 0  # thumbnails found made by an older version (newer than their file)
    own: int = 0  # small images that are their own preview
    none: int = 0  # no preview can be made ('' recorded): no image, too large, unreadable
    later: int = 0  # not made now (the thumbnail could not be written): left NULL
    forgotten: int = 0  # previews forgotten because `DIR/thumbs/` was gone

    @property
    def looked_at(self) -> int:
        return self.made + self.kept + self.own + self.none + self.later


def ensure_previews(
    store: StateStore,
    out_dir: Path,
    *,
    max_pixels: int = MAX_THUMB_PIXELS,
    workers: int | None = None,
    page: int = 256,
) -> PreviewCounts:
    """Make and record the previews the state does not have yet (`thumb` NULL, current
    files of the manifest's done jobs), on `workers` threads, a keyset page of files at
    a time (bounded memory), each page recorded in one transaction. In a folder whose
    previews are all recorded it opens no file (an empty index is all it reads). If
    `DIR/thumbs/` is gone, the previews made there are forgotten first and made again
    (one walk of the files' rows, only then).

    `store` must be writable and used from this thread only (the workers never touch
    it)."""
    counts = PreviewCounts()
    thumbs = out_dir / THUMBS_DIR
    if not thumbs.is_dir():  # deleted (or never made): a walk of the files, this once
        counts.forgotten = store.forget_made_previews(f"{THUMBS_DIR}/")
        if counts.forgotten:
            logger.info("%s is gone: %d preview(s) made again", THUMBS_DIR, counts.forgotten)
        if (out_dir / OUTPUTS_DIR).is_dir():
            with suppress(OSError):  # so a folder of videos is not walked every time
                thumbs.mkdir()
    workers = workers or min(4, os.cpu_count() or 2)
    after = ("", -1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while todo := store.files_without_preview(after, page):
            after = (todo[-1].job_id, todo[-1].n)
            made = pool.map(
                lambda t: preview_of_file(out_dir, t.job_id, t.n, t.path, max_pixels), todo
            )
            updates = []
            for t, p in zip(todo, made, strict=True):
                if p.thumb is None:
                    counts.later += 1
                    continue
                if p.thumb == "":
                    counts.none += 1
                elif p.thumb == t.path:
                    counts.own += 1
                elif p.kept:
                    counts.kept += 1
                else:
                    counts.made += 1
                updates.append(PreviewUpdate(t.job_id, t.n, p.thumb, p.width, p.height))
            store.set_previews(updates)
    return counts
