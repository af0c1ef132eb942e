"""The poll queue: pure, so its rules are checked on plain numbers, without a loop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from liangxin_batch.core._clock import FixedClock
from liangxin_batch.core._poll_queue import PollQueue


def test_tasks_come_out_in_due_order_and_only_when_due() -> None:
    q = PollQueue()
    q.schedule("b", 5.0)
    q.schedule("a", 2.0)
    assert q.next_due() == 2.0
    assert q.pop_due(1.9) is None
    assert q.pop_due(2.0) == "a"
    assert q.pop_due(4.0) is None
    assert q.pop_due(9.0) == "b"
    assert q.next_due() is None and len(q) == 0


def test_a_hint_moves_a_poll_earlier_but_never_later() -> None:
    q = PollQueue()
    assert q.schedule("a", 10.0)
    assert not q.schedule("a", 12.0), "a later time must not push the queued poll back"
    assert q.schedule("a", 1.0)
    assert q.pop_due(1.0) == "a"
    assert q.pop_due(100.0) is None, "the superseded entry at 10 must not poll it twice"


def test_a_finished_task_is_never_popped() -> None:
    q = PollQueue()
    q.schedule("a", 1.0)
    q.discard("a")
    assert q.pop_due(5.0) is None and "a" not in q


def test_a_task_being_polled_can_be_queued_again_by_a_hint() -> None:
    q = PollQueue()
    q.schedule("a", 1.0)
    assert q.pop_due(1.0) == "a"
    assert q.schedule("a", 1.5)  # a callback's hint while the poll is out
    assert not q.schedule("a", 30.0)  # the poll's own answer asks for later: hint kept
    assert q.pop_due(1.5) == "a"


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 100)), max_size=60))
def test_each_task_pops_once_at_its_earliest_time(plan: list[tuple[str, float]]) -> None:
    q = PollQueue()
    earliest: dict[str, float] = {}
    for task, due in plan:
        q.schedule(task, due)
        earliest[task] = min(due, earliest.get(task, due))
    popped: list[tuple[str, float]] = []
    while (next_due := q.next_due()) is not None:
        next_task = q.pop_due(next_due)
        assert next_task is not None
        popped.append((next_task, next_due))
    assert dict(popped) == earliest and len(popped) == len(earliest)
    assert [d for _, d in popped] == sorted(d for _, d in popped)


def test_the_fixed_clock_moves_only_when_told() -> None:
    clock = FixedClock(monotonic=5.0, wall=100.0)
    clock.advance(2.5)
    assert (clock.monotonic(), clock.wall()) == (7.5, 102.5)


def test_ready_tasks_go_by_priority_not_by_when_they_came_due() -> None:
    q = PollQueue()
    q.schedule("early", 1.0)
    q.schedule("likely-done", 2.0)
    q.schedule("later", 9.0)
    assert not q.collect_due(0.5)
    assert q.collect_due(3.0)
    chance = {"early": 0.2, "likely-done": 0.9}
    assert q.take_ready(lambda t: (chance[t], 0.0)) == "likely-done"
    q.discard("early")  # finished by a callback while it waited
    assert q.take_ready(lambda t: (chance[t], 0.0)) is None
    assert q.collect_due(10.0) and q.take_ready(lambda t: (0.0, 0.0)) == "later"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["schedule", "collect", "take", "discard"]),
            st.integers(0, 9),
            st.floats(0, 1),
        ),
        max_size=80,
    )
)
def test_a_reused_ranking_takes_what_a_fresh_one_would(
    steps: list[tuple[str, int, float]],
) -> None:
    """With priorities that do not move, reusing a ranking (and placing the tasks that
    came due since) picks exactly what ranking everything each time picks."""
    priority = {f"t{i}": ((i * 7) % 10 / 10, float(i)) for i in range(10)}
    reused, fresh = PollQueue(), PollQueue()
    now = 0.0
    for op, i, x in steps:
        task = f"t{i}"
        now += x / 10
        for q in (reused, fresh):
            if op == "schedule":
                q.schedule(task, now + x)
            elif op == "collect":
                q.collect_due(now)
            elif op == "discard":
                q.discard(task)
        if op == "take":
            got = reused.take_ready(priority.__getitem__, now=now, fresh_for=1.0)
            assert got == fresh.take_ready(priority.__getitem__)
