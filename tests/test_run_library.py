"""`run_batch` from Python: records or a DataFrame in, a summary out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pandas as pd
import pytest

from liangxin_batch import ManifestError, RunSettings, run_batch_async
from liangxin_batch.simulator import SimConfig, create_app
from tests.runner_harness import KEY
from tests.virtual_time import run_virtual


def run_records(out: Path, source: object) -> tuple[object, object]:
    async def main() -> tuple[object, object]:
        loop = asyncio.get_running_loop()
        app = create_app(SimConfig(api_key=KEY), clock=loop.time)
        transport = httpx.ASGITransport(app=app)
        summary = await run_batch_async(
            source,
            out_dir=out,
            settings=RunSettings(max_in_flight=10),
            api_key=KEY,
            base_url="http://sim",
            transport=transport,
            download_transport=transport,
        )
        return summary, app.state.sim

    return run_virtual(main)


def test_dataframe_runs_and_results_join_back(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "id": ["a-001", "a-002", "a-003"],
            "model": ["z-image", "z-image", "google/nano-banana"],
            "prompt": ["one", "two", "three"],
            "aspect_ratio": ["1:1", "16:9", None],
        }
    )
    summary, sim = run_records(tmp_path, frame)
    assert summary.counts == {"done": 3}  # type: ignore[attr-defined]
    assert summary.exit_code == 0  # type: ignore[attr-defined]
    results = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert list(results["job_id"]) == ["a-001", "a-002", "a-003"]
    assert set(results["status"]) == {"succeeded"}
    assert len(sim.ledger.creates()) == 3  # type: ignore[attr-defined]


def test_bad_records_raise_before_anything_is_sent(tmp_path: Path) -> None:
    records = [{"model": "z-image", "prompt": "x", "aspect_ratio": "16-9"}]
    with pytest.raises(ManifestError, match="16:9"):
        run_records(tmp_path, records)
    assert not (tmp_path / "state.db").exists()


def test_run_log_has_every_transition_and_never_the_key(tmp_path: Path) -> None:
    records = [
        {"id": f"j{i}", "model": "z-image", "prompt": f"p{i}", "aspect_ratio": "1:1"}
        for i in range(4)
    ]
    run_records(tmp_path, records)
    log = (tmp_path / "run.log").read_text(encoding="utf-8")
    for i in range(4):
        assert f"j{i}: submitted z-image as task " in log
        assert f"j{i}: done, 1 file(s) verified" in log
    assert log.count(" succeeded by poll") == 4
    assert KEY not in log
