"""The uploader: a fresh upload URL for every local file a job names, just in time.

Before a job with local files is submitted, each of its file tokens needs an upload
that will still serve when the task fetches it (`core.is_fresh`: more than the margin
left). A stored one is used as it is; otherwise the file is uploaded, the upload is
recorded durably, and only then is its URL handed out. One upload per sha256 at a time:
jobs that want the same bytes while they are being uploaded wait for that one upload
(a shared future), never start their own.

The upload itself runs as a call of its own (spawned on the run's `RunControl`), so a
job whose wait is cancelled by a stop does not cut an upload short that others wait
for; the run still waits for it to finish and be recorded before it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from liangxin_batch.core._clock import Clock
from liangxin_batch.core._local_files import distinct_tokens
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._uploads import Upload, expiry_of, is_fresh
from liangxin_batch.errors import ConfigError, LiangXinBatchError, LiangXinError
from liangxin_batch.run._progress import Observer, logger, tell
from liangxin_batch.run._upload_client import LocalFileChanged, UploadClient
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import FINGERPRINT_KEY

__all__ = ["Uploader"]

Spawn = Callable[[Awaitable[None]], None]


class Uploader:
    def __init__(
        self,
        *,
        client: UploadClient,
        store: StateStore,
        settings: RunSettings,
        clock: Clock,
        observer: Observer,
        spawn: Spawn,
        by_account: Mapping[str, UploadClient] | None = None,
    ) -> None:
        self.client = client
        self.account = client.account
        #: With several accounts: each one's upload client (its key; its uploads are
        #: stored under its own fingerprint). Others use `client`.
        self._by_account = dict(by_account or {})
        self._store = store
        self._settings = settings
        self._clock = clock
        self._observer = observer
        self._spawn = spawn
        #: Uploads in progress, by (sha256, account fingerprint): every job that wants
        #: those bytes for that account awaits it.
        self._uploading: dict[tuple[str, str], asyncio.Future[str]] = {}
        #: Files refused for good in this run (by the host, or changed on disk): their
        #: jobs stay pending, and the file is not offered again until the next run.
        self._refused: dict[str, LiangXinBatchError] = {}
        #: Uploads made in this run (tests and the summary read it).
        self.uploads = 0
        self.upload_bytes = 0

    @staticmethod
    def files_of(input: Mapping[str, Any]) -> list[str]:
        """The sha256 of every local file a job's input names, each once, in order."""
        return distinct_tokens(input)

    def _client_for(self, account: str | None) -> UploadClient:
        return self._by_account.get(account or "", self.client)

    async def urls_for(self, shas: Iterable[str], *, account: str | None = None) -> dict[str, str]:
        """A URL with more than the margin left for each of these files, uploading
        those that have none, with the key of `account` (by name; default: the run's
        one). Raises what an upload raised (AuthError, a refusal naming the file,
        LocalFileChanged, or the last error after the retries)."""
        wanted = list(shas)
        client = self._client_for(account)
        urls = await asyncio.gather(*(self._url_for(sha, client) for sha in wanted))
        return dict(zip(wanted, urls, strict=True))

    async def _url_for(self, sha: str, client: UploadClient) -> str:
        stored = await self._store.call(self._store.upload_for, sha, client.account)
        # After the read: an upload of this file may have been refused meanwhile.
        refused = self._refused.get(sha)
        if refused is not None:
            raise refused
        if is_fresh(stored, now=self._clock.wall(), margin=self._settings.upload_margin):
            assert stored is not None
            return stored.url
        pending = self._uploading.get((sha, client.account))
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._uploading[sha, client.account] = pending
            pending.add_done_callback(_retrieved)
            self._spawn(self._upload(sha, pending, client))
        # shield: a job's wait may be cancelled (a stop); the upload is others' too.
        return await asyncio.shield(pending)

    async def _upload(self, sha: str, result: asyncio.Future[str], client: UploadClient) -> None:
        try:
            url = await self._upload_and_record(sha, client)
        except asyncio.CancelledError:
            result.cancel()
            raise
        except (LiangXinError, LocalFileChanged, ConfigError) as err:
            # ConfigError: the host answered a URL holding the key (neither stored nor
            # used); the submitter stops on it.
            if not err_retryable_later(err):
                self._refused[sha] = err
            if isinstance(err, LocalFileChanged):
                # The stored fingerprint says the manifest's files are as validated; they
                # are not: the next run must read the manifest anew (what the message
                # tells the user to do), not skip it and be refused again.
                self._store.delete_meta(FINGERPRINT_KEY)
            result.set_exception(err)
        except BaseException as err:
            # Anything else still ends the run as before, but no job is left waiting on
            # an upload that will never be resolved.
            if not result.done():
                result.set_exception(err if isinstance(err, Exception) else RuntimeError(err))
            raise
        else:
            result.set_result(url)
        finally:
            self._uploading.pop((sha, client.account), None)

    async def _upload_and_record(self, sha: str, client: UploadClient) -> str:
        file = await self._store.call(self._store.local_file, sha)
        if file is None:
            raise LocalFileChanged(
                f"no local file is recorded for sha256 {sha[:12]}...: run again so the "
                "manifest is read anew"
            )
        tell(self._observer, "uploading", file.written, file.size)
        started = self._clock.wall()  # the expiry counts from before the bytes left
        answer = await client.upload(file)
        expires = expiry_of(
            started, expires_at=answer.expires_at, lifetime=self._settings.upload_lifetime
        )
        # Durable before the URL is used: a kill from here on costs no upload again.
        upload = Upload(sha, client.account, answer.url, started, expires)
        await self._store.call(self._store.record_upload, upload)
        self.uploads += 1
        self.upload_bytes += file.size
        logger.info("uploaded %s (%d bytes)", file.written, file.size)
        tell(self._observer, "uploaded", file.written, file.size)
        return answer.url

    async def still_fresh(self, urls: Mapping[str, str], *, account: str | None = None) -> bool:
        """Are these URLs (by sha256) still `account`'s stored uploads, with more than the
        margin left now? Asked again right before a createTask, after the wait for its
        turn."""
        now = self._clock.wall()
        margin = self._settings.upload_margin
        fingerprint = self._client_for(account).account
        for sha, url in urls.items():
            stored = await self._store.call(self._store.upload_for, sha, fingerprint)
            if stored is None or stored.url != url or not is_fresh(stored, now=now, margin=margin):
                return False
        return True

    def forget(
        self, shas: Iterable[str], *, uploaded_before: float, account: str | None = None
    ) -> int:
        """A task could not fetch these files: their uploads (`account`'s) made before it
        was sent go, so the next use uploads again (one made since is already fresh). How
        many went."""
        fingerprint = self._client_for(account).account
        return sum(
            self._store.forget_upload(sha, fingerprint, uploaded_before=uploaded_before)
            for sha in shas
        )


def err_retryable_later(err: LiangXinBatchError) -> bool:
    """An upload error another job may try again in this run: the service's own trouble
    (retries used up on 5xx or timeouts), not a refusal of the file or the account."""
    return isinstance(err, LiangXinError) and err.retryable


def _retrieved(future: asyncio.Future[str]) -> None:
    # Nobody may be left waiting (every job stopped): the error is not "never retrieved".
    if not future.cancelled():
        future.exception()
