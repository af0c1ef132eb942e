"""Previews of a finished folder: `ensure_previews` over N fresh output images (a state
whose files were recorded with no preview, as a state from before previews were
recorded, or a run stopped before its previews, leaves them), then a rebuild that must
decode nothing.

    .venv/bin/python bench/bench_previews.py                  # 10,000 jobs
    .venv/bin/python bench/bench_previews.py --jobs 100000

The outputs are 1024 x 1024 images as the simulator draws them (half PNG, half JPEG;
96 distinct ones, each output a hard link to one, so 100,000 outputs take no disk).
Printed: the first pass (seconds, images a second, peak RSS, thumbnail bytes), the
rebuild (seconds, and how many files PIL was asked to open: must be 0), and the query
the rebuild asks (`files_without_preview` on the finished state).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DISTINCT = 96


def build(out: Path, jobs: int) -> None:
    """A state of `jobs` done jobs with one image each, recorded with no preview."""
    from liangxin_batch.simulator._media import render_image
    from liangxin_batch.state._store import StateStore

    shutil.rmtree(out, ignore_errors=True)
    sources = out / "sources"
    sources.mkdir(parents=True)
    bodies = []
    for i in range(DISTINCT):
        fmt = ("png", "jpeg")[i % 2]
        path = sources / f"{i}.{fmt[:3].replace('jpe', 'jpg')}"
        path.write_bytes(render_image(f"a bench prompt number {i}", "bench", (1024, 1024), fmt))
        bodies.append(path)
    store = StateStore.in_dir(out)
    store.upsert_jobs(
        [
            (f"p{i:07d}", i, "z-image", '{"prompt": "p"}', '{"prompt": "p"}', f"h{i}")
            for i in range(jobs)
        ]
    )
    store.close()
    folder = out / "outputs" / "z-image"
    folder.mkdir(parents=True)
    db = sqlite3.connect(out / "state.db")
    now = time.time()
    batch: list[tuple[Any, ...]] = []
    for i in range(jobs):
        job_id, source = f"p{i:07d}", bodies[i % DISTINCT]
        rel = f"outputs/z-image/{job_id}{source.suffix}"
        os.link(source, out / rel)
        batch.append((job_id, rel, f"https://files.example/{job_id}{source.suffix}"))
        if len(batch) == 10_000 or i == jobs - 1:
            db.executemany(
                "UPDATE jobs SET state = 'done', attempt = 1, task_id = 'task-' || ?1,"
                " submitted_at = ?2, completed_at = ?2, result_urls = json_array(?3),"
                " finished_by = 'poll', polls = 1 WHERE job_id = ?1",
                [(j, now, u) for j, _, u in batch],
            )
            db.executemany(
                "INSERT INTO files (job_id, n, url, path, sha256, size) VALUES (?, 0, ?, ?, ?, ?)",
                [(j, u, r, "ab" * 32, (out / r).stat().st_size) for j, r, u in batch],
            )
            db.commit()
            batch = []
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the folder afterwards")
    args = parser.parse_args()

    from PIL import Image

    from liangxin_batch.outputs._thumbs import THUMBS_DIR, ensure_previews
    from liangxin_batch.state._store import StateStore

    out = Path(tempfile.gettempdir()) / "liangxin-bench-previews" / str(args.jobs)
    t0 = time.perf_counter()
    build(out, args.jobs)
    print(f"built {args.jobs:,} done jobs with an image each in {time.perf_counter() - t0:.1f}s")
    print(f"cpus: {os.cpu_count()}, workers: {args.workers or 'default'}")

    opened: list[object] = []
    original = Image.open

    def counting(fp: Any, *a: Any, **kw: Any) -> Any:
        opened.append(fp)
        return original(fp, *a, **kw)

    Image.open = counting
    store = StateStore.in_dir(out)
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        first = ensure_previews(store, out, workers=args.workers)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        thumbs = list((out / THUMBS_DIR).iterdir())
        size = sum(p.stat().st_size for p in thumbs)
        print(
            f"first pass: {wall:.1f}s wall, {cpu:.1f}s CPU, {args.jobs / wall:,.0f} images/s,"
            f" {first}, peak RSS {rss:.0f} MB, {len(opened):,} opened,"
            f" {len(thumbs):,} thumbnails averaging {size / max(1, len(thumbs)) / 1024:.1f} KB"
        )
        opened.clear()
        t0 = time.perf_counter()
        again = ensure_previews(store, out, workers=args.workers)
        print(
            f"rebuild: {(time.perf_counter() - t0) * 1000:.1f} ms, {again},"
            f" {len(opened)} file(s) opened"
        )
        t0 = time.perf_counter()
        assert store.files_without_preview() == []
        took = (time.perf_counter() - t0) * 1e6
        print(f"files_without_preview on the finished state: {took:.0f} µs")
    finally:
        Image.open = original
        store.close()
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
