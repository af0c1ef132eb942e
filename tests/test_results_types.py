"""Issue 15: `results(DIR)` is a DataFrame with real dtypes, and `export --format
parquet/jsonl` writes the same types (numbers, timestamps, nulls), not all text."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

import liangxin_batch
from liangxin_batch import RunSummary, StateError, results, run_batch_async
from liangxin_batch.cli import main
from liangxin_batch.core._states import JobState
from liangxin_batch.simulator import SimConfig, create_app
from tests.runner_harness import KEY
from tests.test_light_start import imported_after
from tests.test_report import T0, build_store, finish, manifest_rows, read
from tests.virtual_time import run_virtual

pa: Any = pytest.importorskip("pyarrow")  # the parquet extra (in dev)
pq: Any = pytest.importorskip("pyarrow.parquet")

TYPES = {
    "job_id": "string",
    "model_id": "string",
    "status": "string",
    "task_id": "string",
    "attempts": "Int64",
    "error_code": "string",
    "error_message": "string",
    "output_paths": "string",
    "output_sha256": "string",
    "result_urls": "string",
    "credits": "Float64",
    "credits_estimated": "Float64",
    "submitted_at": "datetime64[ns, UTC]",
    "completed_at": "datetime64[ns, UTC]",
    "generation_seconds": "Float64",
}
MANIFEST = ["id", "model", "prompt", "_note"]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Six jobs: two done (one with two files), one failed, three pending."""
    store = build_store(tmp_path, manifest_rows(6), models={2: "z-image"})
    try:
        finish(store, 0, JobState.DONE, files=2)
        finish(store, 1, JobState.FAILED)
        finish(store, 2, JobState.DONE, files=1)
    finally:
        store.close()
    for n in range(2):  # the files exist: results() checks them as `report` does
        for name in (f"outputs/m/job-00000_{n}.png", "outputs/m/job-00002_0.png"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(b"x" * 10)
    return tmp_path


def test_results_has_real_dtypes(out: Path) -> None:
    frame = results(str(out))  # str or Path
    assert list(frame.columns) == [*MANIFEST, *TYPES]
    assert {c: str(frame[c].dtype) for c in TYPES} == TYPES
    assert {str(frame[c].dtype) for c in MANIFEST} == {"string"}
    # An empty text field is <NA> in a string column, not a column of float NaN.
    assert frame["error_message"].isna().sum() == 5
    assert "float64" not in {str(frame[c].dtype) for c in frame}

    done = frame.set_index("job_id").loc["job-00000"]
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["credits"] == 4.0 and done["generation_seconds"] == 12.345
    assert done["submitted_at"] == pd.Timestamp(T0, unit="s", tz="UTC")
    assert done["completed_at"] == pd.Timestamp(T0 + 12.5, unit="s", tz="UTC")
    assert done["output_paths"] == "outputs/m/job-00000_0.png;outputs/m/job-00000_1.png"
    assert done["error_message"] is pd.NA
    failed = frame.set_index("job_id").loc["job-00001"]
    assert (failed["error_code"], failed["error_message"]) == ("500", "Internal error")
    pending = frame.set_index("job_id").loc["job-00003"]
    assert pending["task_id"] is pd.NA and pending["submitted_at"] is pd.NaT
    assert pending["credits"] is pd.NA


def test_results_are_the_rows_of_results_csv(out: Path) -> None:
    from liangxin_batch.outputs._gallery import write_reports
    from liangxin_batch.state._store import StateStore

    store = StateStore.in_dir(out)
    try:
        write_reports(out, store, check_files=True)
    finally:
        store.close()
    text = read(out / "results.csv")
    frame = results(out)
    assert list(frame.columns) == list(text.columns)
    assert list(frame["job_id"]) == list(text["job_id"])
    assert list(frame["status"]) == list(text["status"])
    assert list(frame["attempts"].astype(str)) == list(text["attempts"])
    assert list(frame["prompt"]) == list(text["prompt"])


def test_a_lost_file_shows_as_download_failed(out: Path) -> None:
    (out / "outputs/m/job-00002_0.png").unlink()
    row = results(out).set_index("job_id").loc["job-00002"]
    assert row["status"] == "download_failed" and "missing on disk" in row["error_message"]


def test_results_of_a_folder_without_a_state_says_so(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no state file"):
        results(tmp_path)


def test_parquet_export_is_typed(out: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(out), "--format", "parquet"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out / "export.parquet")
    kinds = {f.name: f.type for f in table.schema}
    assert kinds["attempts"] == pa.int64()
    assert kinds["credits"] == kinds["generation_seconds"] == pa.float64()
    assert kinds["submitted_at"] == pa.timestamp("ns", tz="UTC")
    assert kinds["error_message"] == kinds["prompt"] == pa.string()
    assert table.column("error_message").null_count == 5
    frame = pd.read_parquet(out / "export.parquet")
    typed = results(out)
    for column in TYPES:  # the same values as results()
        assert list(frame[column].astype(object).where(frame[column].notna(), None)) == list(
            typed[column].astype(object).where(typed[column].notna(), None)
        ), column


def test_jsonl_export_is_typed(out: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(out), "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "export.jsonl").read_text("utf-8").splitlines()]
    assert [list(x) for x in lines] == [[*MANIFEST, *TYPES]] * 6
    done, failed, pending = lines[0], lines[1], lines[3]
    assert done["attempts"] == 1 and done["credits"] == 4.0
    assert done["generation_seconds"] == 12.345
    assert done["submitted_at"] == "2025-06-15T15:06:40Z"
    assert done["completed_at"] == "2025-06-15T15:06:52.500000Z"
    assert done["error_message"] is None and failed["error_message"] == "Internal error"
    assert pending["submitted_at"] is None and pending["task_id"] is None
    assert pending["credits"] is None and pending["attempts"] == 0


def test_an_empty_table_keeps_its_types(out: Path) -> None:
    target = out / "none.parquet"
    args = ["export", str(out), "--format", "parquet", "--status", "unknown", "--out"]
    assert CliRunner().invoke(main, [*args, str(target)]).exit_code == 0
    assert pq.read_schema(target).field("attempts").type == pa.int64()


def test_results_after_a_run_against_the_simulator(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "id,model,prompt,aspect_ratio\n" + "".join(f"j{i},z-image,kite {i},1:1\n" for i in range(3))
    )

    async def main_() -> RunSummary:
        app = create_app(SimConfig(api_key=KEY, seed=2), clock=asyncio.get_running_loop().time)
        transport = httpx.ASGITransport(app=app)
        return await run_batch_async(
            manifest,
            out_dir=tmp_path / "out",
            api_key=KEY,
            base_url="http://sim",
            transport=transport,
            download_transport=transport,
        )

    summary = run_virtual(main_)
    frame = results(tmp_path / "out")
    assert summary.succeeded == 3
    assert list(frame["status"]) == ["succeeded"] * 3
    assert list(frame["model"]) == ["z-image"] * 3  # the manifest's column, its own name
    assert frame["submitted_at"].notna().all() and frame["completed_at"].notna().all()
    assert frame["error_message"].isna().all() and str(frame["error_message"].dtype) == "string"
    assert all((tmp_path / "out" / p).is_file() for p in frame["output_paths"])


def test_results_is_public_and_importing_the_package_loads_no_pandas() -> None:
    assert liangxin_batch.results is results
    assert "pandas" not in imported_after("import liangxin_batch; liangxin_batch.results")
