"""The state's record of where each job was written: manifest file and line.

A provenance sidecar (outputs/_sidecars.py) names the manifest file and row a job came
from. The sync writes them with the job rows (`upsert_jobs(..., sources=...)`, in the
same statement: no second pass over a million jobs); a file name is stored once, in
`manifest_sources`, and each job holds its small integer id (migration 012).
"""

from __future__ import annotations

from collections.abc import Iterable

from liangxin_batch.state._db import Connection
from liangxin_batch.state._tx import Transaction

__all__ = ["ProvenanceStore"]


class ProvenanceStore:
    """`StateStore`'s manifest sources (a mixin over its one connection)."""

    db: Connection

    def transaction(self, *, durable: bool = True) -> Transaction:  # pragma: no cover
        raise NotImplementedError  # StateStore's

    def source_ids(self, names: Iterable[str]) -> dict[str, int]:
        """The id of each manifest file name, added when new (the sync asks only for
        names it has not seen yet: a handful per manifest)."""
        out: dict[str, int] = {}
        wanted = sorted(set(names))
        if not wanted:
            return out
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO manifest_sources (name) VALUES (?)",
                [(n,) for n in wanted],
            )
            for name in wanted:
                row = db.execute("SELECT id FROM manifest_sources WHERE name = ?", (name,))
                out[name] = int(row.fetchone()[0])
        return out

    def job_source(self, job_id: str) -> tuple[str, int] | None:
        """(manifest file, line) that wrote the job; None when no sync recorded it (a
        job synced by a version before migration 012, until the next sync)."""
        row = self.db.execute(
            "SELECT s.name, j.source_line FROM jobs j"
            " JOIN manifest_sources s ON s.id = j.source_id WHERE j.job_id = ?",
            (job_id,),
        ).fetchone()
        return (row[0], int(row[1])) if row and row[1] is not None else None
