"""The export formats, apart from the code that writes them (the CLI lists them for
`--help` without importing pandas or pyarrow).

Table formats write one file of one row per manifest job (`_report.export`); dataset
formats write a folder of one row per output image of the succeeded jobs, with the
images (`_datasets.export_dataset`)."""

from __future__ import annotations

from typing import Literal

__all__ = ["DATASET_FORMATS", "EXPORT_FORMATS", "TABLE_FORMATS", "ExportFormat"]

ExportFormat = Literal["csv", "jsonl", "parquet", "xlsx", "hf", "webdataset"]
TABLE_FORMATS: tuple[ExportFormat, ...] = ("csv", "jsonl", "parquet", "xlsx")
DATASET_FORMATS: tuple[ExportFormat, ...] = ("hf", "webdataset")
EXPORT_FORMATS: tuple[ExportFormat, ...] = TABLE_FORMATS + DATASET_FORMATS
