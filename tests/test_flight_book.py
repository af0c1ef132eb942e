"""The in-flight count the submitter waits on, kept current between walks of the flights.

At the cap the submitter asks for the count once per create; a walk of every flight each
time made the client's CPU per job grow with the number in flight.
"""

from __future__ import annotations

import random
from typing import Any

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import JobState
from liangxin_batch.run._flight import RUNNING_REFRESH, FlightBook
from liangxin_batch.state._store import JobRow


def job(i: int) -> JobRow:
    base: dict[str, Any] = dict(
        job_id=f"j{i}", idx=i, model="z-image", input={"prompt": "p"},
        state=JobState.SUBMITTED, attempt=1, task_id=f"t{i}", submitted_at=0.0,
        completed_at=None, result_urls=(), error_code=None, error_message=None,
        credits=None, polls=0, content_hash="h", columns={},
    )  # fmt: skip
    return JobRow(**base)


def fresh(book: FlightBook, now: float) -> float:
    """What a walk of every flight says at `now`."""
    book._running = None
    return book.expected_running(now)


def test_the_count_between_walks_is_what_a_walk_would_say() -> None:
    rng = random.Random(3)
    book = FlightBook(catalog=default_catalog(), settings=RunSettings())
    probe = book.track(job(-1), "t-1", attempt=1, submitted_mono=0.0)
    for seconds in (8.0, 10.0, 11.0, 12.0, 15.0, 20.0):  # the kind is learned
        probe.estimate.observe(seconds)
    book.remove("t-1")
    live: list[str] = []
    now = 0.0
    for i in range(300):
        now += rng.uniform(0.0, 0.2)
        book.track(job(i), f"t{i}", attempt=1, submitted_mono=now)
        live.append(f"t{i}")
        if len(live) > 40:
            book.remove(live.pop(rng.randrange(len(live))))
        cached = book.expected_running(now)
        at, _ = book._running or (now, 0.0)
        if now - at < RUNNING_REFRESH:  # served from the last walk, kept current
            walked = fresh(book, at)  # what a walk at that moment says
            # Not exact: a new task also shifts its kind's Kaplan-Meier curve (one more
            # censored age) for the others; a small part of one task, never a whole one.
            assert abs(cached - walked) < 0.25, (i, cached, walked)
        assert 0.0 <= cached <= len(live) + 1e-9


def test_it_is_walked_again_once_the_tasks_have_aged() -> None:
    book = FlightBook(catalog=default_catalog(), settings=RunSettings())
    first = book.track(job(0), "t0", attempt=1, submitted_mono=0.0)
    for seconds in (1.0, 1.0, 1.0, 1.0, 1.0, 1.0):
        first.estimate.observe(seconds)
    assert book.expected_running(0.5) > 0.5  # younger than every generation seen
    assert book.expected_running(5.0) < 0.5, "older than all of them: likely finished"
