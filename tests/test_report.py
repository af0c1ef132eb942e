"""results.csv and exports: one row per manifest job, in order, joinable on job_id."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd
import pytest
from click.testing import CliRunner

import liangxin_batch.outputs._columns as _columns
import liangxin_batch.outputs._report as _report
from liangxin_batch.cli import CliContext
from liangxin_batch.cli._outputs import export_command, report_command
from liangxin_batch.core._states import JobState
from liangxin_batch.errors import ConfigError
from liangxin_batch.outputs._report import (
    RESULT_COLUMNS,
    FileRecord,
    export,
    plan_header,
    report_rows,
    write_results_csv,
)
from liangxin_batch.state._store import FileRow, JobRow, StateStore
from tests.state_support import drive

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z


def manifest_rows(n: int) -> list[dict[str, str]]:
    """Rows as a user would write them: an alias in `model`, odd text, a note column."""
    return [
        {
            "id": f"row-{i:05d}",
            "model": "nano" if i % 2 else "google/nano-banana",
            "prompt": f'a "quoted", multi\nline prompt #{i} – 猫 =1+1',
            "_note": "" if i % 3 else "keep me",
        }
        for i in range(n)
    ]


def entries(
    rows: list[dict[str, str]], models: dict[int, str] | None = None
) -> list[tuple[str, int, str, str, str, str]]:
    models = models or {}
    found = [
        (f"job-{i:05d}", i, models.get(i, "google/nano-banana"),
         json.dumps({"prompt": r["prompt"]}), json.dumps(r, ensure_ascii=False), f"h{i}")
        for i, r in enumerate(rows)
    ]  # fmt: skip
    random.Random(7).shuffle(found)  # insertion order must not matter: idx does
    return found


def build_store(
    path: Path, rows: list[dict[str, str]], models: dict[int, str] | None = None
) -> StateStore:
    store = StateStore.in_dir(path)
    store.upsert_jobs(entries(rows, models))
    return store


def finish(store: StateStore, i: int, state: JobState, *, files: int = 0) -> None:
    job_id = f"job-{i:05d}"
    urls = [f"https://cdn.test/{job_id}/{n}.png?sig=s" for n in range(max(files, 1))]
    drive(
        store,
        job_id,
        state,
        attempt=1,
        task_id=f"task-{i}",
        submitted_at=T0,
        completed_at=T0 + 12.5,
        cost_time=12_345.0,
        credits=4.0,
        result_urls=urls,
        error_code="500" if state is JobState.FAILED else None,
        error_message="Internal error" if state is JobState.FAILED else None,
    )
    for n in range(files):
        store.record_file(FileRow(job_id, n, urls[n], f"outputs/m/{job_id}_{n}.png", f"sha{n}", 10))


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_ten_thousand_rows_join_back_to_the_manifest(tmp_path: Path) -> None:
    rows = manifest_rows(10_000)
    store = build_store(tmp_path, rows)
    for i in range(0, 10_000, 7):
        finish(store, i, JobState.DONE, files=1 + i % 2)
    for i in range(3, 10_000, 11):
        finish(store, i, JobState.FAILED)
    # A job that left the manifest is not reported.
    store.upsert_jobs([("gone", 10_000, "z-image", "{}", "{}", "h")])
    again = entries(rows)  # the manifest again, as a sync sees it: no 'gone'
    store.start_membership()
    store.mark_seen([r[0] for r in again])
    store.upsert_jobs(again)
    store.end_membership()

    path = write_results_csv(tmp_path, store)
    results = read(path)
    assert len(results) == 10_000
    assert list(results["job_id"]) == [f"job-{i:05d}" for i in range(10_000)]
    # The manifest's own names, `model` included (issue 15; it was `input_model`).
    assert list(results.columns) == ["id", "model", "prompt", "_note", *RESULT_COLUMNS]

    manifest = pd.DataFrame(rows, dtype=str)
    manifest["job_id"] = [f"job-{i:05d}" for i in range(10_000)]
    joined = manifest.merge(
        results, on="job_id", how="outer", validate="one_to_one", indicator=True
    )
    assert (joined["_merge"] == "both").all()
    # Every input column comes back exactly as the user wrote it.
    assert (joined["prompt_x"] == joined["prompt_y"]).all()
    assert (joined["model_x"] == joined["model_y"]).all()  # the alias, as written
    assert set(results["model_id"]) == {"google/nano-banana"}  # what the job ran as
    assert (joined["_note_x"] == joined["_note_y"]).all()

    done = results.set_index("job_id").loc["job-00007"]
    assert done["status"] == "succeeded"
    assert done["output_paths"] == "outputs/m/job-00007_0.png;outputs/m/job-00007_1.png"
    assert done["output_sha256"] == "sha0;sha1"
    assert done["submitted_at"] == "2025-06-15T15:06:40Z"
    assert done["generation_seconds"] == "12.345"
    assert done["credits"] == "4"
    failed = results.set_index("job_id").loc["job-00003"]
    assert (failed["status"], failed["error_code"]) == ("failed", "500")
    assert results.set_index("job_id").loc["job-00001"]["status"] == "pending"
    store.close()


def job(state: JobState, **kw: Any) -> JobRow:
    base: dict[str, Any] = dict(
        job_id="j", idx=0, model="m", input={}, state=state, attempt=1, task_id="t",
        submitted_at=T0, completed_at=None, result_urls=("u0", "u1"), error_code=None,
        error_message=None, credits=None, polls=0, content_hash="h", columns={"prompt": "p"},
    )  # fmt: skip
    base.update(kw)
    return JobRow(**base)


def test_status_means_files_verified() -> None:
    files = {"j": [FileRecord(0, "u0", "outputs/a.png", "s0", 1)]}
    [row] = report_rows([job(JobState.DONE)], files)
    assert row["status"] == "succeeded"
    [row] = report_rows([job(JobState.SUCCEEDED)], files)
    assert row["status"] == "downloading"  # generated, files not all verified yet
    assert row["output_paths"] == "outputs/a.png"
    [row] = report_rows([job(JobState.DOWNLOAD_FAILED, error_message="HTTP 403")], {})
    assert (row["status"], row["error_message"]) == ("download_failed", "HTTP 403")


def test_files_of_an_earlier_task_are_not_reported() -> None:
    files = {"j": [FileRecord(1, "u1", "b.png", "s1", 1), FileRecord(0, "old", "a.png", "s", 1)]}
    [row] = report_rows([job(JobState.SUCCEEDED)], files)
    assert (row["output_paths"], row["output_sha256"]) == ("b.png", "s1")


def test_generation_seconds_falls_back_to_timestamps() -> None:
    [row] = report_rows([job(JobState.DONE, completed_at=T0 + 2.25)], {})
    assert row["generation_seconds"] == "2.25"
    assert row["completed_at"] == "2025-06-15T15:06:42Z"


def test_header_keeps_manifest_names_and_prefixes_only_a_clash() -> None:
    """Issue 15: the manifest's names stay; a manifest column named like one the tool
    adds (only a model field or a YAML variable can be) becomes `manifest_<name>`."""
    header, rename = plan_header(["prompt", "model", "status", "manifest_status", "prompt"])
    assert rename == {
        "prompt": "prompt",
        "model": "model",
        "status": "manifest_status",
        "manifest_status": "manifest_manifest_status",
    }
    assert header[:4] == ["prompt", "model", "manifest_status", "manifest_manifest_status"]
    assert header[4:] == list(RESULT_COLUMNS)
    rows = report_rows([job(JobState.DONE, columns={"x": "1"}), job(JobState.DONE)], {})
    assert all(list(r) == ["x", "prompt", *RESULT_COLUMNS] for r in rows)
    assert rows[0]["prompt"] == "" and rows[1]["x"] == ""


def test_no_reserved_manifest_column_or_catalog_field_clashes_with_a_tool_column() -> None:
    """So a clash needs a user's own catalog field or YAML variable named like one."""
    from liangxin_batch.catalog._catalog import default_catalog

    fields = {name for spec in default_catalog().models.values() for name in spec.fields}
    assert not (fields | {"id", "model", "prompt", "input"}) & set(RESULT_COLUMNS)


