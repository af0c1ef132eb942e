"""report.html counts credits one way and says how the service bills them.

The demo's plan estimated 65.4 credits and its report said 67.0 without a word: the
service rounds each task up to a whole credit. And a folder reused with a shorter
manifest said "jobs no longer in the manifest, not counted" while counting their credits.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.runner_harness import SimEnv, in_virtual_time


def rows(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "model": "z-image", "prompt": f"p {i}", "aspect_ratio": "1:1"} for i in ids]


def credits_tile(html: str) -> str:
    match = re.search(r'<div class="k">Credits charged</div>(.*?)<div class="tile">', html, re.S)
    assert match, "the credits tile"
    return match.group(1)


def test_removed_jobs_credits_are_said_apart_and_rounding_is_named(tmp_path: Path) -> None:
    async def main() -> Any:
        env = SimEnv()
        await env.run_library(tmp_path, rows("a", "b", "c"))
        return await env.run_library(tmp_path, rows("a", "b"))  # c left the manifest

    summary = in_virtual_time(main)
    html = (tmp_path / "report.html").read_text("utf-8")
    tile = credits_tile(html)
    assert f">{summary.credits:,.1f}<" in tile.replace(" ", ""), "the batch's own credits"
    assert "1 job no longer in the manifest" in tile
    assert f"{summary.removed_credits:,.1f} credits" in tile and "not counted" in tile
    assert "rounded up" in tile, "the service bills whole credits per task"


def test_status_counts_the_batch_the_same_way(tmp_path: Path) -> None:
    from liangxin_batch import read_status
    from liangxin_batch.state._status import format_status

    async def main() -> Any:
        env = SimEnv()
        await env.run_library(tmp_path, rows("a", "b", "c"))
        return await env.run_library(tmp_path, rows("a", "b"))

    summary = in_virtual_time(main)
    status = read_status(tmp_path)
    assert status.by_state == summary.counts == {"succeeded": 2}
    assert sum(sum(c.values()) for c in status.by_model.values()) == 2
    assert (status.credits, status.removed_jobs) == (summary.credits, 1)
    assert status.removed_credits == summary.removed_credits > 0
    said = format_status(status)
    assert "1 job no longer in the manifest" in said and "not counted" in said


def test_a_removed_jobs_estimated_credits_are_counted_once(tmp_path: Path) -> None:
    """The removed jobs' credits were `total + estimated`, and `total` already holds the
    estimate: a job the service did not bill for showed twice its estimate."""
    import json

    from liangxin_batch import read_status
    from liangxin_batch.core._states import JobState
    from liangxin_batch.outputs._gallery import credit_notes
    from liangxin_batch.state._store import StateStore
    from tests.state_support import drive

    store = StateStore.in_dir(tmp_path)
    store.upsert_jobs(
        [(j, i, "z-image", json.dumps({"prompt": j}), "{}", j) for i, j in enumerate("ab")]
    )
    drive(store, "b", JobState.DONE, task_id="t-b", credits=None, credits_estimated=2.0)
    store.start_membership()
    store.mark_seen(["a"])
    assert store.end_membership() == 1  # b left the manifest
    notes = credit_notes(store)
    store.close()
    assert read_status(tmp_path).removed_credits == 2.0
    assert any("(2.0 credits)" in note for note in notes), notes
