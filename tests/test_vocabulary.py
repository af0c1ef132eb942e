"""Issue 15, one vocabulary: the run summary, `read_status`, `status` and results.csv name
states with the same words (`succeeded` = generated and files verified), while the state
file keeps its internal names (`done`, and `succeeded` for "generated, not on disk yet")."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import httpx
from click.testing import CliRunner

from liangxin_batch import RunSummary, read_status, run_batch_async
from liangxin_batch.cli import main
from liangxin_batch.core._states import REPORT_STATUSES, report_counts
from liangxin_batch.simulator import SimConfig, create_app
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import sync_jobs
from tests.runner_harness import KEY, SimEnv, in_virtual_time, make_jobs
from tests.state_support import counts_in, drive
from tests.virtual_time import run_virtual

MANIFEST = "id,model,prompt,aspect_ratio\n" + "".join(
    f"j{i},z-image,a kite {i},1:1\n" for i in range(3)
)


def _run(out: Path) -> RunSummary:
    manifest = out.parent / "m.csv"
    manifest.write_text(MANIFEST, encoding="utf-8")

    async def main_() -> RunSummary:
        app = create_app(SimConfig(api_key=KEY, seed=1), clock=asyncio.get_running_loop().time)
        transport = httpx.ASGITransport(app=app)
        return await run_batch_async(
            manifest,
            out_dir=out,
            api_key=KEY,
            base_url="http://sim",
            transport=transport,
            download_transport=transport,
        )

    return run_virtual(main_)


def test_summary_status_and_results_csv_say_succeeded_alike(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _run(out)
    assert summary.counts == {"succeeded": 3}
    assert summary.succeeded == 3 and summary.exit_code == 0
    status = read_status(str(out))
    assert status.by_state == {"succeeded": 3}
    assert status.by_model == {"z-image": {"succeeded": 3}}
    with (out / "results.csv").open(encoding="utf-8", newline="") as fh:
        assert {row["status"] for row in csv.DictReader(fh)} == {"succeeded"}
    shown = CliRunner().invoke(main, ["status", str(out)]).output
    assert "succeeded: 3" in shown and "done" not in shown
    assert counts_in(out) == {"done": 3}, "the state file keeps its own names"


def test_generated_but_not_on_disk_is_downloading_everywhere(tmp_path: Path) -> None:
    store = StateStore.in_dir(tmp_path)
    try:
        sync_jobs(store, make_jobs(3, models=("z-image",)), allow_changed=False)
        drive(store, "job-00000", "done", task_id="t0")
        drive(store, "job-00001", "succeeded", task_id="t1")
    finally:
        store.close()
    status = read_status(tmp_path)
    assert status.by_state == {"pending": 1, "downloading": 1, "succeeded": 1}
    assert status.by_model == {"z-image": {"pending": 1, "downloading": 1, "succeeded": 1}}
    assert set(status.by_state) <= set(REPORT_STATUSES)


def test_a_run_without_downloads_calls_its_generated_jobs_succeeded() -> None:
    """A Runner driven without a downloader (tests, a library caller) has nothing to fetch:
    a generated job is finished, so it is `succeeded`, never `downloading`."""
    assert report_counts({"succeeded": 2, "done": 1}, downloads=False) == {"succeeded": 3}
    assert report_counts({"succeeded": 2, "done": 1}) == {"downloading": 2, "succeeded": 1}
    assert report_counts({"pending": 1, "timed_out": 2}) == {"pending": 1, "timed_out": 2}


def test_runner_without_downloads_reports_succeeded(tmp_path: Path) -> None:
    async def main_() -> RunSummary:
        return await SimEnv().run(tmp_path, make_jobs(4))

    summary = in_virtual_time(main_)
    assert summary.counts == {"succeeded": 4} and summary.exit_code == 0
    assert counts_in(tmp_path) == {"succeeded": 4}  # internal: generated, nothing fetched