@pytest.fixture
def small(tmp_path: Path) -> StateStore:
    store = build_store(tmp_path, manifest_rows(6), models={2: "z-image"})
    finish(store, 0, JobState.DONE, files=1)
    finish(store, 1, JobState.FAILED)
    finish(store, 2, JobState.DONE, files=1)
    return store


def test_export_formats_and_filters(tmp_path: Path, small: StateStore) -> None:
    n = export(tmp_path, small, "jsonl", tmp_path / "a.jsonl", status=["succeeded", "failed"])
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text("utf-8").splitlines()]
    assert n == 3 and [x["job_id"] for x in lines] == ["job-00000", "job-00001", "job-00002"]
    assert lines[0]["prompt"].endswith("猫 =1+1")

    n = export(tmp_path, small, "parquet", tmp_path / "a.parquet", model=["z-image"])
    frame = pd.read_parquet(tmp_path / "a.parquet")
    assert n == 1 and list(frame["job_id"]) == ["job-00002"]
    assert str(frame["attempts"].dtype) == "int64"  # typed (tests/test_results_types.py)

    n = export(tmp_path, small, "xlsx", tmp_path / "a.xlsx")
    openpyxl = pytest.importorskip("openpyxl")
    sheet = openpyxl.load_workbook(tmp_path / "a.xlsx").active
    cells = list(sheet.iter_rows(values_only=False))
    assert n == 6 and len(cells) == 7
    prompt = cells[1][2]
    assert prompt.data_type == "s" and prompt.value.endswith("=1+1")  # text, not a formula

    assert export(tmp_path, small, "csv", status=["unknown"]) == 0
    assert list(read(tmp_path / "export.csv").columns)[-1] == "generation_seconds"


