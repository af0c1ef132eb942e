"""Tabular manifest readers: CSV, TSV, JSONL, and (through pandas) Excel and Parquet.

Each reader streams `CellRow | RawJob | Problem`: cells stay text (stdlib `csv`, never pandas'
type guessing), lines are physical lines of the file (a row's *first* line when a quoted
cell spans several), and anything unreadable becomes a located `Problem`, never an
exception.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from liangxin_batch.core._records import Problem, RawJob, SourceRef, got_text, value_text
from liangxin_batch.errors import ConfigError

__all__ = [
    "BLOCK_ROWS",
    "NOTE_PREFIX",
    "RESERVED",
    "TABULAR_SUFFIXES",
    "CellRow",
    "CellRows",
    "TabularHeader",
    "decode_problem",
    "merge_input",
    "object_record",
    "parse_repeat",
    "read_csv",
    "read_csv_blocks",
    "read_frame",
    "read_jsonl",
    "read_tabular",
    "read_tabular_blocks",
]

#: Keys that are not model input fields. `prompt` is an ordinary field of every model.
RESERVED = frozenset({"id", "model", "input", "repeat"})
#: Columns starting with this are the user's own notes: kept for results.csv, never sent.
NOTE_PREFIX = "_"
MAX_REPEAT = 100_000

_UTF8_HINT = "save the file as UTF-8 (in Excel: 'CSV UTF-8')"


def parse_repeat(value: Any, source: SourceRef) -> tuple[int, Problem | None]:
    """`repeat` as a count of copies: 1..MAX_REPEAT."""
    expected = f"a whole number of copies from 1 to {MAX_REPEAT:,}"
    if isinstance(value, bool):
        return 1, Problem(source, "repeat", expected, got_text(value))
    if isinstance(value, int):
        n = value
    else:
        try:
            n = int(str(value).strip())
        except ValueError:
            return 1, Problem(source, "repeat", expected, got_text(value))
    if not 1 <= n <= MAX_REPEAT:
        return 1, Problem(source, "repeat", expected, got_text(value))
    return n, None


def decode_problem(path: Path, display: str, err: UnicodeDecodeError) -> Problem:
    """A located problem for a file that is not UTF-8: find the first bad line in bytes."""
    line = 1
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
            fh.seek(0)
            if head.startswith((b"\xff\xfe", b"\xfe\xff")):
                return Problem(SourceRef(display, 1), None, "UTF-8 text", "UTF-16 text", _UTF8_HINT)
            for number, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = number
                    break
    except OSError:
        pass
    return Problem(
        SourceRef(display, line),
        None,
        "UTF-8 text",
        f"bytes that are not UTF-8 ({err.reason})",
        _UTF8_HINT,
    )


def _csv_error(source: SourceRef, err: csv.Error) -> Problem:
    text = str(err)
    if "end of data" in text:
        return Problem(
            source,
            None,
            'a closing " for the quoted cell that starts on this row',
            "the end of the file",
            'close the quote; write "" for a quote inside a quoted cell',
        )
    if "expected after" in text:
        return Problem(
            source,
            None,
            'a delimiter right after a closing "',
            text,
            'quote the whole cell and write "" for a quote inside it',
        )
    if "field larger" in text:
        # Prompts are at most 20,000 characters: a cell past csv's limit (128 KiB) means an
        # unclosed quote swallowed the rows after it, and csv stops instead of growing.
        return Problem(
            source,
            None,
            f"cells under {csv.field_size_limit():,} characters",
            "a longer cell",
            'a quote is probably not closed: check the " in this row',
        )
    return Problem(source, None, "a well-formed CSV row", text)


class TabularHeader:
    """Maps a header row to reserved, note and field columns; turns rows into RawJobs."""

    __slots__ = ("file", "input_col", "names", "present", "problems", "repeat_col", "value_cols")

    def __init__(self, cells: Sequence[str], file: str, line: int) -> None:
        self.file = file
        self.names: list[str] = []
        self.value_cols: list[tuple[int, str]] = []
        self.input_col: int | None = None
        self.repeat_col: int | None = None
        self.problems: list[Problem] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(cells):
            name = raw.strip() or f"(column {i + 1})"  # a nameless column: reported if used
            self.names.append(name)
            if name in seen:
                self.problems.append(
                    Problem(
                        SourceRef(file, line, name),
                        name,
                        "each column name once",
                        f"a second {name!r} (column {i + 1}; the first is column {seen[name] + 1})",
                        "rename or remove one of them; only the first is read",
                    )
                )
                continue
            seen[name] = i
            if name.startswith(NOTE_PREFIX):
                continue
            if name == "input":
                self.input_col = i
            elif name == "repeat":
                self.repeat_col = i
            else:
                self.value_cols.append((i, name))
        self.present = frozenset(seen)

    def row(self, cells: Sequence[str], line: int) -> RawJob:
        source = SourceRef(self.file, line)
        n = len(cells)
        values: dict[str, Any] = {}
        for i, name in self.value_cols:
            if i < n:
                cell = cells[i]
                if cell and not cell.isspace():  # an empty cell means "not given"
                    values[name] = cell
        rec = RawJob(
            source,
            values,
            dict(zip(self.names, cells, strict=False)),
            header=self.present,
            keyed=True,
        )
        if n > len(self.names):
            for i in range(len(self.names), n):
                if cells[i] and not cells[i].isspace():
                    values[f"(column {i + 1})"] = cells[i]
        if self.repeat_col is not None and self.repeat_col < n and cells[self.repeat_col].strip():
            rec.repeat, bad = parse_repeat(
                cells[self.repeat_col], SourceRef(self.file, line, "repeat")
            )
            if bad is not None:
                rec.problems = [bad]
        if self.input_col is not None and self.input_col < n and cells[self.input_col].strip():
            merge_input(rec, cells[self.input_col], source)
        return rec


class CellRow(NamedTuple):
    """A tabular row as cells: the builder checks the common row from these directly
    (`_fast`) and turns only the others into a `RawJob` (`raw`)."""

    header: TabularHeader
    cells: list[str]
    line: int

    def raw(self) -> RawJob:
        return self.header.row(self.cells, self.line)


class CellRows(NamedTuple):
    """Consecutive rows of one header as read, for validate to check a block at a time
    (`read_csv_blocks`): one object per block instead of one `CellRow` per row."""

    header: TabularHeader
    cells: list[list[str]]
    lines: list[int]

    def each(self) -> Iterator[CellRow]:
        header = self.header
        for cells, line in zip(self.cells, self.lines, strict=True):
            yield CellRow(header, cells, line)


def merge_input(rec: RawJob, cell: Any, source: SourceRef) -> None:
    """Merge an `input` cell (a JSON object, or an object already) into the record's values."""
    data = cell
    if isinstance(cell, str):
        try:
            data = json.loads(cell)
        except (json.JSONDecodeError, RecursionError) as err:
            data = err
    if not isinstance(data, dict):
        why = f" (invalid JSON: {data.msg})" if isinstance(data, json.JSONDecodeError) else ""
        rec.problems = [
            *(rec.problems or ()),
            Problem(
                SourceRef(source.file, source.line, "input"),
                "input",
                'a JSON object of input fields, e.g. {"seed": 42}',
                got_text(cell) + why,
            ),
        ]
        return
    for key, value in data.items():
        key = str(key)
        if key in rec.values or key in RESERVED:
            rec.problems = [
                *(rec.problems or ()),
                Problem(
                    SourceRef(source.file, source.line, "input"),
                    f"input.{key}",
                    "each field given once"
                    if key in rec.values
                    else "only model input fields inside input",
                    f"{key!r} inside input"
                    + (" and as its own column" if key in rec.values else ""),
                    "keep one of them"
                    if key in rec.values
                    else f"give {key} as its own column or key",
                ),
            ]
            continue
        if value is not None:
            rec.values[key] = value


