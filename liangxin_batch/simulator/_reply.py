"""An API answer before it becomes HTTP: envelope fields, HTTP status, headers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._tasks import envelope

__all__ = ["NO_ACCESS", "Reply", "rate_limited"]

NO_ACCESS = "You do not have access permissions"


@dataclass(frozen=True, slots=True)
class Reply:
    """One API answer. `drop`: the task was created but no answer must be sent."""

    code: int
    msg: str
    data: Any = None
    http_status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False

    @property
    def body(self) -> dict[str, Any]:
        return envelope(self.code, self.msg, self.data)


def rate_limited(wait: float, what: str, limit: int, window: float) -> Reply:
    # Retry-After carries whole seconds, rounded up so obeying it works; the epsilon
    # keeps float noise (7.000000001) from adding a whole second.
    seconds = max(1, math.ceil(wait - 1e-6))
    return Reply(
        429,
        f"Too many requests: at most {limit} {what} requests per {window:g} s; "
        f"retry after {seconds} s",
        http_status=429,
        headers={"Retry-After": str(seconds)},
    )
