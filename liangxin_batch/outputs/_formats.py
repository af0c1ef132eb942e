"""The export formats, apart from the code that writes them (the CLI lists them for
`--help` without importing pandas or pyarrow)."""

from __future__ import annotations

from typing import Literal

__all__ = ["EXPORT_FORMATS", "ExportFormat"]

ExportFormat = Literal["csv", "jsonl", "parquet", "xlsx"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "jsonl", "parquet", "xlsx")
