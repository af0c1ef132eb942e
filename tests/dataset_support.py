"""A batch folder for the dataset exports' tests: real image files (PNG, JPEG, WebP), a
video, hostile prompts, jobs of several images, a lost file, jobs that did not succeed;
and results.csv's text of a typed value read back by a dataset library."""

from __future__ import annotations

import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from liangxin_batch.core._states import Event, JobState
from liangxin_batch.outputs._columns import _iso, _number
from liangxin_batch.state._rows import FileRow
from liangxin_batch.state._store import StateStore
from tests.state_support import drive

#: Prompts a dataset must carry intact.
HOSTILE = (
    "<b>\"quoted\"</b> & 'single'",
    "雪の猫 🐱‍👤 漢字",
    "line one\nline two\r\n\ttabbed",
    "=1+1,comma;semi",
    "x" * 3000,
)


def image_bytes(colour: tuple[int, int, int], fmt: str, size: tuple[int, int] = (6, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def _finish(
    store: StateStore, out: Path, job_id: str, files: list[tuple[str, bytes]], at: float
) -> None:
    """Generated and every file downloaded (`files`: (path relative to out, bytes))."""
    urls = [f"http://x/{job_id}/{i}{Path(p).suffix}" for i, (p, _) in enumerate(files)]
    drive(store, job_id, JobState.SUBMITTED, task_id=f"task-{job_id}", submitted_at=at)
    store.transition(
        job_id,
        Event.TASK_SUCCEEDED,
        result_urls=urls,
        completed_at=at + 12.345678,
        cost_time=9876,
        credits=1.5,
        credits_estimated=2.0,
    )
    for n, (path, data) in enumerate(files):
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(data)
        store.record_file(FileRow(job_id, n, urls[n], path, f"{n:064d}", len(data), 1))
    assert store.finish_download(job_id, len(files), result_urls=urls)


def build_batch(out: Path, *, jobs: int = 12) -> dict[str, Any]:
    """A state in `out` of `jobs` jobs (at least 12): what each kind is, by job id."""
    assert jobs >= 12
    store = StateStore.in_dir(out)
    rows = []
    for i in range(jobs):
        job_id = f"j{i:04d}.v1" if i % 4 == 1 else f"j{i:04d}"  # a dot: not in a key
        if i == 10:
            job_id += "L" * 95  # the longest id a manifest takes: a tar's long name
        prompt = HOSTILE[i % len(HOSTILE)]
        columns = {
            "prompt": prompt,
            "n": i,  # a number in the manifest (YAML): text in the table, as results.csv
            "image": f"ref-{i}",  # clashes with the dataset's image column
            "mask_file_name": f"mask{i}.png",  # imagefolder would load it as an image
            "_subject": "cat" if i % 2 else None,
        }
        model = ("z-image", "flux-2")[i % 2]
        rows.append((job_id, i, model, json.dumps({"prompt": prompt}), json.dumps(columns), "h"))
    store.upsert_jobs(rows)
    kinds: dict[str, Any] = {"several": [], "video": [], "lost": [], "other": [], "one": []}
    for i, (job_id, *_rest) in enumerate(rows):
        at = 1_700_000_000.25 + i * 61.5
        base = f"outputs/{job_id}"
        colour = (i * 20 % 256, 40, 200)
        if i == 3:  # generation failed: no row
            drive(store, job_id, JobState.FAILED, error_code="501", error_message="no")
            kinds["other"].append(job_id)
        elif i == 4:  # still pending: no row
            kinds["other"].append(job_id)
        elif i == 5:  # a video alone: no row, counted
            _finish(store, out, job_id, [(f"{base}.mp4", b"\x00\x00\x00\x18ftypmp42")], at)
            kinds["video"].append(job_id)
        elif i in (2, 7):  # several images (and a video among them): a row per image
            files = [
                (f"{base}-0.png", image_bytes(colour, "PNG")),
                (f"{base}-1.jpg", image_bytes(colour, "JPEG", (5, 5))),
                (f"{base}-2.mp4", b"\x00\x00\x00\x18ftypmp42"),
                (f"{base}-3.webp", image_bytes(colour, "WEBP", (3, 7))),
            ]
            _finish(store, out, job_id, files, at)
            kinds["several"].append(job_id)
        elif i == 9:  # done, but its file is gone from disk: skipped, counted
            _finish(store, out, job_id, [(f"{base}.png", image_bytes(colour, "PNG"))], at)
            (out / f"{base}.png").unlink()
            kinds["lost"].append(job_id)
        else:
            _finish(store, out, job_id, [(f"{base}.png", image_bytes(colour, "PNG"))], at)
            kinds["one"].append(job_id)
    store.close()
    return kinds


def iso_as_text(value: str | None) -> str:
    """A timestamp as the JSON of a webdataset sample holds it (ISO-8601, UTC), as
    results.csv writes it."""
    return "" if value is None else _iso(datetime.fromisoformat(value).timestamp())


def as_text(value: Any) -> str:
    """A typed value read back (a number, a timestamp, None) as results.csv writes it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        raise AssertionError(f"no column is boolean: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, datetime):  # pandas' Timestamp is one too
        return _iso(value.timestamp())
    if isinstance(value, str):
        return value
    raise AssertionError(f"unexpected type {type(value)}: {value!r}")
