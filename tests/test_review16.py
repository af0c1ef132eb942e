"""Review of issue 16: failing tests that demonstrate defects found in review."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.simulator import SimConfig
from tests.test_uploads_run import KEY, Batch, _manifest, _photos
from tests.virtual_time import run_virtual


@pytest.mark.slow
def test_an_answer_expiry_inside_the_margin_does_not_upload_forever(tmp_path: Path) -> None:
    """The host's own expiresAt (5 minutes here; e.g. 24 h against a user's 30 h margin
    for a 3 d lifetime) is closer than the margin: a fresh upload is never `fresh`, so
    _upload_then_submit uploads, takes a turn, finds it stale, gives the turn back and
    uploads again, without end. It must end (use it, or refuse with a message)."""
    manifest = _manifest(tmp_path, 1, _photos(tmp_path, 1)[:1])
    out = tmp_path / "out"

    async def main() -> Batch:
        config = SimConfig(
            api_key=KEY, upload_lifetime_seconds=300.0, upload_answer="file_url", seed=3
        )
        batch = Batch(config)
        try:
            async with asyncio.timeout(3600):  # one virtual hour
                await batch.run(manifest, out, RunSettings())
        except TimeoutError:
            pass
        return batch

    batch = run_virtual(main)
    uploads = sum(batch.sim.ledger.upload_counts_by_sha256().values())
    assert uploads <= 2, f"{uploads} uploads of one file in one virtual hour"
