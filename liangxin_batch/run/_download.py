"""Downloads: every file of a succeeded task, verified, into `DIR/outputs/`.

A stage of the run's pipeline, fed by the runner's `on_succeeded` hook as tasks succeed
(result URLs expire), with its own concurrency. Each file is streamed to a `.part` file
in `DIR/.partial/`, hashed on the way, checked against Content-Length (never empty, never
short), decoded as its type (a Content-Length can lie: a truncated image or video is never
"verified"), fsynced and renamed into place; only then is it recorded in the `files`
table. A job becomes `done` once every file is recorded, or `download_failed` with the
reason. A full disk is not a job's failure: it raises DiskFullError and the run stops.

A done job's files are checked again on every run, in the background (`lost_outputs`,
walked by the runner): one that is missing, or whose size or content changed, is fetched
again. Beside it: the check of a recorded file and that walk (run/_output_check.py), the
report's previews made as files arrive (run/_download_previews.py), and the provenance
sidecars written before a job is done (run/_provenance.py).

Files are fetched with their own httpx client, never the API client: the API key must
not reach a file host. Expired or refused links (403/404/410) are traded for fresh ones
(download-url, then recordInfo) before a job is given up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from liangxin_batch.core._envelope import TaskRecord
from liangxin_batch.core._states import Event, JobState, backoff
from liangxin_batch.errors import ConfigError, DiskFullError, LiangXinError
from liangxin_batch.outputs._layout import Layout, PathClaims
from liangxin_batch.run._download_previews import DownloadPreviews
from liangxin_batch.run._fetch import (
    DEFAULT_MAX_FILE_SIZE,
    FILE_TIMEOUT,
    PARTIAL_DIR,
    DownloadLimits,
    Failed,
    FileFetcher,
    Refused,
    Saved,
    Stopped,
    Transient,
    parse_size,
    short_url,
)
from liangxin_batch.run._output_check import OutputCheck
from liangxin_batch.run._progress import NullObserver, Observer
from liangxin_batch.run._provenance import Provenance
from liangxin_batch.run._transport import LeanTransport, any_env_proxy
from liangxin_batch.state._store import FileRow, JobRow, StateStore

__all__ = [
    "DEFAULT_MAX_FILE_SIZE",
    "DownloadLimits",
    "Downloader",
    "UrlSource",
    "parse_size",
    "short_url",
]

#: A partial download of a worker sharing DIR is another's while it is written to:
#: one untouched this long is a dead worker's (a stalled download fails in minutes).
SHARED_PARTIAL_AGE = 3600.0

logger = logging.getLogger("liangxin_batch")


class UrlSource(Protocol):
    """What the downloader needs from the API client (LiangXinClient fits)."""

    async def get_download_url(self, url: str, *, account: str | None = None) -> str: ...
    async def get_task(self, task_id: str, *, account: str | None = None) -> TaskRecord: ...


class Downloader:
    """Fetches, verifies and records the files of succeeded jobs. Use on one event loop."""

    def __init__(
        self,
        *,
        store: StateStore,
        out_dir: Path,
        client: UrlSource | None,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        layout: Layout | None = None,
        observer: Observer | None = None,
        concurrency: int = 4,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        retries: int = 4,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        limits: DownloadLimits | None = None,
        stopping: Callable[[], bool] = lambda: False,
        wall_clock: Callable[[], float] = time.time,
        thumbnails: bool = False,
        embed_metadata: bool = False,
    ) -> None:
        if concurrency < 1 or max_file_size < 1 or retries < 0:
            raise ConfigError("downloads need concurrency >= 1, max_file_size >= 1, retries >= 0")
        self.store = store
        self.out_dir = out_dir
        self.client = client
        self.layout = layout or Layout.parse()
        self.observer = observer or NullObserver()
        self.max_file_size = max_file_size
        self.retries = retries
        self.limits = limits or DownloadLimits()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        #: True once a Ctrl-C asked to stop: no new file starts (one in progress is
        #: cancelled by the runner).
        self.stopping = stopping
        self._now = wall_clock
        self._own_http = http is None
        # Our own wire (see run/_transport): httpcore's cost about 1 ms of CPU a file.
        wire = transport or LeanTransport(
            max_connections=4 * concurrency, max_keepalive=concurrency
        )
        #: Files go to the wire straight (see FileFetcher) unless a proxy may apply.
        direct = wire if http is None and (transport or not any_env_proxy()) else None
        self.http = http or httpx.AsyncClient(
            transport=wire,
            timeout=FILE_TIMEOUT,
            follow_redirects=True,
            headers={"User-Agent": "liangxin-batch"},
        )
        if self.http.auth is not None or "authorization" in self.http.headers:
            raise ConfigError("the file-download client must not carry credentials")
        self._fetcher = FileFetcher(
            http=self.http,
            out_dir=out_dir,
            max_file_size=max_file_size,
            limits=self.limits,
            direct=direct,
        )
        self._gate = asyncio.Semaphore(concurrency)
        #: The report's previews made as files arrive (`thumbnails`), not all at the end.
        self._previews = DownloadPreviews(
            store=store, out_dir=out_dir, on=thumbnails, max_pixels=self.limits.max_image_pixels
        )
        #: Provenance sidecars before a job is done; `--embed-metadata` copies after.
        self._provenance = Provenance(store=store, out_dir=out_dir, embed=embed_metadata)
        self._check = OutputCheck(
            store=store, out_dir=out_dir, provenance=self._provenance, observer=self.observer
        )
        self._claims: PathClaims | None = None
        self._active: set[str] = set()  # jobs being handled: a second hook call is a no-op

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    # -- start-up -------------------------------------------------------------------

    def prepare(self) -> int:
        """Remove the unfinished downloads a dead run left (all in `PARTIAL_DIR`: no walk
        of the outputs). Idempotent; returns how many stale files went."""
        if self._claims is not None:
            return 0
        shared = self.store.holder is not None  # one of several workers writing DIR
        self._claims = PathClaims(
            self.store.path_holders, reserve=self.store.reserve_stem if shared else None
        )
        # Workers sharing DIR: another's downloads in progress are in there too; only
        # what no download has written to for a while goes (a dead worker's leftovers).
        stale_before = time.time() - SHARED_PARTIAL_AGE if shared else math.inf
        removed = 0
        with suppress(OSError), os.scandir(self.out_dir / PARTIAL_DIR) as entries:
            for entry in entries:
                with suppress(OSError):
                    if entry.stat().st_mtime < stale_before:
                        os.unlink(entry.path)
                        removed += 1
        if removed:
            logger.info("removed %d unfinished download(s) left by an earlier run", removed)
        return removed

    # -- the hook -------------------------------------------------------------------

    async def handle(self, job: JobRow) -> None:
        """Download every file of a job whose generation succeeded (the runner's hook)."""
        self.prepare()
        current = await self.store.call(self.store.get, job.job_id)
        if current is None or current.state is not JobState.SUCCEEDED or job.job_id in self._active:
            return  # already done, in hand, or moved on since the hook was scheduled
        self._active.add(job.job_id)
        try:
            await self._handle(current)
        except DiskFullError:
            raise  # not this job's fault, and nothing can be recorded: the run stops
        except Exception as err:  # a bug or an OS error nobody foresaw: say so, keep the job
            await self._fail(current, f"unexpected {type(err).__name__}: {err}")
            logger.exception("download of %s failed unexpectedly", job.job_id)
        finally:
            self._active.discard(job.job_id)
            self._previews.forget(job.job_id)  # a job that stopped half-way

    async def _handle(self, job: JobRow) -> None:
        urls = job.result_urls or await self._urls_again(job)
        if not urls:
            return
        known = {f.n: f for f in await self.store.call(self.store.files_of, job.job_id)}
        later: list[tuple[int, str]] = []  # previews to make from the file, once done
        files: list[FileRow] = []  # as recorded, for the sidecars
        for n, url in enumerate(urls):
            if self.stopping():
                return
            rec = known.get(n)
            if rec is not None and rec.url == url and await self._check.verified(rec):
                if rec.thumb is None and rec.path:
                    later.append((n, rec.path))
                files.append(rec)
                continue
            async with self._gate:
                if self.stopping():
                    return
                try:
                    saved = await self._download(job, n, url)
                except Stopped:
                    return
                except Failed as err:
                    await self._fail(job, f"file {n + 1} ({short_url(url)}): {err}")
                    return
            width, height, thumb = self._previews.recorded(job.job_id, n, saved)
            if thumb is None:
                later.append((n, saved.path))
            row = FileRow(
                *(job.job_id, n, url, saved.path, saved.sha256, saved.size, saved.mtime_ns),
                *(width, height, thumb),
            )
            await self.store.call(self.store.record_file, row)
            files.append(row)
            assert self._claims is not None
            self._claims.release(job.job_id, n)  # the state answers for it from now on
        # done => sidecars exist. The job as read at the start, unless its URLs were
        # asked again since (then the state's row is newer).
        held = (job, files) if tuple(job.result_urls) == tuple(urls) else None
        why, read = await self._provenance.before_done(job.job_id, known=held)
        if why is not None:
            await self._fail(job, why)
            return
        await self.store.call(self.store.finish_download, job.job_id, len(urls), result_urls=urls)
        logger.info("%s: done, %d file(s) verified", job.job_id, len(urls))
        self.observer.downloaded(job.job_id)
        await self._provenance.after_done(read)
        await self._previews.make_from_files(job.job_id, later)

    async def _urls_again(self, job: JobRow) -> tuple[str, ...]:
        """The task succeeded but its result URLs were unreadable: ask recordInfo again."""
        notes: list[str] = []
        if job.task_id and self.client is not None and not self.stopping():
            try:
                record = await self.client.get_task(job.task_id, account=job.account)
            except LiangXinError as err:
                notes.append(f"recordInfo: {err}")
            else:
                if record.result_urls:
                    await self.store.call(
                        self.store.update, job.job_id, result_urls=json.dumps(record.result_urls)
                    )
                    return record.result_urls
                notes.append(f"recordInfo says {record.raw_state or '?'} with no result URLs")
        if self.stopping():
            return ()
        await self._fail(
            job,
            "the task succeeded but no result URLs could be read"
            + (f" ({'; '.join(notes)})" if notes else "")
            + "; --retry-failed asks again without paying again",
        )
        return ()

    async def lost_outputs(self, stop: Callable[[], bool]) -> AsyncIterator[JobRow]:
        """Done jobs whose files are gone or changed, moved back to be fetched again, as
        the background walk of every done job's files finds them (`OutputCheck`)."""
        self.prepare()
        async for job in self._check.lost_outputs(stop):
            yield job

    async def _fail(self, job: JobRow, reason: str) -> None:
        message = f"download failed: {reason}"
        await self.store.call(
            self.store.transition,
            job.job_id,
            Event.DOWNLOAD_FAILED,
            message=message,
            error_code="download_failed",
            error_message=message,
        )
        self.observer.message(f"{job.job_id}: {message}")

    # -- one file: refresh on refusal ------------------------------------------------

    async def _download(self, job: JobRow, n: int, url: str) -> Saved:
        refusals: list[str] = []
        tried: set[str] = set()

        async def attempt(candidate: str | None) -> Saved | None:
            if candidate is None or candidate in tried:
                return None
            tried.add(candidate)
            try:
                return await self._fetch_retrying(job, n, candidate)
            except Refused as err:
                refusals.append(str(err))
                return None

        saved = await attempt(url)
        if saved is None:
            saved = await attempt(await self._fresh_link(url, refusals, job.account))
        if saved is None and job.task_id:
            again = await self._reread(job.task_id, n, refusals, job.account)
            saved = await attempt(again)
            if saved is None and again is not None:
                saved = await attempt(await self._fresh_link(again, refusals, job.account))
        if saved is None:
            raise Failed("; ".join(refusals) or "refused")
        return saved

    async def _fresh_link(self, url: str, notes: list[str], account: str | None) -> str | None:
        """A fresh signed URL, asked with the key of the account whose task made it."""
        if self.stopping():
            raise Stopped
        if self.client is None:
            return None
        try:
            return await self.client.get_download_url(url, account=account)
        except LiangXinError as err:
            notes.append(f"download-url: {err}")
            return None

    async def _reread(
        self, task_id: str, n: int, notes: list[str], account: str | None
    ) -> str | None:
        if self.stopping():
            raise Stopped
        if self.client is None:
            return None
        try:
            record = await self.client.get_task(task_id, account=account)
        except LiangXinError as err:
            notes.append(f"recordInfo: {err}")
            return None
        if n >= len(record.result_urls):
            notes.append(f"recordInfo lists {len(record.result_urls)} file(s) now")
            return None
        return record.result_urls[n]

    # -- one URL: retry transient failures --------------------------------------------

    async def _fetch_retrying(self, job: JobRow, n: int, url: str) -> Saved:
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise Failed(f"not an http(s) URL: {short_url(url)}")
        tries = 0
        while True:
            tries += 1
            try:
                return await self._fetcher.fetch(
                    url, lambda ext: self._path_for(job, n, ext), self._previews.hook(job.job_id, n)
                )
            except Transient as err:
                if tries > self.retries:
                    raise Failed(f"{err} (gave up after {tries} tries)") from None
                if self.stopping():
                    raise Stopped from None
                delay = backoff(tries, base=self.backoff_base, cap=self.backoff_cap)
                logger.info(
                    "%s file %d: %s; retry %d/%d in %.1fs",
                    *(job.job_id, n + 1, err, tries, self.retries, delay),
                )
                await asyncio.sleep(delay)

    async def _path_for(self, job: JobRow, n: int, ext: str) -> str:
        assert self._claims is not None
        rel = self.layout.relative_path(
            job_id=job.job_id,
            model=job.model,
            task_id=job.task_id,
            index=n + 1,
            ext=ext,
            completed_at=job.completed_at or self._now(),
            columns=job.columns,
        )
        # Asks the state who holds the name (and, shared, reserves it there).
        return await self.store.call(self._claims.claim, rel, job.job_id, n)
