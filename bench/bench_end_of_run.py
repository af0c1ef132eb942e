"""The end of a run of a big batch: results.csv and report.html written after 1,000 jobs
finished (`write_reports`, as run/_run.py calls it), in seconds and bytes written.

    .venv/bin/python bench/bench_end_of_run.py [--jobs 100000]

Uses bench_state.py's finished folder (built there once per size). A copy of it has its
1,000 pending jobs made done with a file each, straight in the state (as bench_state.py
builds the others), then the reports are written twice: after those changes, and again
with nothing changed (what a Ctrl-C right after a run's end would cost).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_state import build, refresh  # noqa: E402


def _written() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _finish_pending(work: Path) -> int:
    db = sqlite3.connect(work / "state.db")
    now = time.time()
    ids = [r[0] for r in db.execute("SELECT job_id FROM jobs WHERE state = 'pending'")]
    for job_id in ids:
        url = f"https://files.example/{job_id}.png"
        db.execute(
            "UPDATE jobs SET state = 'done', attempt = 1, task_id = 'task-' || ?1,"
            " submitted_at = ?2, completed_at = ?2, result_urls = json_array(?3),"
            " finished_by = 'poll', polls = 1 WHERE job_id = ?1",
            (job_id, now, url),
        )
        db.execute(
            "INSERT OR REPLACE INTO files (job_id, n, url, path, sha256, size, mtime_ns)"
            " VALUES (?, 0, ?, ?, '00', 1, 1)",
            (job_id, url, f"outputs/z-image/{job_id}.png"),
        )
    db.commit()
    db.close()
    return len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    from liangxin_batch.outputs._gallery import write_reports
    from liangxin_batch.state._store import StateStore

    base = Path(tempfile.gettempdir()) / "liangxin-bench-state" / str(args.jobs)
    manifest, out = build(base, args.jobs)
    refresh(out, manifest)
    work = base / "end-of-run"
    shutil.rmtree(work, ignore_errors=True)
    # The files (and any cache of results.csv's segments) shared by hard links: a writer
    # replaces a file, never writes into it.
    shutil.copytree(out, work, copy_function=os.link, ignore=shutil.ignore_patterns("state.db*"))
    shutil.copy2(out / "state.db", work / "state.db")
    StateStore.in_dir(work).close()  # migrations, not measured
    finished = _finish_pending(work)
    store = StateStore.in_dir(work)
    try:
        for label in (f"after {finished:,} jobs finished", "again, nothing changed"):
            before, t0 = _written(), time.perf_counter()
            write_reports(work, store, wall_seconds=60.0)
            took = time.perf_counter() - t0
            os.sync()
            kib = (_written() - before) / 1024
            print(f"end of run, {label:<28} {took:.2f}s, {kib:,.0f} KiB written", flush=True)
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
