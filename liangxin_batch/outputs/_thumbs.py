"""Thumbnails for report.html, made with Pillow and cached in `DIR/thumbs/`: of a job's
output images (320 px, by job id and file number, made again when the file is newer)
and, in `_card_inputs`, of its local input images (128 px, by sha256).

Decoding is bounded: JPEG decodes at reduced size (`draft`), and an image of more
than `max_pixels` gets no preview rather than hundreds of MB of memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, overload

from liangxin_batch.outputs._layout import slugify

logger = logging.getLogger("liangxin_batch")

__all__ = [
    "IMAGE_EXT",
    "MAX_THUMB_PIXELS",
    "THUMBS_DIR",
    "THUMB_SIZE",
    "make_thumbnail",
    "make_thumbs",
    "run_thumbnail_tasks",
    "thumb_name",
    "thumbnail_from",
]

THUMBS_DIR = "thumbs"
THUMB_SIZE = 320
IMAGE_EXT = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tiff", ".avif"})


def thumb_name(job_id: str, n: int) -> str:
    name = slugify(job_id)
    if name != job_id.lower():  # distinct ids stay distinct, even on a case-blind disk
        name += "-" + hashlib.sha256(job_id.encode("utf-8")).hexdigest()[:8]
    return f"{name}.jpg" if n == 0 else f"{name}_{n + 1}.jpg"


#: Pixels an image may have for a thumbnail (after JPEG's reduced decode): a 10,000 x
#: 10,000 PNG would take ~400 MB to decode. A larger image is kept (it was paid for) and
#: shown without a preview.
MAX_THUMB_PIXELS = 40_000_000


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
            img.draft("RGB", (size, size))  # JPEG: decode at reduced size
            width, height = img.size
            if width * height > max_pixels:
                logger.info(
                    "%s: %dx%d pixels, over the %s-pixel preview cap: no thumbnail",
                    source.name,
                    width,
                    height,
                    f"{max_pixels:,}",
                )
                return False
            _shrink_to(img, target, size)
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _shrink_to(img: Any, target: Path, size: int = THUMB_SIZE) -> None:
    from PIL import ImageOps

    # Shrink first: transposing or converting the full image would copy it.
    img.thumbnail((size, size))
    small = ImageOps.exif_transpose(img).convert("RGB")
    tmp = target.with_name(f".{target.name}.tmp")
    small.save(tmp, "JPEG", quality=82, optimize=True)
    os.replace(tmp, target)


def thumbnail_from(img: Any, out_dir: Path, job_id: str, n: int) -> bool:
    """The report's thumbnail of a job's file `n` from the image the download check has
    just decoded (a PIL image, changed in place): the file is not decoded again. False
    when it cannot be made now (`make_thumbnail` tries from the file later)."""
    from PIL import Image

    if img.width * img.height > MAX_THUMB_PIXELS:
        return False
    try:
        (out_dir / THUMBS_DIR).mkdir(exist_ok=True)
        _shrink_to(img, out_dir / THUMBS_DIR / thumb_name(job_id, n))
        return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def make_thumbnail(
    out_dir: Path, job_id: str, n: int, source: Path, max_pixels: int = MAX_THUMB_PIXELS
) -> bool:
    """The report's thumbnail of a job's file `n`, made as soon as the file is on disk
    (the downloader calls this in a worker thread), so the report at the end finds it
    made and only checks its date. False when the file is no image or unreadable."""
    if source.suffix.lower() not in IMAGE_EXT:
        return False
    (out_dir / THUMBS_DIR).mkdir(exist_ok=True)
    return _make_thumb(source, out_dir / THUMBS_DIR / thumb_name(job_id, n), max_pixels)


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
