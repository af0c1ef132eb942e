"""The results table's writers: csv, jsonl, parquet and xlsx, from chunks of rows.

A row is a list of cells in the header's order: text for csv and xlsx, typed for jsonl
and parquet (`_columns.typed_cells`: a timestamp as epoch seconds, None for nothing, and
the column types given beside the header). parquet takes the same typed cells as chunks
of columns instead (`_columns.typed_columns`). Every writer writes `tmp` (the caller
replaces the target with it) and returns the number of rows.
"""

from __future__ import annotations

import csv
import importlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from liangxin_batch.errors import ConfigError
from liangxin_batch.outputs._columns import ColumnType, iso_precise

__all__ = [
    "Chunks",
    "ColumnChunks",
    "TypedChunks",
    "defuse",
    "defused",
    "nanoseconds",
    "parquet_schema",
    "write_csv",
    "write_jsonl",
    "write_parquet",
    "write_xlsx",
]

_XLSX_MAX_ROWS = 1_048_575  # one row of the sheet is the header

#: What makes a spreadsheet read a cell as a formula (OWASP: CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: Chunks of rows (a few thousand each).
Chunks = Iterable[list[list[str]]]
#: Chunks of typed rows.
TypedChunks = Iterable[list[list[Any]]]
#: Chunks of typed columns (`_columns.typed_columns`: each column of the header, in order).
ColumnChunks = Iterable[list[Sequence[Any]]]


def defused(chunks: Chunks) -> Iterator[list[list[str]]]:
    for chunk in chunks:
        yield [[defuse(v) for v in row] for row in chunk]


def defuse(value: str) -> str:
    if not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)  # -2.5 is a number, not a formula: keep it a number
        return value
    except ValueError:
        return "'" + value


def write_csv(tmp: Path, header: list[str], chunks: Chunks) -> int:
    # The stdlib writer, in pandas' dialect (minimal quoting, "\n" line ends): the file
    # is written at the end of every run, and importing pandas for it cost more than
    # writing it.
    count = 0
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for chunk in chunks:
            writer.writerows(chunk)
            count += len(chunk)
    return count


def write_jsonl(tmp: Path, header: list[str], types: list[ColumnType], chunks: TypedChunks) -> int:
    """Numbers as JSON numbers, nothing as null, timestamps as ISO-8601 text (UTC)."""
    # json.dumps(ensure_ascii=False) makes this encoder anew for every call.
    encode = json.JSONEncoder(ensure_ascii=False).encode
    stamps = [i for i, kind in enumerate(types) if kind == "timestamp"]
    count = 0
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for chunk in chunks:
            for row in chunk:  # the rows are the walk's own: changed in place
                for i in stamps:
                    if row[i] is not None:
                        row[i] = iso_precise(row[i])
            fh.writelines([encode(dict(zip(header, row, strict=True))) + "\n" for row in chunk])
            count += len(chunk)
    return count


def parquet_schema(pa: Any, header: list[str], types: list[ColumnType]) -> Any:
    """int64, float64, timestamp[ns, UTC] and string columns, every one nullable."""
    kinds = {
        "string": pa.string(),
        "integer": pa.int64(),
        "float": pa.float64(),
        "timestamp": pa.timestamp("ns", tz="UTC"),
    }
    return pa.schema([(name, kinds[kind]) for name, kind in zip(header, types, strict=True)])


def nanoseconds(column: Iterable[float | None]) -> list[int | None]:
    """Epoch seconds as whole nanoseconds (via microseconds: a float holds no more)."""
    return [None if at is None else round(at * 1_000_000) * 1000 for at in column]


def _stamps(pa: Any, compute: Any, column: Iterable[float | None], kind: Any) -> Any:
    """`nanoseconds` in Arrow: seconds * 10**6 rounded half to even (as `round`), then
    * 1000 as int64, as `kind` (a timestamp type)."""
    seconds = pa.array(column, pa.float64())
    micros = compute.round(compute.multiply(seconds, 1_000_000.0), round_mode="half_to_even")
    nanos = compute.multiply_checked(micros.cast(pa.int64()), 1000)
    return nanos.cast(kind)


def write_parquet(
    pa: Any, tmp: Path, header: list[str], types: list[ColumnType], chunks: ColumnChunks
) -> int:
    """A row group per chunk of columns."""
    parquet = importlib.import_module("pyarrow.parquet")
    compute = importlib.import_module("pyarrow.compute")
    schema = parquet_schema(pa, header, types)
    fields = list(schema)
    stamps = {i for i, kind in enumerate(types) if kind == "timestamp"}
    count = 0
    with parquet.ParquetWriter(str(tmp), schema) as writer:
        for chunk in chunks:
            # Column by column straight to Arrow: a pandas frame of the rows on the way
            # cost as much as building them.
            columns = [
                _stamps(pa, compute, column, fields[i].type)
                if i in stamps
                else pa.array(column, fields[i].type)
                for i, column in enumerate(chunk)
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            count += len(columns[0]) if columns else 0
        if count == 0:
            writer.write_table(schema.empty_table())
    return count


def write_xlsx(openpyxl: Any, tmp: Path, header: list[str], chunks: Chunks) -> int:
    cell_module = importlib.import_module("openpyxl.cell.cell")
    cell_type, illegal = cell_module.WriteOnlyCell, cell_module.ILLEGAL_CHARACTERS_RE
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("results")
    sheet.append(header)
    count = 0
    for chunk in chunks:
        count += len(chunk)
        if count > _XLSX_MAX_ROWS:
            raise ConfigError(
                f"more than {_XLSX_MAX_ROWS:,} rows do not fit an Excel sheet; "
                "export csv or parquet, or filter with --status/--model"
            )
        for row in chunk:
            cells = []
            for value in row:
                # Control characters are not allowed in the XML inside an xlsx.
                cell = cell_type(sheet, value=illegal.sub("", value))
                cell.data_type = "s"  # text, always: a prompt "=1+1" is not a formula
                cells.append(cell)
            sheet.append(cells)
    book.save(str(tmp))
    return count