def test_missing_extra_names_the_pip_install(
    tmp_path: Path, small: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match=r"pip install 'liangxin-batch\[parquet\]'"):
        export(tmp_path, small, "parquet")
    with pytest.raises(ConfigError, match="unknown status"):
        export(tmp_path, small, "csv", status=["great"])


def test_a_failed_write_keeps_the_previous_file(
    tmp_path: Path, small: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_results_csv(tmp_path, small)
    before = path.read_bytes()

    def broken(tmp: Path, *args: object) -> int:
        tmp.write_text("job_id\nhalf")
        raise OSError("disk full")

    monkeypatch.setattr(_report, "_write_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        write_results_csv(tmp_path, small)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_export_and_report(tmp_path: Path, small: StateStore) -> None:
    small.close()
    group = click.Group("main")
    group.add_command(export_command)
    group.add_command(report_command)
    runner = CliRunner()
    args = ["export", str(tmp_path), "--format", "jsonl", "--model", "nano-banana"]
    result = runner.invoke(group, [*args, "--status", "failed"], obj=CliContext())
    assert result.exit_code == 0, result.output
    assert "1 row(s) written" in result.output
    assert (tmp_path / "export.jsonl").read_text("utf-8").count("\n") == 1  # alias resolved

    result = runner.invoke(group, ["report", str(tmp_path)], obj=CliContext())
    assert result.exit_code == 0, result.output
    assert len(read(tmp_path / "results.csv")) == 6
    assert (tmp_path / "report.html").is_file()

    result = runner.invoke(group, ["report", str(tmp_path / "nope")], obj=CliContext())
    assert result.exit_code != 0 and not (tmp_path / "nope").exists()


FORMULAS = ['=HYPERLINK("http://evil.test","click")', "+1+1", "-2+3", "@SUM(A1)", "plain", "-2.5"]


def test_csv_safe_defuses_formulas_and_the_default_keeps_values(tmp_path: Path) -> None:
    """Issue 11: a colleague opening results.csv in Excel ran =HYPERLINK(...)."""
    rows = [{"id": f"f{i}", "model": "z-image", "prompt": p} for i, p in enumerate(FORMULAS)]
    store = build_store(tmp_path, rows)
    try:
        plain = read(write_results_csv(tmp_path, store))
        assert list(plain["prompt"]) == FORMULAS, "results.csv is data: values as written"
        safe = read(write_results_csv(tmp_path, store, csv_safe=True))
    finally:
        store.close()
    assert list(safe["prompt"]) == ["'" + p for p in FORMULAS[:4]] + ["plain", "-2.5"]


def test_xlsx_stores_formula_like_cells_as_text(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    rows = [{"id": f"f{i}", "model": "z-image", "prompt": p} for i, p in enumerate(FORMULAS)]
    store = build_store(tmp_path, rows)
    try:
        export(tmp_path, store, "xlsx", tmp_path / "r.xlsx")
    finally:
        store.close()
    sheet = openpyxl.load_workbook(tmp_path / "r.xlsx").active
    header = [c.value for c in sheet[1]]
    col = header.index("prompt")
    cells = [row[col] for row in sheet.iter_rows(min_row=2)]
    assert [c.value for c in cells] == FORMULAS
    assert {c.data_type for c in cells} == {"s"}, "text, never a formula"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_column_first_seen_after_the_header_guess_still_gets_its_place(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header is guessed from the first jobs; a later job's new column means the
    table is written again with the whole header, in first-seen order."""
    monkeypatch.setattr(_report, "_GUESS", 2)
    rows = manifest_rows(6)
    rows[4] = {"late": "x", **rows[4], "later": "y"}
    store = build_store(tmp_path, rows)
    try:
        n = export(tmp_path, store, fmt, tmp_path / f"t.{fmt}")
    finally:
        store.close()
    names = ["id", "model", "prompt", "_note", "late", "later", *RESULT_COLUMNS]
    if fmt == "csv":
        table = read(tmp_path / "t.csv")
        assert list(table.columns) == names and n == len(table) == 6
        assert list(table["late"]) == ["", "", "", "", "x", ""]
    else:
        lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text("utf-8").splitlines()]
        assert n == len(lines) == 6 and all(list(x) == names for x in lines)
        assert [x["later"] for x in lines] == [None, None, None, None, "y", None]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_results_csv_and_the_report_come_from_one_walk_even_when_the_guess_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from liangxin_batch.outputs._gallery import write_reports

    monkeypatch.setattr(_report, "_GUESS", 1)
    rows = manifest_rows(5)
    rows[3] = {**rows[3], "extra": "e"}
    store = build_store(tmp_path, rows)
    finish(store, 0, JobState.DONE, files=1)  # its file is not on disk: reported lost
    try:
        csv_path, html_path = write_reports(tmp_path, store, check_files=True)
    finally:
        store.close()
    table = read(csv_path)
    assert list(table["extra"]) == ["", "", "", "e", ""]
    assert list(table["status"]) == ["download_failed", *["pending"] * 4]
    assert table["error_code"][0] == "output_missing"
    from tests.test_gallery import _data

    [index] = _data(html_path.parent)["index"].values()
    assert index["id"] == [f"job-{i:05d}" for i in range(5)]  # each job once


def test_timestamps_read_as_datetime_writes_them() -> None:
    from datetime import UTC, datetime

    def reference(at: float) -> str:
        text = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
        return text.replace("+00:00", "Z")

    rng = random.Random(5)
    edges = [0.0, -0.0, -0.5, -86400.25, 0.9989999, 0.999, 0.9994999, 0.9995, 0.9999996]
    values = [w + e for w in (0, T0, 4e9) for e in edges]
    values += [rng.uniform(-1e9, 4e9) for _ in range(20_000)]
    values += [int(rng.uniform(0, 4e9)) + rng.choice(edges[4:]) for _ in range(20_000)]
    for at in values:
        assert _columns._iso(at) == reference(at), at
    assert _columns._iso(None) == ""
