"""results.csv on an interrupted run: one row per manifest job, in manifest order, each
unfinished job with its status. In virtual time, through `run_batch_async` as the CLI
calls it (the CLI's signal handler does exactly `RunHandle.interrupt`)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import JobState
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.outputs._report import RESULT_COLUMNS, report_status
from liangxin_batch.run._progress import NullObserver, Observer
from liangxin_batch.run._run import RunHandle, run_batch_async
from liangxin_batch.simulator import SimConfig, create_app
from tests.runner_harness import KEY
from tests.state_support import jobs_in
from tests.virtual_time import run_virtual

N = 50
MODELS = ("z-image", "nano-banana-pro", "google/nano-banana")


def write_manifest(path: Path) -> list[str]:
    """Ids deliberately out of alphabetical order: manifest order is not id order."""
    ids = [f"{'zyx'[i % 3]}-{(7 * i) % N:03d}" for i in range(N)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "model", "prompt", "aspect_ratio"])
        for i, job_id in enumerate(ids):
            model = MODELS[i % 3]
            ratio = "16:9" if model != "google/nano-banana" else ""
            w.writerow([job_id, model, f"a harbour at dawn, take {i}, «quoted», 007", ratio])
    return ids


Run = Callable[[float | None], Awaitable[RunSummary]]


def runner_for(manifest: Path, out: Path, observer: Observer | None = None) -> Run:
    """`run(interrupt_at)`: one `run_batch_async` against a simulator on the running
    (virtual-time) loop, interrupted `interrupt_at` seconds in as the CLI's handler does."""
    loop = asyncio.get_running_loop()
    app = create_app(SimConfig(api_key=KEY, seed=8), clock=loop.time)
    transport = httpx.ASGITransport(app=app)

    async def run(interrupt_at: float | None) -> RunSummary:
        handle = RunHandle()
        if interrupt_at is not None:
            loop.call_later(interrupt_at, handle.interrupt)
        return await run_batch_async(
            manifest,
            out_dir=out,
            settings=RunSettings(),
            api_key=KEY,
            base_url="http://sim",
            transport=transport,
            download_transport=transport,
            handle=handle,
            observer=observer,
        )

    return run


def test_interrupted_run_writes_one_row_per_job_in_manifest_order(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    ids = write_manifest(manifest)
    out = tmp_path / "out"

    async def main() -> tuple[RunSummary, str, RunSummary, dict[str, tuple[str, str]]]:
        run = runner_for(manifest, out)
        # 20 creates per 10 s: at 12 s about 40 jobs are created, some done, the rest pending.
        first = await run(12.0)
        interrupted_csv = (out / "results.csv").read_text(encoding="utf-8")
        after_first = {j: (job.state.value, job.task_id or "") for j, job in jobs_in(out).items()}
        second = await run(None)  # the resume, against the same service
        return first, interrupted_csv, second, after_first

    summary, interrupted_csv, again, state = run_virtual(main)
    assert summary.interrupted and summary.exit_code == 130
    results = pd.read_csv(io.StringIO(interrupted_csv), dtype=str, keep_default_na=False)
    assert list(results["job_id"]) == ids  # exactly one row per job, manifest order
    assert list(results.columns)[-len(RESULT_COLUMNS) :] == list(RESULT_COLUMNS)
    assert list(results["prompt"])[:2] == [
        "a harbour at dawn, take 0, «quoted», 007",
        "a harbour at dawn, take 1, «quoted», 007",
    ]
    seen = set()
    for row in results.to_dict(orient="records"):
        job_state, task_id = state[row["job_id"]]
        assert row["status"] == report_status(JobState(job_state))
        assert row["task_id"] == task_id
        seen.add(row["status"])
        if row["status"] == "pending":
            assert row["task_id"] == "" and row["output_paths"] == ""
        if row["status"] == "succeeded":
            assert row["output_paths"] and (out / row["output_paths"]).is_file()
    assert {"pending", "succeeded"} <= seen, seen
    assert seen & {"submitted", "downloading"}, "some jobs were still in flight"
    # The counts in the table agree with the run's own summary.
    from_csv = results["status"].value_counts().to_dict()
    assert from_csv == summary.counts  # one vocabulary

    # And the resume rewrites it: same rows, same order, all finished.
    assert again.exit_code == 0, again.counts
    final = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    assert list(final["job_id"]) == ids
    assert set(final["status"]) == {"succeeded"}


def test_an_interrupted_big_batch_leaves_its_reports_for_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a million jobs the rebuild held the first Ctrl-C for 692 s. Over the threshold
    (lowered here) an interrupted run says how to rebuild instead; a run that ends
    normally still writes them."""
    import liangxin_batch.run._run as run_module

    monkeypatch.setattr(run_module, "REPORTS_ON_INTERRUPT_MAX_JOBS", 10)
    manifest = tmp_path / "m.csv"
    write_manifest(manifest)
    out = tmp_path / "out"
    messages: list[str] = []

    class Listener(NullObserver):
        def message(self, text: str) -> None:
            messages.append(text)

    async def main() -> tuple[RunSummary, bool, RunSummary]:
        run = runner_for(manifest, out, Listener())
        first = await run(12.0)
        written = (out / "results.csv").exists()
        return first, written, await run(None)

    first, written, second = run_virtual(main)
    assert first.interrupted and not written and not first.reports_written
    assert any("liangxin-batch report" in m and "not rebuilt" in m for m in messages)
    assert second.exit_code == 0 and (out / "results.csv").exists()
