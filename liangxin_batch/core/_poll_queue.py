"""Which submitted task is polled next: a due-time queue with at most one entry per task.

Pure: times are numbers the caller reads from its clock. A task moved earlier (a
callback's hint) keeps only its earliest due time; entries left behind by a move or a
finish are skipped when they reach the front, so the heap never needs a search. Tasks
whose time has come wait in a ready set for a recordInfo turn; when several wait, the
caller's priority (the likeliest finished) picks, not the order they came due in.

Ranking every waiting task for every turn cost O(waiting) per poll; with `fresh_for`, a
ranking is reused that long (priorities move slowly: they follow the tasks' ages), and
the tasks that came due since are placed into it by their own priority.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Callable

__all__ = ["PollQueue"]


class PollQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        #: The one live due time of each queued task; absent while none is queued.
        self._due: dict[str, float] = {}
        #: Due, waiting for a turn.
        self._ready: set[str] = set()
        #: The last ranking of the ready tasks (lowest priority first; entries of tasks
        #: no longer ready are skipped), when it was made, and the tasks not in it yet.
        self._ranked: list[tuple[tuple[float, float], str]] = []
        self._ranked_at = -math.inf
        self._unranked: list[str] = []

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._due

    def schedule(self, task_id: str, due: float) -> bool:
        """Queue `task_id` at `due`, unless it is already queued no later: True if moved."""
        if self._due.get(task_id, math.inf) <= due:
            return False
        self._due[task_id] = due
        heapq.heappush(self._heap, (due, next(self._seq), task_id))
        return True

    def discard(self, task_id: str) -> None:
        """Forget a task (finished): its heap entries are skipped from now on."""
        self._due.pop(task_id, None)
        self._ready.discard(task_id)

    def collect_due(self, now: float) -> bool:
        """Move every task due by `now` to the ready set; whether any is ready."""
        while (task_id := self.pop_due(now)) is not None:
            self._ready.add(task_id)
            self._unranked.append(task_id)
        return bool(self._ready)

    def take_ready(
        self,
        priority: Callable[[str], tuple[float, float]],
        *,
        now: float = 0.0,
        fresh_for: float = 0.0,
    ) -> str | None:
        """The ready task with the highest `priority` (it leaves the set), or None.

        With `fresh_for` > 0 the ranking made at most that long before `now` is used,
        with the tasks that came due since placed by their priority now."""
        if not self._ready:
            return None
        if not 0.0 <= now - self._ranked_at < fresh_for:
            self._ranked = sorted((priority(t), t) for t in self._ready)
            self._ranked_at = now
        else:
            for task_id in self._unranked:
                if task_id in self._ready:
                    bisect.insort(self._ranked, (priority(task_id), task_id))
        self._unranked.clear()
        while self._ranked:
            _, best = self._ranked.pop()
            if best in self._ready:
                self._ready.discard(best)
                return best
        raise AssertionError("a ready task missing from the ranking")  # pragma: no cover

    def next_due(self) -> float | None:
        """The earliest live due time, or None when nothing is queued."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> str | None:
        """The task whose time has come (it leaves the queue), or None."""
        self._drop_stale()
        if not self._heap or self._heap[0][0] > now:
            return None
        _, _, task_id = heapq.heappop(self._heap)
        del self._due[task_id]
        return task_id

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
