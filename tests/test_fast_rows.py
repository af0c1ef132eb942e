"""The fast path for tabular rows (`manifest/_fast.py`) gives exactly what the general path
gives: the same jobs (ids, inputs, columns, hashes, order) and the same problems, for rows
good and bad; and `validate` counts the same jobs and credits with it as without it."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._records import Job, Problem
from liangxin_batch.manifest._build import JobBuilder
from liangxin_batch.manifest._manifest import JobTally, validate_manifest
from liangxin_batch.manifest._read import CellRow, read_csv

CATALOG = default_catalog()

HEADERS = [
    ["id", "model", "prompt", "aspect_ratio", "_note"],
    ["model", "prompt", "aspect_ratio", "nsfw_checker"],
    ["id", "prompt", "negative_prompt", "aspect_ratio", "num_images", "seed"],
    ["id", "model", "prompt", "multi_shots", "duration", "sound", "mode"],
    ["id", "model", "prompt", "aspect_ratio", "image_urls"],
    ["id", "model", "prompt", "aspect_ratio", "repeat"],
    ["id", "model", "prompt", "prompt"],
]
CELLS: dict[str, list[str]] = {
    "id": ["a1", "A1", "b-2", " c3 ", "", "bad id", ".x", "a1"],
    "model": [
        "z-image",
        " z-image ",
        "google/imagen4-fast",
        "kling-3.0/video",
        "nano-banana-pro",
        "z-imag",
        "",
    ],
    "prompt": ["a cat", " a dog ", "", "  ", "x" * 25_000, "bell\x07", "tab\there", "a cat"],
    "negative_prompt": ["", "blurry", "no\x00"],
    "aspect_ratio": ["1:1", "16:9", "16-9", "", "9:16", " 1:1"],
    "nsfw_checker": ["true", "no", "1", "maybe", "", "TRUE"],
    "num_images": ["1", "2", "9", "", "1.0"],
    "seed": ["5", "5.0", "-1", "x", "", "99999999999999999999"],
    "multi_shots": ["true", "false", "", "yes"],
    "duration": ["5", "10", "7", ""],
    "sound": ["true", "false", ""],
    "mode": ["std", "pro", "max", ""],
    "image_urls": ["", "https://e.x/a.png", "a.png"],
    "repeat": ["", "2", "0"],
    "_note": ["", "kept", "\x1b[31m"],
}


def _rows(draw: st.DrawFn, header: list[str]) -> list[list[str]]:
    n = draw(st.integers(1, 12))
    rows = []
    for _ in range(n):
        row = [draw(st.sampled_from(CELLS[name])) for name in header]
        width = draw(st.sampled_from([0, 0, 0, 0, -1, 1]))  # now and then short or long
        rows.append(row[:width] if width < 0 else row + ["extra"] * width)
    return rows


@st.composite
def manifests(draw: st.DrawFn) -> tuple[list[str], list[list[str]], str | None]:
    header = draw(st.sampled_from(HEADERS))
    default = draw(st.sampled_from([None, "z-image", "google/imagen4-fast"]))
    return header, _rows(draw, header), default


#: Cells that are fine for every model that takes the column (the fast paths' home ground).
GOOD: dict[str, list[str]] = {
    "model": ["z-image", "google/imagen4-fast"],
    "prompt": ["a cat", "a dog on a bench", "x" * 3000],
    "aspect_ratio": ["1:1", "16:9", "9:16"],
    "negative_prompt": ["", "blurry"],
    "num_images": ["1", "2", ""],
    "seed": ["5", "", "12"],
    "nsfw_checker": ["true", "false", ""],
    "_note": ["", "kept"],
}
CLEAN_HEADERS = [
    ["id", "model", "prompt", "aspect_ratio", "_note"],
    ["id", "prompt", "negative_prompt", "aspect_ratio", "num_images", "seed"],
    ["id", "model", "prompt", "aspect_ratio", "nsfw_checker"],
]


@st.composite
def clean_manifests(draw: st.DrawFn) -> tuple[list[str], list[list[str]], str | None]:
    """Mostly valid rows with unique ids; now and then one bad cell or a repeated id."""
    header = draw(st.sampled_from(CLEAN_HEADERS))
    default = "google/imagen4-fast" if "model" not in header else None
    n = draw(st.integers(1, 40))
    one_model = draw(st.sampled_from([None, "z-image", "google/imagen4-fast"]))
    rows = []
    for k in range(n):
        row = []
        for name in header:
            if name == "id":
                row.append(f"j{k}")
            elif name == "model" and one_model:
                row.append(one_model)
            else:
                row.append(draw(st.sampled_from(GOOD[name])))
        rows.append(row)
    for _ in range(draw(st.integers(0, 2))):  # a flaw: a bad cell, a repeated id, a long row
        r, c = draw(st.integers(0, n - 1)), draw(st.integers(0, len(header) - 1))
        flaw = draw(st.sampled_from(["cell", "id", "width"]))
        if flaw == "cell":
            rows[r][c] = draw(st.sampled_from(CELLS[header[c]]))
        elif flaw == "id":
            rows[r][0] = f"J{draw(st.integers(0, n - 1))}"  # ids compare ignoring case
        else:
            rows[r].append("extra")
    return header, rows, default


def _write(tmp: Path, header: list[str], rows: list[list[str]]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    path = tmp / "m.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _general(items: Any) -> Any:
    """The reader's rows as RawJobs: the builder cannot take the fast path."""
    for item in items:
        yield item.raw() if isinstance(item, CellRow) else item