#: Separators a .csv may use: Excel writes ';' where the decimal mark is a comma.
_CSV_DELIMITERS = (",", ";", "\t")


def sniff_delimiter(first_line: str) -> str:
    """The separator that splits the header line into the most columns (',' on a tie)."""
    best, most = ",", 0
    for candidate in _CSV_DELIMITERS:
        try:
            cells = next(csv.reader([first_line], delimiter=candidate), [])
        except csv.Error:
            continue
        if len(cells) > most:
            best, most = candidate, len(cells)
    return best


def read_csv(
    path: Path, display: str, *, delimiter: str | None = None
) -> Iterator[CellRow | Problem]:
    """Rows of a CSV/TSV file with a header row; UTF-8 with or without BOM. Without a
    `delimiter`, the header line decides between ',', ';' and a tab."""
    for item in read_csv_blocks(path, display, delimiter=delimiter):
        if isinstance(item, CellRows):
            yield from item.each()
        else:
            yield item


#: Rows per block of `read_csv_blocks`: validate counts this many at a time.
BLOCK_ROWS = 1024


def read_csv_blocks(
    path: Path, display: str, *, delimiter: str | None = None
) -> Iterator[CellRows | Problem]:
    """`read_csv`'s rows in blocks of up to BLOCK_ROWS, its problems in their place."""
    header: TabularHeader | None = None
    try:
        # newline="" lets the csv module see the line ends inside quoted (multi-line) cells.
        with path.open(encoding="utf-8-sig", newline="") as fh:
            if delimiter is None:
                delimiter = sniff_delimiter(fh.readline(65_536))
                fh.seek(0)
            reader = csv.reader(fh, delimiter=delimiter, strict=True)
            before = 0  # physical lines consumed by the rows taken so far
            while True:
                # A block's rows are taken with no work per row (a million rows cost a
                # second in the loop alone); lines and blank rows are worked out after.
                rows: list[list[str]] = []
                error: csv.Error | UnicodeDecodeError | None = None
                try:
                    for cells in islice(reader, BLOCK_ROWS):
                        rows.append(cells)
                except (csv.Error, UnicodeDecodeError) as err:
                    error = err  # the rows before it come first
                starts, last = _row_lines(rows, before, None if error else reader.line_num)
                for item in _kept(rows, starts, header, display):
                    if isinstance(item, TabularHeader):
                        header = item
                        yield from header.problems
                    else:
                        yield item
                if isinstance(error, UnicodeDecodeError):
                    yield decode_problem(path, display, error)
                    break
                if error is not None:  # its row starts on the line after the last good one
                    yield _csv_error(SourceRef(display, last + 1), error)
                    if "end of data" in str(error):
                        break
                elif len(rows) < BLOCK_ROWS:
                    break
                before = reader.line_num
    except UnicodeDecodeError as err:
        yield decode_problem(path, display, err)
    except OSError as err:
        raise ConfigError(f"cannot read {display}: {err.strerror or err}") from None


