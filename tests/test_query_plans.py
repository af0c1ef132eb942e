"""Every query the tool makes over a state walks an index: no full scan of a table
followed by a sort (`SCAN jobs` + `USE TEMP B-TREE`), so a pass over a million jobs
stays linear and a page costs the same at any size. Checked on the queries as they run
(traced), through the entry points that walk the state."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from liangxin_batch.core._states import Event, JobState
from liangxin_batch.outputs._gallery import write_reports
from liangxin_batch.outputs._report import export, write_results_csv
from liangxin_batch.outputs._segments import write_results_by_segments
from liangxin_batch.state._rows import FileRow
from liangxin_batch.state._status import read_status
from liangxin_batch.state._store import StateStore
from tests.state_support import drive
from tests.test_store import rows

#: Queries allowed to read every row: they count or sum what the state holds, once,
#: through a covering index where there is one.
_AGGREGATES = re.compile(r"\b(COUNT|SUM)\(", re.I)
_BAD = re.compile(r"SCAN (jobs|files|attempts|events)\b(?! USING (COVERING )?INDEX)|TEMP B-TREE")


def traced(store: StateStore) -> list[str]:
    seen: list[str] = []
    store.sqlite.set_trace_callback(seen.append)
    return seen


def plan(db: sqlite3.Connection, sql: str) -> str:
    return "\n".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}"))


def populated(tmp_path: Path) -> StateStore:
    store = StateStore.in_dir(tmp_path)
    store.upsert_jobs(rows(60))
    for i in range(40):
        job_id = f"j{i:05d}"
        drive(store, job_id, JobState.SUBMITTED, task_id=f"t{i}")
        if i < 30:
            store.transition(
                job_id,
                Event.TASK_SUCCEEDED,
                result_urls=[f"http://x/{i}.png"],
                completed_at=1000.0 + i,
                generation_seconds=5.0,
            )
            path = f"outputs/m/{job_id}.png"
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_bytes(b"x")
            store.record_file(FileRow(job_id, 0, f"http://x/{i}.png", path, "00", 1, 1))
            store.finish_download(job_id, 1, result_urls=[f"http://x/{i}.png"])
    return store


def walks(tmp_path: Path) -> list[str]:
    """Every SELECT the state's walkers ran, with their values in."""
    store = populated(tmp_path)
    seen = traced(store)
    for state in JobState:
        list(store.iter_jobs([state]))
    list(store.iter_jobs(in_manifest=True))
    list(store.iter_jobs())
    store.job_ids(JobState.PENDING)
    store.done_files()
    store.path_holders("outputs/m/j00001.png")
    store.report_files([f"j{i:05d}" for i in range(10)])
    list(store.iter_report_jobs())
    list(store.iter_report_jobs([JobState.DONE, JobState.FAILED]))
    list(store.column_names())
    store.recent_generations()
    store.oldest_in_flight()
    store.recent_problems()
    store.submits_since(0.0)
    store.get("j00001")
    store.by_task_id("t1")
    write_results_csv(tmp_path, store)
    export(tmp_path, store, "jsonl", tmp_path / "x.jsonl")
    write_reports(tmp_path, store, check_files=True)  # report.html: tallies, an index
    write_results_by_segments(tmp_path, store)  # results.csv: a walk of each segment
    store.generation_percentiles("z-image", (95,))
    store.sqlite.set_trace_callback(None)
    store.close()
    return [s for s in seen if s.lstrip().upper().startswith("SELECT")]


def test_every_walk_of_the_state_uses_an_index(tmp_path: Path) -> None:
    queries = walks(tmp_path)
    assert len(queries) > 20
    db = sqlite3.connect(tmp_path / "state.db")
    bad = {}
    for sql in queries:
        shown = plan(db, sql)
        if _BAD.search(shown) and not _AGGREGATES.search(sql):
            bad[sql] = shown
    assert bad == {}


@pytest.mark.parametrize("aggregate", ["counts", "status"])
def test_the_counts_come_from_an_index_or_a_tally(tmp_path: Path, aggregate: str) -> None:
    store = populated(tmp_path)
    seen = traced(store)
    if aggregate == "counts":
        store.counts(in_manifest=True)
    store.sqlite.set_trace_callback(None)
    store.close()
    if aggregate == "status":
        read_status(tmp_path)
    db = sqlite3.connect(tmp_path / "state.db")
    for sql in seen:
        if "FROM tallies" in sql:  # a few rows per model and state: sorting them is free
            continue
        if sql.lstrip().upper().startswith("SELECT"):
            assert "TEMP B-TREE" not in plan(db, sql), sql


def test_report_summary_and_segments_walk_their_indexes(tmp_path: Path) -> None:
    """A percentile is a search of jobs_report_seconds; a segment of results.csv a range
    of jobs_by_position (never a scan of every job for one segment)."""
    store = populated(tmp_path)
    seen = traced(store)
    store.generation_percentiles("z-image", (50,))
    write_results_by_segments(tmp_path, store)
    store.sqlite.set_trace_callback(None)
    store.close()
    db = sqlite3.connect(tmp_path / "state.db")
    plans = {sql: plan(db, sql) for sql in seen if sql.lstrip().upper().startswith("SELECT")}
    seconds = [p for sql, p in plans.items() if "jobs_report_seconds" in sql]
    assert seconds and all("USING INDEX jobs_report_seconds" in p for p in seconds)
    segment = [p for sql, p in plans.items() if "jobs.idx >= " in sql]
    assert segment and all(
        "jobs_by_position (in_manifest=? AND idx>? AND idx<?)" in p for p in segment
    )


def test_the_summary_names_unknown_jobs_by_their_state_not_by_a_walk(tmp_path: Path) -> None:
    """`job_ids(UNKNOWN)` (every run's summary) walked the manifest's order looking for
    an unknown job: 0.44 s at a million jobs, most of a Ctrl-C's way out."""
    store = populated(tmp_path)
    seen = traced(store)
    store.job_ids(JobState.UNKNOWN)
    query = next(q for q in seen if q.startswith("SELECT job_id FROM jobs"))
    assert "USING INDEX jobs_by_state (state=?)" in plan(store.sqlite, query), plan(
        store.sqlite, query
    )
    store.close()


def test_a_walk_of_one_state_in_the_manifest_goes_by_that_state(tmp_path: Path) -> None:
    """The submitter's walk of pending jobs went along the manifest's whole order
    (jobs_by_position) to find them: 0.56 s before a million-job resume's first create."""
    store = populated(tmp_path)
    seen = traced(store)
    list(store.iter_jobs([JobState.PENDING], in_manifest=True))
    list(store.iter_report_jobs([JobState.DONE, JobState.FAILED]))
    queries = [q for q in seen if q.startswith("SELECT")]
    assert queries
    for query in queries:
        assert "jobs_by_state (state=?" in plan(store.sqlite, query), plan(store.sqlite, query)
    store.close()
