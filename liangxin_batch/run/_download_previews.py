"""The downloader's previews (the report's thumbnails and each image's pixels, recorded
with its file; outputs/_thumbs.py makes them), so the downloader itself reads as fetch,
verify, record.

- While a file is checked: `hook(job_id, n)` is given to the fetcher; it makes the
  preview from the image the check decodes (in the check's worker thread: one decode per
  file, not two) and keeps it until the file is recorded.
- When the file is recorded: `recorded(...)` says its pixels and preview (`files.width`,
  `height`, `thumb`): the one made from the decode, else what needs none (no image: '';
  a small image: itself), else None: made from the file once the job is done.
- After the job is done: `make_from_files(...)` makes those in a worker thread and
  records them. A preview is a cache: nothing here fails a job (`ensure_previews` makes
  what is not made now).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from liangxin_batch.outputs._thumbs import (
    Previewed,
    known_preview,
    preview_from_decoded,
    preview_of_file,
)
from liangxin_batch.run._fetch import Preview, Saved
from liangxin_batch.state._store import StateStore

__all__ = ["DownloadPreviews"]

logger = logging.getLogger("liangxin_batch")


class DownloadPreviews:
    """Previews of the files one downloader fetches (none unless `on`)."""

    def __init__(self, *, store: StateStore, out_dir: Path, on: bool, max_pixels: int) -> None:
        self.store = store
        self.out_dir = out_dir
        self.on = on
        self.max_pixels = max_pixels
        #: Previews made from the check's decode, by (job, n), until their file is recorded.
        self._seen: dict[tuple[str, int], Previewed] = {}

    def hook(self, job_id: str, n: int) -> Preview | None:
        """What the fetcher calls with the image its check decoded (None: no previews)."""
        if not self.on:
            return None
        out_dir, seen, key = self.out_dir, self._seen, (job_id, n)

        def preview(image: object) -> bool:
            seen[key] = preview_from_decoded(image, out_dir, job_id, n)
            return True

        return preview

    def recorded(
        self, job_id: str, n: int, saved: Saved
    ) -> tuple[int | None, int | None, str | None]:
        """File `n`'s (width, height, thumb) to record with it; thumb None: to be made
        from the file (`make_from_files`)."""
        seen = self._seen.pop((job_id, n), None) if saved.previewed else None
        width, height = (seen.width, seen.height) if seen else (None, None)
        thumb = seen.thumb if seen and seen.thumb else None
        if thumb is None:  # '' no image; itself when small; None: made from the file
            thumb = known_preview(saved.path, saved.size, width, height)
        return width, height, thumb

    def forget(self, job_id: str) -> None:
        """A job's handling ended (perhaps half-way): what it left is dropped."""
        for key in [k for k in self._seen if k[0] == job_id]:
            del self._seen[key]

    async def make_from_files(self, job_id: str, files: list[tuple[int, str]]) -> None:
        """The previews not made with the download (file n at path), made from the files
        now that the job is done, in a worker thread, and recorded (when `on`)."""
        if not self.on:
            return
        for n, path in files:
            try:
                made = await asyncio.to_thread(
                    preview_of_file, self.out_dir, job_id, n, path, self.max_pixels
                )
                if made.thumb is not None:
                    await self.store.call(
                        self.store.set_preview,
                        job_id,
                        n,
                        thumb=made.thumb,
                        width=made.width,
                        height=made.height,
                    )
            except Exception as err:  # a preview is a cache: never a job's failure
                logger.info("%s: no preview now (%s: %s)", job_id, type(err).__name__, err)
