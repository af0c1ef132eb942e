"""A big finished batch for report.html's browser test and bench/bench_report.py, built
fast: the jobs through the store (`upsert_jobs`), then their results and files written
straight into the state as a finished run leaves them (as bench/bench_state.py does),
each output and its preview a hard link of one small real image."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from liangxin_batch.state._migrations import SEGMENT_JOBS
from liangxin_batch.state._store import StateStore

MODELS = ("google/nano-banana", "z-image", "flux-2/pro")
SUBJECTS = tuple(f"subject-{i:02d}" for i in range(24))
STYLES = ("photo", "ink", "oil", "pixel", "clay")
T0 = 1_750_000_000.0


def _image(fmt: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def build_big_state(out: Path, jobs: int, *, chunk: int = 20_000) -> float:
    """`jobs` jobs of three models (each prompt run by every model), 90% done with an
    output and a preview on disk (outputs on disk for the first `_ON_DISK` jobs only:
    the page never opens the others), 5% failed, 5% pending; the seconds it took."""
    t0 = time.perf_counter()
    StateStore.in_dir(out).close()  # the schema, as the store makes it
    png = _image("PNG", (64, 48), (200, 120, 40))
    jpeg = _image("JPEG", (64, 48), (40, 120, 200))
    (out / "thumbs").mkdir(exist_ok=True)
    for model in MODELS:
        (out / "outputs" / model.replace("/", "-")).mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(out / "state.db")
    db.execute("PRAGMA synchronous = OFF")  # a test's state: no crash to survive
    db.execute("PRAGMA cache_size = -200000")
    # The triggers that keep the tallies and the segment versions cost 2/3 of an insert:
    # set aside while the (new, empty) state is filled, their work done once at the end.
    triggers = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        " AND tbl_name IN ('jobs', 'files')"
    ).fetchall()
    for name, _sql in triggers:
        db.execute(f"DROP TRIGGER {name}")
    for lo in range(0, jobs, chunk):
        # A file has at most 65,000 links (ext4): a source per chunk of jobs.
        source, preview = out / f".source-{lo}.png", out / f".source-{lo}.jpg"
        source.write_bytes(png)
        preview.write_bytes(jpeg)
        rows, files = [], []
        for i in range(lo, min(jobs, lo + chunk)):
            rows.append(_job(i))
            if rows[-1][7] != "done":
                continue
            job_id, model = rows[-1][0], MODELS[i % 3]
            rel = f"outputs/{model.replace('/', '-')}/{job_id}.png"
            thumb = f"thumbs/{job_id}.jpg"
            os.link(preview, out / thumb)
            if i < _ON_DISK:
                os.link(source, out / rel)
            files.append((job_id, rows[-1][12][2:-2], rel, "ab" * 32, len(png), 64, 48, thumb))
        db.executemany(
            "INSERT INTO jobs (job_id, idx, model, input_json, columns_json, content_hash,"
            " in_manifest, state, attempt, task_id, submitted_at, completed_at, result_urls,"
            " error_code, error_message, credits, cost_time, finished_by, polls, updated_at,"
            " sends, generation_seconds)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO files (job_id, n, url, path, sha256, size, width, height, thumb)"
            " VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?)",
            files,
        )
        db.commit()
    micro = "CAST(ROUND(({}) * 1000000) AS INTEGER)"
    estimated = "CASE WHEN credits IS NULL THEN COALESCE(credits_estimated, 0) ELSE 0 END"
    db.executescript(
        f"""
        INSERT INTO tallies
            SELECT model, state, in_manifest, COALESCE(finished_by, ''), COUNT(*),
                   SUM({micro.format("COALESCE(credits, 0)")}), SUM({micro.format(estimated)})
            FROM jobs GROUP BY 1, 2, 3, 4;
        INSERT INTO result_segments SELECT DISTINCT idx / {SEGMENT_JOBS}, 1, 1 FROM jobs;
        INSERT INTO report_segments SELECT DISTINCT idx / {SEGMENT_JOBS}, 1, 1 FROM jobs;
        """
    )
    for _name, sql in triggers:
        db.execute(sql)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - t0


#: Jobs whose output file is on disk (the lightbox of the browser test opens these).
_ON_DISK = 2000


def _job(i: int) -> tuple[Any, ...]:
    """One row of `jobs` as a finished run leaves it."""
    job_id, model = f"b{i:07d}", MODELS[i % 3]
    subject, style = SUBJECTS[(i // 3) % 24], STYLES[(i // 72) % 5]
    prompt = f"a study of {subject} in {style}, take {i // 3}"
    columns = {"id": job_id, "prompt": prompt, "_subject": subject, "style": style}
    inputs = json.dumps({"prompt": prompt, "aspect_ratio": "4:3", "seed": i // 3})
    at = T0 + i
    head = (job_id, i, model, inputs, json.dumps(columns), f"h{i}")
    if i % 20 == 7:
        code = "500" if i % 40 == 7 else "422"
        return (*head, "failed", 1, f"task-{job_id}", at, at + 3, None, code,
                f"the model refused: {job_id}", 0.0, None, "poll", 1, at, 1, None)  # fmt: skip
    if i % 20 == 13:
        return (*head, "pending", 0, None, None, None, None, None, None, None, None, None, 0,
                at, 0, None)  # fmt: skip
    took = 4000 + (i * 7919) % 60_000
    url = json.dumps([f"https://files.example/{job_id}.png"])
    return (*head, "done", 1, f"task-{job_id}", at, at + took / 1000, url, None, None,
            (i % 5) * 0.5 + 1, took, "poll", 1, at, 1, took / 1000)  # fmt: skip


def tree_bytes(folder: Path) -> tuple[int, int]:
    """(files, bytes) under `folder`."""
    count = total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            count += 1
            total += os.stat(os.path.join(root, name)).st_size
    return count, total
