"""report.html's summary comes from the state's tallies and an index of generation
times, not from a walk of every job: its numbers are those the walk gave."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from liangxin_batch.core._states import BILLED_STATES, JobState
from liangxin_batch.outputs._gallery import _Tally, write_report_html
from liangxin_batch.outputs._jobs import as_lost, report_jobs
from liangxin_batch.outputs._lost import lost_jobs
from liangxin_batch.outputs._report import generation_seconds, report_status
from liangxin_batch.state._store import StateStore
from tests.report_state_support import percentile, random_state
from tests.state_support import drive


def walked(store: StateStore, out: Path | None) -> dict[str, Any]:
    """The summary as the walk of every job made it (the code this replaced)."""
    jobs_by: dict[tuple[str, str], int] = defaultdict(int)
    seconds: dict[str, list[float]] = defaultdict(list)
    credits = estimated = 0.0
    first, last = math.inf, -math.inf
    for job, _kept, lost in report_jobs(store, out_dir=out):
        shown = as_lost(job, lost)
        jobs_by[(shown.model, report_status(shown.state))] += 1
        generated = shown.state in BILLED_STATES
        took = generation_seconds(shown)
        if took is not None and generated:
            seconds[shown.model].append(took)
        if shown.credits is not None:
            credits += shown.credits
        elif generated and shown.credits_estimated:
            estimated += shown.credits_estimated
        if shown.submitted_at:
            first = min(first, shown.submitted_at)
        if shown.completed_at:
            last = max(last, shown.completed_at)
    return {
        "jobs_by": {k: n for k, n in jobs_by.items() if n},
        "p50": {m: percentile(seconds[m], 50) for m, _ in jobs_by},
        "p95": {m: percentile(seconds[m], 95) for m, _ in jobs_by},
        "credits": round(credits, 6),
        "estimated": round(estimated, 6),
        "span": last - first if last >= first else None,
    }


def from_state(store: StateStore, out: Path | None) -> dict[str, Any]:
    tally = _Tally(store, None if out is None else lost_jobs(store, out).by_model)
    return {
        "jobs_by": {k: n for k, n in tally.jobs_by.items() if n},
        "p50": tally.p50,
        "p95": tally.p95,
        "credits": round(tally.credits, 6),
        "estimated": round(tally.credits_estimated, 6),
        "span": tally.span(),
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("check_files", [True, False])
def test_the_summary_from_the_state_is_the_walks(
    tmp_path: Path, seed: int, check_files: bool
) -> None:
    store = random_state(tmp_path, seed)
    out = tmp_path if check_files else None
    if check_files:  # seeds 0-4 lose files of done jobs (the check is exercised), 5 none
        assert (sum(lost_jobs(store, tmp_path).by_model.values()) > 0) == (seed != 5)
    assert from_state(store, out) == walked(store, out)
    store.close()


def test_lost_jobs_are_those_the_walk_finds(tmp_path: Path) -> None:
    store = random_state(tmp_path, 1)
    expected = {
        job.idx for job, _kept, lost in report_jobs(store, out_dir=tmp_path) if lost is not None
    }
    assert expected, "the state has lost files"
    assert lost_jobs(store, tmp_path).positions == expected
    store.close()


def test_every_done_job_is_lost_when_the_folder_is_gone(tmp_path: Path) -> None:
    store = random_state(tmp_path / "out", 2)
    expected = {
        job.idx
        for job, _kept, lost in report_jobs(store, out_dir=tmp_path / "gone")
        if lost is not None
    }
    assert expected and lost_jobs(store, tmp_path / "gone").positions == expected
    store.close()


def rate_tile(html: Path) -> str:
    """The success-rate tile's text, its markup dropped."""
    page = html.read_text("utf-8")
    tile = page[page.rindex('<div class="tile">', 0, page.index("Success rate")) :]
    tile = tile[: tile.index("</div></div>")]
    return " ".join(re.sub(r"<[^>]+>", " ", tile).split())


def test_the_success_rate_counts_finished_jobs_while_the_batch_runs(tmp_path: Path) -> None:
    """Two of ten jobs done, both succeeded, the rest waiting: 100% of the finished while
    the batch runs (not 20%), 20% of all once it is over."""
    store = StateStore.in_dir(tmp_path)
    store.upsert_jobs([(f"j{i}", i, "z-image", '{"prompt": "x"}', "{}", "h") for i in range(10)])
    for jid in ("j0", "j1"):
        drive(store, jid, JobState.DONE, task_id=f"t-{jid}", credits=1.0, result_urls=[])
    live = write_report_html(tmp_path, store, running=True)
    assert rate_tile(live) == "Success rate of finished 100.0%"
    done = write_report_html(tmp_path, store)
    assert rate_tile(done) == "Success rate 20.0%"
    store.close()