def _row_lines(rows: list[list[str]], before: int, end: int | None) -> tuple[list[int], int]:
    """The line each row starts on, after `before` lines, and the line the last ends on;
    `end`: that line as the reader says (None: not known, a row failed after them)."""
    if end is not None and end - before == len(rows):  # no line break inside a cell
        return list(range(before + 1, end + 1)), end
    starts = []
    for cells in rows:
        starts.append(before + 1)
        # The file's lines end at \n, \r or \r\n (newline=""); a quoted cell keeps them.
        # Cell by cell: a \r ending one cell and a \n starting the next are two breaks.
        for text in cells:
            if "\n" in text or "\r" in text:
                before += text.count("\n") + text.count("\r") - text.count("\r\n")
        before += 1
    return starts, before


def _kept(
    rows: list[list[str]], starts: list[int], header: TabularHeader | None, display: str
) -> Iterator[CellRows | TabularHeader]:
    """The rows that are not blank, as a block; the first of the file is its header."""
    firsts = [cells[0] if cells else "" for cells in rows]
    if "" in firsts or any(map(str.isspace, firsts)):  # some row may be blank: look at each
        keep = [i for i, cells in enumerate(rows) if not _blank(cells)]
        rows = [rows[i] for i in keep]
        starts = [starts[i] for i in keep]
    if header is None and rows:
        header = TabularHeader(rows[0], display, starts[0])
        yield header
        rows, starts = rows[1:], starts[1:]
    if rows and header is not None:
        yield CellRows(header, rows, starts)


def _blank(cells: list[str]) -> bool:
    """Blank lines and rows of empty cells are not jobs."""
    joined = "".join(cells)
    return not joined or joined.isspace()


