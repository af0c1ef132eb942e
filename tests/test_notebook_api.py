"""Issue 15, the Python API in a notebook: `run_batch` shows its real parameters, runs
against the built-in simulator with `simulate=True`, and inside a running event loop
(Jupyter) says to `await run_batch_async(...)` instead of failing obscurely."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

import liangxin_batch
from liangxin_batch import ConfigError, run_batch


def test_run_batch_shows_its_real_parameters() -> None:
    params = inspect.signature(run_batch).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    for name in ("out_dir", "settings", "catalog", "default_model", "base_url", "simulate"):
        assert name in params, name
    assert params["simulate"].default is False
    async_params = set(inspect.signature(liangxin_batch.run_batch_async).parameters)
    public_async = {p for p in async_params if p not in ("handle", "receiver_ready")}
    assert public_async <= set(params)


@pytest.mark.slow
def test_simulate_runs_a_manifest_against_the_built_in_simulator(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "id,model,prompt,aspect_ratio\n" + "".join(f"j{i},z-image,cat {i},1:1\n" for i in range(3))
    )
    summary = run_batch(manifest, out_dir=str(tmp_path / "out"), simulate=True)
    assert summary.succeeded == 3
    assert len(list((tmp_path / "out" / "outputs").rglob("*.png"))) == 3
    # The simulator kept its tasks beside the state, so calling again resumes with them.
    from liangxin_batch.simulator import saved_ledger

    assert len(saved_ledger(tmp_path / "out").creates()) == 3


def test_inside_a_running_loop_it_says_to_await_run_batch_async(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,model,prompt,aspect_ratio\nj,z-image,cat,1:1\n")

    async def in_a_notebook_cell() -> None:
        run_batch(manifest, out_dir=tmp_path / "out", simulate=True)

    with pytest.raises(ConfigError, match=r"await run_batch_async\("):
        asyncio.run(in_a_notebook_cell())
    assert not (tmp_path / "out").exists()  # nothing started
