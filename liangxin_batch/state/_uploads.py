"""The store's uploads of local input files: the `uploads` and `local_files` tables
(migration 009). `StateStore` inherits these.

An upload is recorded, durably, before its URL is put in any createTask: a kill after
the upload and before its record costs one upload again (the name is deterministic, so
it overwrites itself), never a task sent with a URL nobody knows about. Rows are keyed
by the bytes' sha256 and an account fingerprint (core `account_fingerprint`, one-way:
the key itself is never stored).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from liangxin_batch.core._local_files import TOKEN_PREFIX
from liangxin_batch.core._states import Event, JobState
from liangxin_batch.core._uploads import Upload

if TYPE_CHECKING:
    from liangxin_batch.state._tx import Transaction

__all__ = ["UploadStore"]

_REFRESH = Event.INPUT_REFRESH.value


class UploadStore:
    """Uploads and local files: read and written on the store's one connection."""

    db: sqlite3.Connection

    if TYPE_CHECKING:

        def transaction(self, *, durable: bool = True) -> Transaction: ...

    # -- local files (written by the manifest's sync: state/_local_files.py) ----------

    def has_local_files(self) -> bool:
        """Whether any job ever named a local file (one index probe: a batch without any
        pays nothing more)."""
        return self.db.execute("SELECT 1 FROM local_files LIMIT 1").fetchone() is not None

    def local_inputs_to_send(self, states: Sequence[JobState]) -> int:
        """Jobs of the manifest in `states` whose input holds a file token, counted (a
        walk of those jobs: asked only when the batch has local files at all)."""
        if not states or not self.has_local_files():
            return 0
        (n,) = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE in_manifest = 1"
            f" AND state IN ({','.join('?' * len(states))}) AND instr(input_json, ?) > 0",
            [*(s.value for s in states), TOKEN_PREFIX],
        ).fetchone()
        return int(n)

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
                "INSERT OR REPLACE INTO uploads (sha256, account, url, uploaded_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (upload.sha256, upload.account, upload.url, upload.uploaded_at, upload.expires_at),
            )

    def forget_upload(
        self, sha256: str, account: str, *, uploaded_before: float | None = None
    ) -> bool:
        """Drop a stored upload so the next use uploads again (a task could not fetch it).
        `uploaded_before`: only an upload made no later (one made after the failed task
        was sent is already fresh). True when a row went."""
        sql = "DELETE FROM uploads WHERE sha256 = ? AND account = ?"
        params: list[object] = [sha256, account]
        if uploaded_before is not None:
            sql += " AND uploaded_at <= ?"
            params.append(uploaded_before)
        with self.transaction() as db:
            return db.execute(sql, params).rowcount > 0

    def input_refreshes(self, job_id: str) -> int:
        """How often this job's uploads were refreshed after a task could not fetch its
        input: its `input_refresh` events, through their partial index (the literal
        `event = 'input_refresh'` is what lets SQLite use it; a bound value would not)."""
        (n,) = self.db.execute(
            f"SELECT COUNT(*) FROM events WHERE job_id = ? AND event = '{_REFRESH}'",
            (job_id,),
        ).fetchone()
        return int(n)