def read_jsonl(path: Path, display: str) -> Iterator[RawJob | Problem]:
    """One JSON object per line (blank lines are skipped)."""
    try:
        with path.open(encoding="utf-8-sig") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                source = SourceRef(display, line_no)
                try:
                    data = json.loads(line)
                except RecursionError:
                    yield Problem(
                        source, None, "JSON nested at most a few hundred levels", "deeper nesting"
                    )
                    continue
                except json.JSONDecodeError as err:
                    yield Problem(
                        source,
                        None,
                        "a JSON object on this line",
                        f"invalid JSON ({err.msg} at column {err.colno})",
                        "one job per line; a job cannot span lines in JSONL",
                    )
                    continue
                if not isinstance(data, dict):
                    yield Problem(source, None, "a JSON object on this line", got_text(data))
                    continue
                try:
                    rec = object_record(data, source)
                except RecursionError:
                    yield Problem(
                        source, None, "JSON nested at most a few hundred levels", "deeper nesting"
                    )
                    continue
                yield rec
    except UnicodeDecodeError as err:
        yield decode_problem(path, display, err)
    except OSError as err:
        raise ConfigError(f"cannot read {display}: {err.strerror or err}") from None


def object_record(data: dict[Any, Any], source: SourceRef) -> RawJob:
    """A job given as a JSON object: same keys as a CSV row, typed values."""
    values: dict[str, Any] = {}
    columns: dict[str, str] = {}
    rec = RawJob(source, values, columns, keyed=True)
    for raw_key, value in data.items():
        key = str(raw_key)
        columns[key] = value_text(value)
        if key.startswith(NOTE_PREFIX) or value is None or key in ("input", "repeat"):
            continue
        values[key] = value
    if data.get("repeat") is not None:
        rec.repeat, bad = parse_repeat(
            data["repeat"], SourceRef(source.file, source.line, "repeat")
        )
        if bad is not None:
            rec.problems = [bad]
    if data.get("input") is not None:
        merge_input(rec, data["input"], source)
    return rec


#: Formats with one job per row or line, by lower-case suffix.
TABULAR_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".xlsx", ".parquet", ".pq")
#: The CSV suffixes and their delimiter (None: the header line decides).
_CSV_SUFFIXES: dict[str, str | None] = {".csv": None, ".tsv": "\t", ".tab": "\t"}


def read_tabular(path: Path, display: str) -> Iterator[CellRow | RawJob | Problem]:
    """Dispatch on the suffix (one of TABULAR_SUFFIXES)."""
    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        return read_csv(path, display, delimiter=_CSV_SUFFIXES[suffix])
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path, display)
    if suffix == ".xlsx":
        return read_frame(path, display, "xlsx")
    return read_frame(path, display, "parquet")


def read_tabular_blocks(
    path: Path, display: str
) -> Iterator[CellRows | CellRow | RawJob | Problem]:
    """`read_tabular`, with the rows of CSV and TSV in blocks (validate)."""
    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        return read_csv_blocks(path, display, delimiter=_CSV_SUFFIXES[suffix])
    return read_tabular(path, display)


def read_frame(path: Path, display: str, kind: str) -> Iterator[CellRow | Problem]:
    """Excel (.xlsx) or Parquet through pandas, every value read as text."""
    try:
        import pandas as pd

        if kind == "xlsx":
            frame = pd.read_excel(path, dtype=str, keep_default_na=False, header=0)
        else:
            frame = pd.read_parquet(path)
    except ImportError as err:
        extra = "xlsx" if kind == "xlsx" else "parquet"
        raise ConfigError(
            f"reading {display} needs an optional dependency ({err}); "
            f"install it with: pip install 'liangxin-batch[{extra}]'"
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read {display}: {err.strerror or err}") from None
    except Exception as err:  # any parser failure is a problem with the file, not a crash
        yield Problem(SourceRef(display, 1), None, f"a readable .{kind} file", got_text(str(err)))
        return
    header = TabularHeader([str(c) for c in frame.columns], display, 1)
    yield from header.problems
    # Excel rows are numbered from 1 with the header in row 1; Parquet has "rows" from 1.
    offset = 2 if kind == "xlsx" else 1
    for i, row in enumerate(frame.itertuples(index=False, name=None)):
        cells = [_cell(v) for v in row]
        if all(not c.strip() for c in cells):
            continue
        yield CellRow(header, cells, i + offset)


def _cell(value: Any) -> str:
    """A Parquet/Excel value as cell text: missing -> "", lists -> JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) or getattr(value, "ndim", 0) > 0:
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return json.dumps(items, ensure_ascii=False)
    try:
        if value != value:  # NaN, NaT
            return ""
    except (TypeError, ValueError):  # pandas.NA refuses comparison
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
