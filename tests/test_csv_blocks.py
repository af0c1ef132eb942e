"""The CSV reader takes rows a block at a time (`read_csv_blocks`) and works out their
lines after; it must give exactly what reading row by row gave: the same rows with the
same first lines, blank rows skipped, and the same problems where the old reader put
them, across block boundaries, quoted line breaks and malformed rows."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liangxin_batch.core._records import Problem, SourceRef
from liangxin_batch.manifest import _read
from liangxin_batch.manifest._read import (
    CellRow,
    TabularHeader,
    _csv_error,
    decode_problem,
    read_csv,
    sniff_delimiter,
)


def _row_by_row(path: Path, display: str) -> Iterator[CellRow | Problem]:
    """The reader as it was: one row at a time, its line from `line_num` as it goes."""
    header: TabularHeader | None = None
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            delimiter = sniff_delimiter(fh.readline(65_536))
            fh.seek(0)
            reader = csv.reader(fh, delimiter=delimiter, strict=True)
            end = 0
            while True:
                try:
                    for cells in reader:
                        start = end + 1
                        end = reader.line_num
                        joined = "".join(cells)
                        if not joined or joined.isspace():
                            continue
                        if header is None:
                            header = TabularHeader(cells, display, start)
                            yield from header.problems
                            continue
                        yield CellRow(header, cells, start)
                    break
                except csv.Error as err:
                    start = end + 1
                    end = reader.line_num
                    yield _csv_error(SourceRef(display, start), err)
                    if "end of data" in str(err):
                        break
    except UnicodeDecodeError as err:
        yield decode_problem(path, display, err)


def _plain(items: Iterator[CellRow | Problem]) -> list[Any]:
    return [
        (item.header.names, item.cells, item.line) if isinstance(item, CellRow) else item
        for item in items
    ]


_CELL = st.text(alphabet=["a", " ", ",", '"', "\n", "\r", "\t", "é"], max_size=6)
_ENDS = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    lines = ["id,prompt,x"]
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["row", "row", "row", "quoted", "blank", "spaces", "raw"]))
        if kind == "row":
            lines.append(",".join(draw(st.lists(st.sampled_from(["a", "b c", ""]), max_size=4))))
        elif kind == "quoted":  # a cell with line breaks and quotes inside, well formed
            cell = draw(_CELL).replace('"', '""')
            lines.append(f'k,"{cell}",z')
        elif kind == "blank":
            lines.append("")
        elif kind == "spaces":
            lines.append(" , ")
        else:  # anything: stray quotes make malformed rows, or an unclosed one at the end
            lines.append(draw(_CELL))
    text = ""
    for line in lines:
        text += line + draw(_ENDS)
    return text if draw(st.booleans()) else text.rstrip("\r\n")


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=csv_texts(), block=st.sampled_from([1, 2, 3, 1024]))
def test_blocks_give_the_rows_lines_and_problems_of_reading_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, block: int
) -> None:
    monkeypatch.setattr(_read, "BLOCK_ROWS", block)
    path = tmp_path / "m.csv"
    path.write_bytes(text.encode("utf-8"))
    assert _plain(read_csv(path, "m.csv")) == _plain(_row_by_row(path, "m.csv"))


def test_rows_before_bytes_that_are_not_utf8_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_read, "BLOCK_ROWS", 1024)
    path = tmp_path / "m.csv"
    good = "".join(f"r{i},prompt {i}\n" for i in range(3000))
    path.write_bytes(b"id,prompt\n" + good.encode() + b"bad,\xff\xfe\n" + b"r,after\n")
    got = _plain(read_csv(path, "m.csv"))
    assert got == _plain(_row_by_row(path, "m.csv"))
    assert isinstance(got[-1], Problem) and len(got) > 1


@pytest.mark.parametrize("block", [1, 1024])
def test_a_cr_ending_one_cell_and_a_lf_starting_the_next_are_two_line_breaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    # `"p\r","\nq"`: the file breaks a line after p and again after the comma; joined
    # without the delimiter the cells read as one \r\n.
    monkeypatch.setattr(_read, "BLOCK_ROWS", block)
    path = tmp_path / "m.csv"
    path.write_bytes(b'id,prompt,note\n1,"p\r","\nq"\n2,second,x\n')
    got = _plain(read_csv(path, "m.csv"))
    assert got == _plain(_row_by_row(path, "m.csv"))
    assert [line for *_, line in got] == [2, 5]