def _built(path: Path, default: str | None, *, fast: bool) -> list[Job | Problem]:
    builder = JobBuilder(CATALOG, default)
    rows = read_csv(path, str(path))
    return list(builder.run_records(rows if fast else _general(rows), str(path)))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=manifests())
def test_fast_and_general_paths_give_the_same_jobs_and_problems(
    tmp_path: Path, case: tuple[list[str], list[list[str]], str | None]
) -> None:
    header, rows, default = case
    path = _write(tmp_path, header, rows)
    assert _built(path, default, fast=True) == _built(path, default, fast=False)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=clean_manifests())
def test_validate_counts_clean_manifests_as_the_general_path_does(
    tmp_path: Path, case: tuple[list[str], list[list[str]], str | None]
) -> None:
    """Mostly valid manifests: validate counts whole blocks of rows column by column."""
    _same_counts(tmp_path, case)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=manifests())
def test_validate_counts_what_the_jobs_add_up_to(
    tmp_path: Path, case: tuple[list[str], list[list[str]], str | None]
) -> None:
    """validate counts most jobs without building them; the totals must not notice."""
    _same_counts(tmp_path, case)


def _same_counts(tmp_path: Path, case: tuple[list[str], list[list[str]], str | None]) -> None:
    header, rows, default = case
    path = _write(tmp_path, header, rows)
    report = validate_manifest(path, catalog=CATALOG, default_model=default)
    items = _built(path, default, fast=False)
    tally = JobTally(CATALOG)
    for item in items:
        if isinstance(item, Job):
            tally.add(item)
    assert report.jobs == tally.jobs
    assert report.per_model == tally.per_model
    assert report.credits == pytest.approx(tally.credits)  # summed by groups, not one by one
    assert report.examples == tally.examples
    assert report.total_problems == sum(isinstance(i, Problem) for i in items)
    assert report.duplicates == sum(
        isinstance(i, Problem) and ("again (first at" in i.got or "the same model" in i.got)
        for i in items
    )
    shown = [p for p in items if isinstance(p, Problem)][:50]
    assert sorted(report.problems, key=str) == sorted(shown, key=str) or len(shown) > 50


def test_a_clean_million_row_shape_takes_the_fast_path(tmp_path: Path) -> None:
    """The bench's manifest shape (id, model, prompt, aspect_ratio) is checked from cells."""
    path = _write(
        tmp_path,
        ["id", "model", "prompt", "aspect_ratio"],
        [[f"j{i}", "z-image", f"prompt {i}", "1:1"] for i in range(50)],
    )
    builder = JobBuilder(CATALOG, None)
    seen: list[str] = []
    original = builder.build

    def general(rec: Any) -> Any:
        seen.append(rec.source.line)
        return original(rec)

    builder.build = general  # type: ignore[method-assign]
    jobs = list(builder.run_records(read_csv(path, str(path)), str(path)))
    assert len(jobs) == 50 and all(isinstance(j, Job) for j in jobs)
    assert seen == []
