"""A downloaded image's preview is made from the decode that verified it (one decode per
file), only once the file is whole and published; a broken file gets none."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
import pytest

from liangxin_batch.outputs._thumbs import THUMBS_DIR, preview_from_decoded
from liangxin_batch.run._fetch import DownloadLimits, FileFetcher, Saved, Transient
from tests.sim_support import named


def _png(size: tuple[int, int] = (640, 480)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, "teal").save(buf, "PNG")
    return buf.getvalue()


def _fetch(tmp_path: Path, body: bytes, preview: Any) -> Saved:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "image/png"})

    wire = httpx.MockTransport(handler)

    async def main() -> Saved:
        async with httpx.AsyncClient(transport=wire) as http:
            fetcher = FileFetcher(
                http=http, out_dir=tmp_path, max_file_size=10**7, limits=DownloadLimits()
            )
            return await fetcher.fetch("http://files.test/a.png", named("a"), preview)

    return asyncio.run(main())


def test_the_preview_comes_from_the_checked_decode_after_the_file_is_published(
    tmp_path: Path,
) -> None:
    seen: list[tuple[tuple[int, int], bool]] = []

    def preview(image: Any) -> bool:
        seen.append((image.size, (tmp_path / "a.png").exists()))
        return preview_from_decoded(image, tmp_path, "job-1", 0).thumb is not None

    saved = _fetch(tmp_path, _png(), preview)
    assert saved.previewed
    assert seen == [((640, 480), True)]  # decoded once, and the file was already in place
    from PIL import Image

    with Image.open(tmp_path / THUMBS_DIR / "job-1.jpg") as thumb:
        assert max(thumb.size) == 320


def test_a_broken_image_gets_no_preview(tmp_path: Path) -> None:
    calls: list[Any] = []
    with pytest.raises(Transient):
        _fetch(tmp_path, _png()[:-30], calls.append)
    assert calls == []
