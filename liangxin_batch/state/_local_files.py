"""The state's record of local input files: which bytes a file token names, and where.

A job's input holds a file token (`file:sha256:<hex>`) where its manifest gave a local
path (core/_local_files.py). The sync writes each distinct file here, keyed by its
sha256, with the path the manifest last gave for those bytes; whoever uploads before a
createTask asks here what a token names (`local_file`, `local_files_of`). A moved or
renamed file is the same job (same bytes): its row's path simply follows the manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from liangxin_batch.core._local_files import TOKEN_PREFIX, LocalFile, distinct_tokens
from liangxin_batch.core._states import JobState
from liangxin_batch.state._db import Connection
from liangxin_batch.state._tx import Transaction

__all__ = ["LocalFileStore"]

_COLUMNS = "sha256, size, media_type, path, written"
_CHUNK = 500  # sha256s per IN (...) query: well under SQLite's variable limit


class LocalFileStore:
    """`StateStore`'s local-file rows (a mixin over its one connection)."""

    db: Connection

    def transaction(self, *, durable: bool = True) -> Transaction:  # pragma: no cover
        raise NotImplementedError  # StateStore's

    def record_local_files(self, files: Iterable[LocalFile]) -> None:
        """Insert each file, or bring a known one's path up to date (the bytes decide
        the row: size and media type cannot differ for one sha256)."""
        rows = [(f.sha256, f.path, f.written, f.size, f.media_type) for f in files]
        if not rows:
            return
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO local_files (sha256, path, written, size, media_type)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(sha256) DO UPDATE SET path = excluded.path,"
                " written = excluded.written",
                rows,
            )

    def local_file(self, sha256: str) -> LocalFile | None:
        """The file a token's sha256 names, as the last sync found it; None if unknown."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM local_files WHERE sha256 = ?", (sha256,)
        ).fetchone()
        return LocalFile(*row) if row else None

    def local_files_of(self, job_input: Mapping[str, Any]) -> list[LocalFile]:
        """The distinct files a job's input names by file token, in the order it names
        them. A token no sync recorded is left out (the caller compares counts)."""
        wanted = distinct_tokens(job_input)
        found: dict[str, LocalFile] = {}
        for at in range(0, len(wanted), _CHUNK):
            part = wanted[at : at + _CHUNK]
            marks = ",".join("?" * len(part))
            for row in self.db.execute(
                f"SELECT {_COLUMNS} FROM local_files WHERE sha256 IN ({marks})", part
            ):
                found[row[0]] = LocalFile(*row)
        return [found[sha] for sha in wanted if sha in found]

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

    def local_file_count(self) -> int:
        """How many distinct local files the state knows."""
        return int(self.db.execute("SELECT COUNT(*) FROM local_files").fetchone()[0])
