"""What provenance costs per job: the sidecar of a finished job (its state reads on the
loop's thread, its write in a worker), the resume's check that a sidecar exists (a stat
per file, in the walk that already stats each output), an `--embed-metadata` copy, and
the sync's upsert with the manifest file and line against one without.

    .venv/bin/python bench/bench_provenance.py              # 20,000 jobs
    .venv/bin/python bench/bench_provenance.py --jobs 100000

The state is built in a temporary folder (done jobs with one small PNG each, written
straight into the state as bench_state.py does) and removed afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from liangxin_batch.state._store import FileRow, StateStore  # noqa: E402

MODEL = "nano-banana-2"


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


def _rows(jobs: int, tag: str = "") -> list[tuple[str, int, str, str, str, str]]:
    rows = []
    for i in range(jobs):
        data = {"prompt": f"a benchmark prompt {tag}{i}, in some detail", "aspect_ratio": "1:1"}
        text = json.dumps(data, sort_keys=True)
        rows.append((f"s{i:07d}", i, MODEL, text, json.dumps(data), f"h{i}"))
    return rows


def build(out: Path, jobs: int) -> None:
    store = StateStore.in_dir(out)
    ids = store.source_ids([str(out / "prompts.csv")])
    source = next(iter(ids.values()))
    store.upsert_jobs(_rows(jobs), sources=[(source, i + 2) for i in range(jobs)])
    store.close()
    body = _png()
    digest = hashlib.sha256(body).hexdigest()
    folder = out / "outputs" / MODEL
    folder.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(out / "state.db")
    now = time.time()
    rows = []
    for i in range(jobs):
        job_id = f"s{i:07d}"
        rel = f"outputs/{MODEL}/{job_id}.png"
        (out / rel).write_bytes(body)
        rows.append((job_id, rel, f"https://files.example/{job_id}.png"))
    db.executemany(
        "UPDATE jobs SET state = 'done', attempt = 1, task_id = 'task-' || ?1,"
        " submitted_at = ?2, completed_at = ?2 + 9, result_urls = json_array(?3),"
        " credits = 8, cost_time = 9000, generation_seconds = 9 WHERE job_id = ?1",
        [(j, now, u) for j, _, u in rows],
    )
    db.executemany(
        "INSERT INTO files (job_id, n, url, path, sha256, size, mtime_ns, path_key)"
        " VALUES (?, 0, ?, ?, ?, ?, 0, lower(?))",
        [(j, u, r, digest, len(body), r) for j, r, u in rows],
    )
    db.commit()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    jobs = parser.parse_args().jobs

    from liangxin_batch.outputs._embed import embed_copy
    from liangxin_batch.outputs._sidecars import read_job, without_sidecar, write_sidecars

    with tempfile.TemporaryDirectory(prefix="liangxin-bench-prov-") as tmp:
        out = Path(tmp) / "out"
        build(out, jobs)
        store = StateStore.in_dir(out)
        ids = [f"s{i:07d}" for i in range(jobs)]

        t0 = time.perf_counter()
        records = [read_job(store, j) for j in ids]
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        for rec in records:
            assert rec is not None
            write_sidecars(out, rec)
        written = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (out / "outputs" / MODEL).glob("*.json")) / jobs
        files = [f for page in _pages(store) for f in page]
        t0 = time.perf_counter()
        assert not without_sidecar(out, files)
        checked = time.perf_counter() - t0
        few = records[: min(1000, jobs)]
        t0 = time.perf_counter()
        for rec in few:
            assert rec is not None
            embed_copy(out, rec.targets[0][1], rec.record)
        copied = time.perf_counter() - t0
        store.close()

        per = 1e6 / jobs
        print(f"{jobs:,} done jobs, one 64x64 PNG each")
        print(f"  sidecar, state reads (event loop): {read * per:7.1f} µs/job")
        print(f"  sidecar, JSON + atomic write (worker thread): {written * per:7.1f} µs/job")
        print(f"  sidecar size: {size:,.0f} bytes")
        print(f"  resume's check (a stat per file, worker thread): {checked * per:7.2f} µs/file")
        print(f"  --embed-metadata PNG copy: {copied * 1e6 / len(few):7.1f} µs/file")

    with tempfile.TemporaryDirectory(prefix="liangxin-bench-prov-") as tmp:
        rows = _rows(jobs)
        timings = {}
        for label, with_sources in (("without", False), ("with", True)):
            store = StateStore.in_dir(Path(tmp) / label)
            sid = next(iter(store.source_ids(["/data/prompts.csv"]).values()))
            sources = [(sid, i + 2) for i in range(jobs)] if with_sources else None
            t0 = time.perf_counter()
            for i in range(0, jobs, 2000):  # as the sync writes: 2,000 a batch
                chunk = rows[i : i + 2000]
                store.upsert_jobs(chunk, sources=sources[i : i + 2000] if sources else None)
            timings[label] = time.perf_counter() - t0
            store.close()
        print(
            f"  sync upsert without the manifest line: {timings['without'] * per:6.2f} µs/job,"
            f" with: {timings['with'] * per:6.2f} µs/job"
        )


def _pages(store: StateStore) -> list[list[FileRow]]:
    pages, after = [], ("", -1)
    while page := store.done_files(after):
        pages.append([rec for rec, _ in page])
        after = (page[-1][0].job_id, page[-1][0].n)
    return pages


if __name__ == "__main__":
    main()
