"""The state's record of output previews (report thumbnails): which files still need
one, and each one made.

`files.thumb` is a file's preview relative to DIR ('' none can be made, NULL not tried
yet; migration 010). The downloader records it with the file when it can; the rest are
made by `outputs._thumbs.ensure_previews`, which pages through `files_without_preview`
(a partial index of the NULL ones, migration 011: nothing to walk in a finished folder)
and records each page with `set_previews` in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from liangxin_batch.state._db import Connection
from liangxin_batch.state._tx import Transaction

__all__ = ["PreviewStore", "PreviewTodo", "PreviewUpdate"]


class PreviewTodo(NamedTuple):
    """A current output file of a done job whose preview is not made yet."""

    job_id: str
    n: int
    path: str  # relative to DIR


class PreviewUpdate(NamedTuple):
    """A made preview: `thumb` relative to DIR ('' none can be made), the pixels."""

    job_id: str
    n: int
    thumb: str
    width: int | None
    height: int | None


class PreviewStore:
    """`StateStore`'s preview rows (a mixin over its one connection)."""

    db: Connection

    def transaction(self, *, durable: bool = True) -> Transaction:  # pragma: no cover
        raise NotImplementedError  # StateStore's

    def files_without_preview(
        self, after: tuple[str, int] = ("", -1), limit: int = 256
    ) -> list[PreviewTodo]:
        """The next `limit` files after (job_id, n) that have no preview yet, of the
        manifest's done jobs (a keyset page over `files_preview_todo`)."""
        rows = self.db.execute(
            "SELECT f.job_id, f.n, f.path"
            " FROM files f INDEXED BY files_preview_todo"
            " CROSS JOIN jobs j ON j.job_id = f.job_id"
            " WHERE f.thumb IS NULL AND (f.job_id, f.n) > (?, ?) AND f.path IS NOT NULL"
            " AND j.state = 'done' AND j.in_manifest = 1"
            " ORDER BY f.job_id, f.n LIMIT ?",
            (*after, limit),
        ).fetchall()
        return [PreviewTodo(*r) for r in rows]

    def set_previews(self, made: Iterable[PreviewUpdate]) -> None:
        """Record made previews (as `set_preview`, many in one transaction)."""
        rows = [(u.thumb, u.width, u.height, u.job_id, u.n) for u in made]
        if not rows:
            return
        with self.transaction(durable=False) as db:  # lost: the next report makes them again
            db.executemany(
                "UPDATE files SET thumb = ?, width = coalesce(?, width),"
                " height = coalesce(?, height) WHERE job_id = ? AND n = ?",
                rows,
            )

    def forget_made_previews(self, prefix: str) -> int:
        """Forget every preview made under `prefix` (its folder is gone): the next
        `ensure_previews` makes them again. How many were forgotten."""
        with self.transaction(durable=False) as db:
            cur = db.execute(
                "UPDATE files SET thumb = NULL WHERE thumb >= ? AND thumb < ?",
                (prefix, _after_prefix(prefix)),
            )
            return cur.rowcount


def _after_prefix(prefix: str) -> str:
    """The least string greater than every string that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
