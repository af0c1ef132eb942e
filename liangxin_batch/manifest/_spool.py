"""The jobs of one validated manifest, kept on disk so a run parses its manifest once.

Validation walks the whole manifest before anything is written (every problem is
reported, nothing is sent). The jobs it built go to an unnamed temporary file as one
JSON line each, and the state's sync reads them back from there: memory stays bounded
(a million jobs are a few hundred MB on disk, not in RAM) and the manifest, which may
be large and slow to convert, is read and checked exactly once.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import IO

from liangxin_batch.core._local_files import LocalFile
from liangxin_batch.core._records import Job, SourceRef
from liangxin_batch.manifest._local_inputs import FileStamp

__all__ = ["JobSpool"]

#: Written in pieces: one write per job would cost a system call each.
_FLUSH_AT = 1 << 20


def astuple_of(f: LocalFile) -> tuple[str, int, str, str, str]:
    """A LocalFile's fields in order (as `LocalFile(*fields)` takes them back)."""
    return (f.sha256, f.size, f.media_type, f.path, f.written)


class JobSpool:
    """Append jobs, then iterate them (as often as needed) in the order they came."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        self.count = 0
        #: Every manifest column name any job has (the output layout may refer to them).
        self.column_names: set[str] = set()
        #: The catalog ids the jobs use (what the manifest's fingerprint covers).
        self.models: set[str] = set()
        #: The local files the manifest's jobs read, by absolute path: their `file_stamp`
        #: as hashed (the loader sets it from the validation; the fingerprint keeps it).
        self.local_stats: dict[str, FileStamp] = {}

    def add(self, job: Job) -> None:
        src = job.source
        record: list[object] = [
            job.job_id,
            job.index,
            job.model,
            job.input,
            job.columns,
            job.content_hash,
            src.file,
            src.line,
            src.column,
        ]
        if job.local_files:  # only jobs with local inputs pay for the extra field
            record.append([list(astuple_of(f)) for f in job.local_files])
        line = self._encode(record)
        data = line.encode("utf-8") + b"\n"
        self._buffer.append(data)
        self._buffered += len(data)
        self.count += 1
        self.column_names.update(job.columns)
        self.models.add(job.model)
        if self._buffered >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        self._file.seek(0, 2)
        self._file.writelines(self._buffer)
        self._buffer.clear()
        self._buffered = 0

    def __iter__(self) -> Iterator[Job]:
        """The jobs from the top, in the order they came (one walk at a time)."""
        self._flush()
        self._file.seek(0)
        for raw in self._file:
            record = json.loads(raw)
            job_id, index, model, values, columns, digest, file, line, column = record[:9]
            yield Job(
                job_id=job_id,
                model=model,
                input=values,
                columns=columns,
                index=index,
                content_hash=digest,
                source=SourceRef(file, line, column),
                local_files=tuple(LocalFile(*f) for f in record[9]) if len(record) > 9 else (),
            )

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JobSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
