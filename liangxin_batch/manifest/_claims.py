"""Which ids a manifest has used, and where first: duplicates found in one pass.

Each id is kept as 8 bytes of hash (`IdTable`) with its place packed beside it (file
number << 40 | line), so a 1,000,000-row manifest checks its ids in bounded memory and
a duplicate still names where its first use was.
"""

from __future__ import annotations

from liangxin_batch.core._records import SourceRef
from liangxin_batch.manifest._guards import IdTable

__all__ = ["IdClaims"]

_LINE_BITS = 40


class IdClaims:
    __slots__ = ("_file_names", "_files", "ids")

    def __init__(self) -> None:
        #: The table itself, for claims a block at a time (`IdTable.claim_all`).
        self.ids = IdTable()
        self._files: dict[str, int] = {}
        self._file_names: list[str] = []

    def tag(self, file: str) -> int:
        """The high bits that say `file` in a packed place (OR the line into it)."""
        file_no = self._files.get(file)
        if file_no is None:
            file_no = self._files[file] = len(self._file_names)
            self._file_names.append(file)
        return file_no << _LINE_BITS

    def claim(self, job_id: str, src: SourceRef) -> str | None:
        """Record an id; where it was first used ("file:line") if it already was."""
        return self.claim_at(job_id, src.file, src.line)

    def claim_at(self, job_id: str, file: str, line: int) -> str | None:
        prev = self.ids.setdefault(hash(job_id.lower()), self.tag(file) | line)
        if prev is None:
            return None
        return f"{self._file_names[prev >> _LINE_BITS]}:{prev & ((1 << _LINE_BITS) - 1)}"
