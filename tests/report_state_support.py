"""A state moved at random by the store's own writes (transitions, files, membership):
what the report and results.csv tests compare a fast path with the full walk on."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

from liangxin_batch.core._states import Event, JobState
from liangxin_batch.state._rows import FileRow
from liangxin_batch.state._store import StateStore
from tests.state_support import drive

MODELS = ("z-image", "flux-2")
_SETTLED = (
    JobState.DONE,
    JobState.FAILED,
    JobState.SUBMITTED,
    JobState.SUCCEEDED,
    JobState.DOWNLOAD_FAILED,
    JobState.TIMED_OUT,
    JobState.UNKNOWN,
)


def job_rows(n: int, start: int = 0, stride: int = 1) -> list[tuple[str, int, str, str, str, str]]:
    """Jobs of two models whose manifest columns hold text a CSV must quote or defuse;
    `stride`: positions apart (spread over several segments of results.csv)."""
    return [
        (
            f"j{i:05d}",
            i * stride,
            MODELS[i % 2],
            json.dumps({"prompt": f"p{i}"}),
            json.dumps({"prompt": f'p{i}, "q"' if i % 3 else f"=p{i}", "n": i}),
            f"h{i}",
        )
        for i in range(start, start + n)
    ]


def finish(store: StateStore, out: Path, job_id: str, rnd: random.Random) -> None:
    """A job generated and its file downloaded, as a run leaves it."""
    url = f"http://x/{job_id}-{rnd.randrange(10**6)}.png"
    drive(store, job_id, JobState.SUBMITTED, task_id=f"t-{job_id}-{rnd.randrange(10**9)}")
    stamp = 1_700_000_000.0 + rnd.randrange(10_000)
    store.transition(
        job_id,
        Event.TASK_SUCCEEDED,
        result_urls=[url],
        completed_at=stamp + rnd.random() * 60,
        cost_time=rnd.choice([None, rnd.randrange(1, 90_000)]),
        credits=rnd.choice([None, 0.1 * rnd.randrange(1, 30)]),
        credits_estimated=0.5,
    )
    path = f"outputs/m/{job_id}.png"
    (out / path).parent.mkdir(parents=True, exist_ok=True)
    (out / path).write_bytes(b"x" * rnd.randrange(1, 5))
    size = (out / path).stat().st_size
    store.record_file(FileRow(job_id, 0, url, path, "ab" * 32, size, 1))
    store.finish_download(job_id, 1, result_urls=[url])


def move(store: StateStore, out: Path, job_id: str, rnd: random.Random) -> None:
    """One random change of a job through the store's writes."""
    job = store.get(job_id)
    assert job is not None
    if job.state is not JobState.PENDING and rnd.random() < 0.5:
        drive(store, job_id, JobState.PENDING)  # started over (retry, --resubmit)
        return
    target = rnd.choice(_SETTLED)
    if target is JobState.DONE:
        if job.state is JobState.PENDING:
            finish(store, out, job_id, rnd)
        return
    if job.state is JobState.PENDING:
        drive(
            store,
            job_id,
            target,
            task_id=None if target is JobState.UNKNOWN else f"t-{job_id}-{rnd.randrange(10**9)}",
        )


def random_state(
    out: Path, seed: int, jobs: int = 90, moves: int = 200, stride: int = 1
) -> StateStore:
    """A state of `jobs` jobs after `moves` random changes, a few jobs out of the
    manifest, a few done jobs' files gone from disk."""
    rnd = random.Random(seed)
    store = StateStore.in_dir(out)
    store.upsert_jobs(job_rows(jobs, stride=stride))
    ids = [f"j{i:05d}" for i in range(jobs)]
    for _ in range(moves):
        move(store, out, rnd.choice(ids), rnd)
    leave(store, rnd.sample(ids, 3))
    for job_id in rnd.sample(ids, 10):  # lost from disk (if it was done)
        (out / f"outputs/m/{job_id}.png").unlink(missing_ok=True)
    return store


def leave(store: StateStore, job_ids: list[str]) -> None:
    """These jobs leave the manifest, as a sync of a shorter manifest does."""
    store.start_membership()
    gone = set(job_ids)
    store.mark_seen([j.job_id for j in store.iter_jobs(in_manifest=True) if j.job_id not in gone])
    store.end_membership()


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of unsorted values; None when empty: the
    oracle the report's percentiles (a search of the state's index) are checked on."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
