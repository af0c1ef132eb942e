"""The state's cost per job on each backend: a job's whole life through the store (the
intent before createTask, its taskId, success, a file's row, the download's end: five
commits, two of them durable), for SQLite (DIR/state.db) and PostgreSQL.

    .venv/bin/python bench/bench_state_backends.py                 # 2,000 jobs
    .venv/bin/python bench/bench_state_backends.py --url postgresql://u@host/db

Without --url, PostgreSQL is a throwaway server started as the tests start theirs
(tests/pg_support.py: loopback, fsync off), so its figure is the client's and the
protocol's cost, not a disk's: give --url for a real server. Prints, per backend, the
wall milliseconds a job's commits take on the caller's thread (what the event loop
would wait) and this process's CPU milliseconds for them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liangxin_batch.core._states import Event
from liangxin_batch.state._backends import open_state
from liangxin_batch.state._rows import FileRow


def one_life(url: str | None, folder: Path, jobs: int) -> tuple[float, float]:
    store = open_state(folder, url=url)
    with contextlib.closing(store):
        store.upsert_jobs(
            (f"j{i:07d}", i, "z-image", json.dumps({"prompt": f"p{i}"}), "{}", f"h{i}")
            for i in range(jobs)
        )
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(jobs):
            job_id, url_i = f"j{i:07d}", f"http://x/{i}.png"
            store.begin_attempt(job_id, 1)
            store.transition(job_id, Event.CREATED, attempt=1, task_id=f"t{i}")
            store.transition(job_id, Event.TASK_SUCCEEDED, result_urls=[url_i])
            store.record_file(FileRow(job_id, 0, url_i, f"o/{i}.png", "00" * 32, 100, 1))
            store.finish_download(job_id, 1, result_urls=[url_i])
        return (time.perf_counter() - wall) / jobs * 1e3, (time.process_time() - cpu) / jobs * 1e3


@contextlib.contextmanager
def throwaway_server() -> Iterator[str]:
    from tests.pg_support import running_server

    with running_server() as server:
        yield server.url()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--url", help="a PostgreSQL database to use (default: a throwaway one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(throwaway_server())
        for name, backend in (("sqlite", None), ("postgres", url)):
            wall, cpu = one_life(backend, Path(tmp) / name, args.jobs)
            print(
                f"{name:9s} {args.jobs:,} jobs: {wall:.2f} ms of commits per job on the "
                f"caller's thread, {cpu:.2f} ms CPU per job"
            )


if __name__ == "__main__":
    main()
