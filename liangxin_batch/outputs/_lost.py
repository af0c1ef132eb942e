"""Which done jobs' files are gone or changed on disk, without reading the jobs: the
`report` command shows them as download_failed (`as_lost`), in its summary too, and
results.csv's cached segments holding one are written afresh (outputs/_segments.py)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from liangxin_batch.state._store import StateStore

__all__ = ["LostJobs", "lost_jobs"]


@dataclass(slots=True)
class LostJobs:
    """The done jobs whose current files are not as recorded."""

    by_model: Counter[str] = field(default_factory=Counter)
    positions: set[int] = field(default_factory=set)  # their `idx` (manifest order)


def lost_jobs(store: StateStore, out_dir: Path) -> LostJobs:
    """A stat of each current file of every done job (a narrow query, no row built):
    a file missing, or of another size than recorded, makes its job lost, as
    outputs/_jobs.py `_lost_file` decides."""
    found = LostJobs()
    seen: set[str] = set()  # a job of several files is counted once
    after = ("", -1)
    # A descriptor of the folder (paths looked up from it) where the platform allows.
    fd = None
    if os.stat in os.supports_dir_fd:
        try:
            fd = os.open(out_dir, os.O_RDONLY)
        except OSError:  # the lookups by path fail alike: every file is missing
            fd = None
    try:
        while page := store.done_current_files(after):
            for job_id, _n, idx, model, path, size in page:
                if job_id in seen:
                    continue
                try:
                    if fd is None:
                        on_disk = os.stat(os.path.join(out_dir, path)).st_size
                    else:
                        on_disk = os.stat(path, dir_fd=fd).st_size
                except OSError:
                    on_disk = None
                if on_disk is None or (size is not None and on_disk != size):
                    seen.add(job_id)
                    found.by_model[model] += 1
                    found.positions.add(idx)
            after = (page[-1][0], page[-1][1])
    finally:
        if fd is not None:
            os.close(fd)
    return found
