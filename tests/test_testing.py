"""`liangxin_batch.testing`, used the way a user's own tests would: public names only."""

from __future__ import annotations

import asyncio
from pathlib import Path

from liangxin_batch import RunSettings, RunSummary, run_batch_async
from liangxin_batch.simulator import FaultProfile
from liangxin_batch.testing import (
    SimulatedService,
    VirtualTimeLoop,
    liangxin_service,
    run_in_virtual_time,
)

__all__ = ["liangxin_service"]  # a fixture: imported to be used below, as a user would

MANIFEST = "id,model,prompt,aspect_ratio\n" + "".join(
    f"p{i},z-image,a lighthouse {i},1:1\n" for i in range(12)
)


def test_a_batch_runs_against_the_simulated_service_in_virtual_time(tmp_path: Path) -> None:
    manifest = tmp_path / "prompts.csv"
    manifest.write_text(MANIFEST, encoding="utf-8")

    async def main() -> tuple[RunSummary, SimulatedService, float]:
        service = SimulatedService(faults=FaultProfile(create_500=0.3))
        start = asyncio.get_running_loop().time()
        summary = await run_batch_async(manifest, out_dir=tmp_path / "out", **service.run_options())
        return summary, service, asyncio.get_running_loop().time() - start

    summary, service, virtual_seconds = run_in_virtual_time(main)
    assert summary.counts == {"succeeded": 12}
    assert service.ledger.duplicates() == {}
    assert len(service.ledger.creates()) == 12
    assert virtual_seconds > 5, "model latencies were simulated, not skipped"
    assert len(list((tmp_path / "out" / "outputs").rglob("*.png"))) == 12


def test_the_virtual_loop_jumps_over_sleeps() -> None:
    loop = VirtualTimeLoop(start=0.0)
    try:
        loop.run_until_complete(asyncio.sleep(3600))
        assert loop.time() == 3600.0
    finally:
        loop.close()


def test_the_fixture_serves_a_run_on_the_wall_clock(
    liangxin_service: SimulatedService, tmp_path: Path
) -> None:
    manifest = tmp_path / "prompts.csv"
    manifest.write_text("\n".join(MANIFEST.splitlines()[:4]) + "\n", encoding="utf-8")
    summary = asyncio.run(
        run_batch_async(
            manifest,
            out_dir=tmp_path / "out",
            settings=RunSettings(poll_scale=0.01),
            **liangxin_service.run_options(),
        )
    )
    assert summary.counts == {"succeeded": 3}  # creates are paced at 2/s: a short batch
    assert liangxin_service.ledger.duplicates() == {}
