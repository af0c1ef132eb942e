"""Which done jobs' files are gone or changed on disk, without reading the jobs: the
`report` command shows them as download_failed (`as_lost`), in its summary too, and
results.csv's cached segments holding one are written afresh (outputs/_segments.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from liangxin_batch.outputs._jobs import _file_lost, _folder
from liangxin_batch.state._store import StateStore

__all__ = ["LostJobs", "lost_jobs"]


@dataclass(slots=True)
class LostJobs:
    """The done jobs whose current files are not as recorded."""

    by_model: Counter[str] = field(default_factory=Counter)
    positions: set[int] = field(default_factory=set)  # their `idx` (manifest order)


def lost_jobs(store: StateStore, out_dir: Path) -> LostJobs:
    """A stat of each current file of every done job (a narrow query, no row built):
    a file missing, or of another size than recorded, makes its job lost, as the walk
    of outputs/_jobs.py decides (`_file_lost`)."""
    found = LostJobs()
    seen: set[str] = set()  # a job of several files is counted once
    after = ("", -1)
    with _folder(out_dir) as base:
        assert base is not None  # `out_dir` is given
        while page := store.done_current_files(after):
            for job_id, _n, idx, model, path, size in page:
                if job_id in seen:
                    continue
                if _file_lost(base, path, size) is not None:
                    seen.add(job_id)
                    found.by_model[model] += 1
                    found.positions.add(idx)
            after = (page[-1][0], page[-1][1])
    return found
