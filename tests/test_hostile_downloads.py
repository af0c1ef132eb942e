"""Issue 11, downloads: a host that drips, a file that never ends, a decompression bomb.

In virtual time: a host that sends one byte every 10 s costs no waiting here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from liangxin_batch.core._states import JobState
from liangxin_batch.outputs._thumbs import _make_thumb
from liangxin_batch.run._download import Downloader, DownloadLimits
from liangxin_batch.state._store import StateStore
from tests.test_download import PNG, FakeSource, add_job, leftovers, state_of
from tests.virtual_time import run_virtual


class Drip(httpx.AsyncByteStream):
    """`body`, `step` bytes at a time, `gap` seconds apart."""

    def __init__(self, body: bytes, step: int, gap: float) -> None:
        self.body, self.step, self.gap = body, step, gap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), self.step):
            await asyncio.sleep(self.gap)
            yield self.body[i : i + self.step]


def dripping(body: bytes, step: int, gap: float, *, declared: int | None = None) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "image/png", "content-length": str(declared or len(body))}
        return httpx.Response(200, headers=headers, stream=Drip(body, step, gap))

    return handler


def fetch(tmp_path: Path, handler: Any, **kw: Any) -> tuple[Any, float, FakeSource]:
    source = FakeSource(fresh={"https://cdn.test/a.png": "https://cdn.test/fresh.png"})

    async def main() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        store = StateStore.in_dir(tmp_path)
        started = loop.time()
        try:
            async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
                downloader = Downloader(
                    store=store, out_dir=tmp_path, client=source, http=http, backoff_base=0.0, **kw
                )
                await downloader.handle(add_job(store, "j1", ["https://cdn.test/a.png"]))
            return state_of(store, "j1"), loop.time() - started
        finally:
            store.close()

    job, elapsed = run_virtual(main)
    return job, elapsed, source


def test_a_host_that_drips_is_given_up_with_the_setting_named(tmp_path: Path) -> None:
    job, elapsed, source = fetch(tmp_path, dripping(PNG, 1, 10.0))
    assert job.state is JobState.DOWNLOAD_FAILED
    assert "stalled: fewer than 10,000 bytes in 30 s (see --download-stall)" in (
        job.error_message or ""
    )
    assert "download-url https://cdn.test/a.png" in source.calls, "a fresh URL was tried"
    assert leftovers(tmp_path) == []
    assert elapsed < 5 * 30 + 1, "each URL tried cost one stall window, not the whole drip"


def test_a_slow_steady_host_still_delivers(tmp_path: Path) -> None:
    job, _elapsed, _ = fetch(
        tmp_path, dripping(PNG, 500, 1.0), limits=DownloadLimits(stall_bytes=400, stall_window=2)
    )
    assert job.state is JobState.DONE


def test_a_steady_trickle_must_keep_the_minimum_average(tmp_path: Path) -> None:
    # Never stalls (10 KB every 20 s), but 2 MB at that pace would take over an hour.
    body = PNG * 400
    job, elapsed, _ = fetch(tmp_path, dripping(body, 10_000, 20.0))
    assert job.state is JobState.DOWNLOAD_FAILED
    assert "too slow" in (job.error_message or "")
    assert "--download-min-rate" in (job.error_message or "")
    assert elapsed < 3 * 200, "given up on the running average, not after the whole file"


def test_a_false_huge_content_length_does_not_buy_time(tmp_path: Path) -> None:
    job, elapsed, _ = fetch(tmp_path, dripping(PNG * 400, 10_000, 20.0, declared=400_000_000))
    assert job.state is JobState.DOWNLOAD_FAILED and "too slow" in (job.error_message or "")
    assert elapsed < 3 * 200


def test_headers_that_never_come_are_a_stall_too(tmp_path: Path) -> None:
    async def silent(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3600)  # the host accepted the connection and says nothing
        return httpx.Response(200, content=PNG)

    job, elapsed, _ = fetch(tmp_path, silent)
    assert job.state is JobState.DOWNLOAD_FAILED
    assert "stalled" in (job.error_message or "")
    assert elapsed < 5 * 30 + 1


def test_the_size_cap_names_its_setting(tmp_path: Path) -> None:
    job, _elapsed, _ = fetch(tmp_path, dripping(PNG * 10, 4096, 0.0), max_file_size=5_000)
    assert job.state is JobState.DOWNLOAD_FAILED
    assert "--max-file-size" in (job.error_message or "")


def test_an_image_over_the_pixel_cap_is_kept_without_a_thumbnail(tmp_path: Path) -> None:
    source = tmp_path / "big.png"
    Image.new("RGB", (400, 300), "#336699").save(source)
    assert _make_thumb(source, tmp_path / "t.jpg", max_pixels=100_000) is False
    assert not (tmp_path / "t.jpg").exists() and source.exists()
    assert _make_thumb(source, tmp_path / "t.jpg", max_pixels=200_000) is True
