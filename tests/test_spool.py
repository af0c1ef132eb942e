"""The job spool: what validation built comes back unchanged, in order, as often as asked."""

from __future__ import annotations

from liangxin_batch.core._records import Job, SourceRef
from liangxin_batch.manifest._spool import JobSpool


def job(i: int) -> Job:
    return Job(
        job_id=f"j-{i:06d}",
        model="seedream/4.5-text-to-image",
        input={"prompt": f"a cat № {i} \u2028 «quoted»", "n": i, "tags": ["a", "b"], "x": 0.5},
        columns={"id": f"j-{i:06d}", "mood": "16:9"},
        index=i,
        content_hash=f"{i:064x}",
        source=SourceRef("m.csv", i + 2, None if i % 2 else "prompt"),
    )


def test_jobs_come_back_equal_in_order_and_twice() -> None:
    jobs = [job(i) for i in range(5000)]  # several flushes of the write buffer
    with JobSpool() as spool:
        for j in jobs:
            spool.add(j)
        assert spool.count == 5000
        assert spool.column_names == {"id", "mood"}
        assert list(spool) == jobs
        assert list(spool) == jobs, "a second walk starts again from the top"
        spool.add(job(5000))
        assert len(list(spool)) == 5001


def test_an_empty_spool_is_empty() -> None:
    with JobSpool() as spool:
        assert list(spool) == []
