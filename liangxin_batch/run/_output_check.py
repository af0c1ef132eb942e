"""Whether a recorded output is still on disk as it was recorded, and the walk of every
done job's files that finds those lost (missing, or changed) for the downloader to
fetch again (`Downloader.lost_outputs`); the walk also has the provenance step write
the sidecars the unchanged files lack.

A file is unchanged when its size matches and its mtime is the one recorded; one whose
mtime alone changed is hashed, and its new mtime recorded when the bytes are the same.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from liangxin_batch.core._states import Event
from liangxin_batch.outputs._hashing import sha256_of
from liangxin_batch.run._progress import Observer
from liangxin_batch.run._provenance import Provenance
from liangxin_batch.state._store import FileRow, JobRow, StateStore

__all__ = ["OutputCheck"]


class OutputCheck:
    """The checks of one output folder's recorded files. Use on the store's thread."""

    def __init__(
        self, *, store: StateStore, out_dir: Path, provenance: Provenance, observer: Observer
    ) -> None:
        self.store = store
        self.out_dir = out_dir
        self.provenance = provenance
        self.observer = observer

    async def verified(self, rec: FileRow) -> bool:
        """The recorded file is on disk unchanged (size, then sha256 unless the mtime
        says it was not touched since it was recorded)."""
        if not rec.path or not rec.sha256 or rec.size is None:
            return False
        target = self.out_dir / rec.path
        try:
            info = target.stat()
            if info.st_size != rec.size:
                return False
            if rec.mtime_ns is not None and info.st_mtime_ns == rec.mtime_ns:
                return True
            same = await asyncio.to_thread(sha256_of, target) == rec.sha256
        except OSError:
            return False
        if same:
            await self.store.call(self.store.set_file_mtime, rec.job_id, rec.n, info.st_mtime_ns)
        return same

    async def lost_outputs(self, stop: Callable[[], bool]) -> AsyncIterator[JobRow]:
        """Done jobs whose files are gone or changed, moved back to be fetched again (the
        URL is refreshed when it has expired), as they are found.

        A walk of every done job's files: the runner does it in the background, so a
        resume's first createTask does not wait for a million stats. Each page is looked
        at in a worker thread; `stop()` ends the walk between pages.
        """
        lost = 0
        after = ("", -1)
        while not stop():
            page = await self.store.call(self.store.done_files, after)
            if not page:
                break
            after = (page[-1][0].job_id, page[-1][0].n)
            wanted = [rec for rec, urls in page if rec.n < urls]
            suspects = await asyncio.to_thread(self._unverified, wanted)
            refetched = {rec.job_id for rec in suspects}  # their sidecars come with them
            await self.provenance.repair([r for r in wanted if r.job_id not in refetched], stop)
            moved: set[str] = set()
            same: list[FileRow] = []  # only their mtime changed: their sidecars now
            for rec in suspects:
                if stop():  # a suspect may cost a whole file's sha256: look between them
                    break
                if rec.job_id in moved:
                    continue
                if await self.verified(rec):
                    same.append(rec)
                    continue
                why = "missing" if not (self.out_dir / (rec.path or "")).exists() else "changed"
                note = f"{rec.path} is {why} on disk: fetching it again"
                job = await self.store.call(self._fetch_again, rec.job_id, note)
                if job is not None:
                    moved.add(rec.job_id)
                    lost += 1
                    yield job
            await self.provenance.repair([r for r in same if r.job_id not in moved], stop)
        if lost:
            self.observer.message(f"{lost} finished job(s) lost files on disk; fetching again")

    def _fetch_again(self, job_id: str, note: str) -> JobRow | None:
        """The job moved back to be fetched again, as it now is (None: it had moved on)."""
        if not self.store.transition(job_id, Event.OUTPUT_MISSING, message=note):
            return None
        return self.store.get(job_id)

    def _unverified(self, records: list[FileRow]) -> list[FileRow]:
        """The files whose size or mtime differ from the record (or are gone): only these
        need a closer look (`verified` hashes one whose mtime alone changed)."""
        out = []
        for rec in records:
            if not rec.path or rec.size is None:
                out.append(rec)
                continue
            try:
                info = os.stat(self.out_dir / rec.path)
            except OSError:
                out.append(rec)
                continue
            if info.st_size != rec.size or info.st_mtime_ns != rec.mtime_ns:
                out.append(rec)
        return out
