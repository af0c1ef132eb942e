"""One account of a client: its key and its own createTask and recordInfo limits (the
service counts both per key), and whether it may still create tasks in this run."""

from __future__ import annotations

from liangxin_batch.core._settings import RunSettings
from liangxin_batch.errors import LiangXinError
from liangxin_batch.run._credentials import AccountKey
from liangxin_batch.run._places import CreatePlaces
from liangxin_batch.run._ratelimit import SlidingWindowLimiter

__all__ = ["Account", "AccountMissingError"]


class AccountMissingError(LiangXinError):
    """A task was created by an account that is not in this run's accounts: it is never
    asked about with another account's key."""


class Account:
    """One account of a client: its key and its own createTask and recordInfo limits
    (the service counts both per key)."""

    __slots__ = ("create_limiter", "create_places", "key", "name", "poll_limiter", "stopped")

    def __init__(self, account: AccountKey, settings: RunSettings) -> None:
        self.name = account.name
        self.key = account.key
        create_limit, create_window = account.spec.rate or (
            settings.create_limit,
            settings.create_window,
        )
        poll_limit, poll_window = account.spec.poll_rate or (
            settings.poll_limit,
            settings.poll_window,
        )
        #: createTask: exact window, paced evenly with a small burst.
        self.create_limiter = SlidingWindowLimiter(
            create_limit, create_window, margin=settings.create_margin, burst=settings.create_burst
        )
        #: recordInfo: every attempt, whoever makes it.
        self.poll_limiter = SlidingWindowLimiter(poll_limit, poll_window)
        #: POSTs in progress: two, more only when two cannot keep the rate (_places).
        self.create_places = CreatePlaces(
            rate=create_limit / create_window, ceiling=settings.max_concurrent_creates
        )
        #: Why this account creates no more tasks in this run (a 402), None while it may.
        self.stopped: str | None = None

    def __repr__(self) -> str:
        return f"Account({self.name!r}, key=***)"
