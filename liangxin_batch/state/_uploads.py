"""The store's uploads of local input files: the `uploads` table (migration 009; the
files themselves are `state/_local_files.py`'s). `StateStore` inherits these.

An upload is recorded, durably, before its URL is put in any createTask: a kill after
the upload and before its record costs one upload again (the name is deterministic, so
it overwrites itself), never a task sent with a URL nobody knows about. Rows are keyed
by the bytes' sha256 and an account fingerprint (core `account_fingerprint`, one-way:
the key itself is never stored).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from liangxin_batch.core._states import Event
from liangxin_batch.core._uploads import Upload
from liangxin_batch.state._db import Connection

if TYPE_CHECKING:
    from liangxin_batch.state._tx import Transaction

__all__ = ["UploadStore"]

_REFRESH = Event.INPUT_REFRESH.value


class UploadStore:
    """Uploads: read and written on the store's one connection."""

    db: Connection

    if TYPE_CHECKING:

        def transaction(self, *, durable: bool = True) -> Transaction: ...

    # -- uploads --------------------------------------------------------------------

    def upload_for(self, sha256: str, account: str) -> Upload | None:
        """The latest recorded upload of these bytes for this account."""
        row = self.db.execute(
            "SELECT sha256, account, url, uploaded_at, expires_at FROM uploads"
            " WHERE sha256 = ? AND account = ?",
            (sha256, account),
        ).fetchone()
        return Upload(*row) if row else None

    def record_upload(self, upload: Upload) -> None:
        """Keep an upload (replacing an earlier one of the same bytes), committed durably:
        its URL is used by a createTask only after this returns."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO uploads (sha256, account, url, uploaded_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256, account) DO UPDATE SET"
                " url = excluded.url, uploaded_at = excluded.uploaded_at,"
                " expires_at = excluded.expires_at",
                (upload.sha256, upload.account, upload.url, upload.uploaded_at, upload.expires_at),
            )

    def forget_upload(self, sha256: str, account: str, *, uploaded_before: float) -> bool:
        """Drop a stored upload so the next use uploads again (a task could not fetch it),
        if it was made no later than `uploaded_before` (one made after the failed task
        was sent is already fresh). True when a row went."""
        with self.transaction() as db:
            return (
                db.execute(
                    "DELETE FROM uploads WHERE sha256 = ? AND account = ? AND uploaded_at <= ?",
                    (sha256, account, uploaded_before),
                ).rowcount
                > 0
            )

    def input_refreshes(self, job_id: str) -> int:
        """How often this job's uploads were refreshed after a task could not fetch its
        input: its `input_refresh` events, through their partial index (the literal
        `event = 'input_refresh'` is what lets SQLite use it; a bound value would not)."""
        (n,) = self.db.execute(
            f"SELECT COUNT(*) FROM events WHERE job_id = ? AND event = '{_REFRESH}'",
            (job_id,),
        ).fetchone()
        return int(n)
