"""The downloader's provenance step: sidecars before a job is done, `--embed-metadata`
copies after, and the resume's repair of sidecars found missing.

- `before_done(job_id)`: every file of the task is verified and recorded; the sidecars
  are written (in a worker thread) before the downloader records the job `done`, so a
  done job has them. A full disk raises DiskFullError (the run stops, the job stays
  `succeeded`, and the next run writes them); any other write error is the job's
  download failure, as a file's would be.
- `after_done(job)`: the `with-metadata/` copies (outputs/_embed.py), in a worker
  thread; whatever goes wrong is a note in the log, never the job's failure.
- `repair(records)`: the walk of done jobs' files (the downloader's `lost_outputs`)
  hands each page of verified outputs here; one stat per file (in a worker thread)
  finds a missing sidecar (a state from before sidecars, a deleted one, one lost to a
  power cut), and only those jobs are read and written. A batch whose sidecars all
  exist costs that stat and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

from liangxin_batch.core._provenance import legacy_sidecar_path, sidecar_path
from liangxin_batch.errors import DiskFullError
from liangxin_batch.outputs._embed import EMBED_DIR, copy_path, embed_copy, embeddable
from liangxin_batch.outputs._sidecars import (
    JobProvenance,
    read_job,
    sidecar_of,
    without_sidecar,
    write_sidecars,
)
from liangxin_batch.run._fetch import write_error
from liangxin_batch.state._store import FileRow, JobRow, StateStore

__all__ = ["EMBED_DIR", "Provenance", "set_aside_provenance"]

logger = logging.getLogger("liangxin_batch")


class Provenance:
    """Sidecars (always) and metadata copies (`embed`) of one output folder's jobs."""

    def __init__(self, *, store: StateStore, out_dir: Path, embed: bool = False) -> None:
        self.store = store
        self.out_dir = out_dir
        self.embed = embed

    async def before_done(
        self, job_id: str, *, known: tuple[JobRow, Sequence[FileRow]] | None = None
    ) -> tuple[str | None, JobProvenance | None]:
        """Write the job's sidecars: (None when written or nothing to write, else why
        not: the job's download failure; the job as read, for `after_done`: not read
        again). DiskFullError on a full disk. `known`: the job and its files as the
        downloader holds them (`read_job`)."""
        job = await self.store.call(read_job, self.store, job_id, known=known)
        if job is None:
            return None, None
        failure = await self._write_sidecars(job)
        return (None if failure is None else f"provenance sidecar: {failure}"), job

    async def _write_sidecars(self, job: JobProvenance) -> str | None:
        """Write the job's sidecars in a worker thread: None when written, else why not
        (a write error, as a file's would read). DiskFullError on a full disk."""
        try:
            await asyncio.to_thread(write_sidecars, self.out_dir, job)
        except OSError as err:
            failure = write_error(self.out_dir, job.targets[0][2], err)
            if isinstance(failure, DiskFullError):
                raise failure from None
            return str(failure)
        return None

    async def after_done(self, job: JobProvenance | None) -> None:
        """The `--embed-metadata` copies (when on) of the job `before_done` read; never
        raises."""
        if self.embed and job is not None:
            await asyncio.to_thread(self._copies, job)

    def _copies(self, job: JobProvenance) -> None:
        for _, path, _ in job.targets:
            if not embeddable(path):
                continue
            try:
                embed_copy(self.out_dir, path, job.record)
            except Exception as err:  # a copy is a convenience: never a job's failure
                logger.info("%s: no metadata copy of %s (%s)", job.job_id, path, err)

    async def repair(
        self, records: Sequence[FileRow], stop: Callable[[], bool] = lambda: False
    ) -> int:
        """Write the sidecars (and copies, when on) that the given verified outputs of
        done jobs lack; returns how many jobs needed them. DiskFullError on a full disk;
        any other write error is logged (the job stays done, its files are fine)."""
        unsure, copies = await asyncio.to_thread(self._owed, records)
        sidecars = await self._missing(unsure)
        for job_id in sorted(sidecars | copies):
            if stop():  # a Ctrl-C: the next run's walk finds the rest
                break
            job = await self.store.call(read_job, self.store, job_id)
            if job is None:
                continue
            if job_id in sidecars and (failure := await self._write_sidecars(job)):
                logger.warning("%s: provenance sidecar not written: %s", job_id, failure)
            if job_id in copies:
                await asyncio.to_thread(self._copies, job)
        return len(sidecars)

    async def _missing(self, unsure: list[FileRow]) -> set[str]:
        """Jobs whose sidecar is missing, of the outputs whose `NAME.json` is: the state
        says which of those are named `NAME~ext.json` instead (an index search each: a
        batch whose sidecars all exist asks none), and a stat looks for that name."""
        missing: set[str] = set()
        legacy: list[FileRow] = []
        names = await self.store.call(self._sidecars_of, unsure) if unsure else []
        for rec, name in zip(unsure, names, strict=True):
            if name == sidecar_path(rec.path or ""):
                missing.add(rec.job_id)
            else:
                legacy.append(rec)
        if legacy:
            lost = await asyncio.to_thread(
                without_sidecar, self.out_dir, legacy, legacy_sidecar_path
            )
            missing.update(rec.job_id for rec in lost)
        return missing

    def _sidecars_of(self, records: Sequence[FileRow]) -> list[str]:
        return [sidecar_of(self.store, rec) for rec in records]

    def _owed(self, records: Sequence[FileRow]) -> tuple[list[FileRow], set[str]]:
        """The outputs whose `NAME.json` is missing; jobs whose copies are (only with
        `embed`: a copy that cannot be made, e.g. a JPEG whose text exceeds EXIF, is
        tried again by each run)."""
        copies: set[str] = set()
        if self.embed:
            for rec in records:
                if (
                    rec.path
                    and embeddable(rec.path)
                    and rec.job_id not in copies
                    and not os.path.exists(self.out_dir / copy_path(rec.path))
                ):
                    copies.add(rec.job_id)
        return without_sidecar(self.out_dir, records), copies


def set_aside_provenance(out: Path, rel: str, kept: Path) -> None:
    """--allow-changed set output `rel` aside in `kept`: its sidecar and its metadata
    copy go with it (they describe the old content, not what comes next)."""
    for extra, target in (
        (sidecar_path(rel), kept / Path(sidecar_path(rel)).name),
        (legacy_sidecar_path(rel), kept / Path(legacy_sidecar_path(rel)).name),
        (copy_path(rel), kept / EMBED_DIR / Path(rel).name),
    ):
        if (out / extra).is_file():
            with suppress(OSError):  # left in place: the new content's overwrites it
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(out / extra, target)
