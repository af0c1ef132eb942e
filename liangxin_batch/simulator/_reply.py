"""An API answer before it becomes HTTP: envelope fields, HTTP status, headers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._tasks import envelope

__all__ = [
    "ERROR_MESSAGES",
    "NO_ACCESS",
    "Reply",
    "gateway_page",
    "injected_error",
    "rate_limited",
    "wire_body",
]

NO_ACCESS = "You do not have access permissions"

#: Messages of injected errors (`FaultProfile.create_errors` / `poll_errors`), after the
#: service's documented meanings; any other code gets a generic one.
ERROR_MESSAGES = {
    400: "Bad request: the request could not be understood (simulated)",
    401: NO_ACCESS,
    402: "The current credits are insufficient. Please top up.",
    404: "The task does not exist or has not been created yet.",
    408: "Upstream has returned no result for more than 10 minutes (simulated)",
    422: "Request parameters failed validation (simulated)",
    429: "Too many requests (simulated)",
    433: "Sub-key usage exceeds its limit (simulated)",
    455: "Service unavailable: under maintenance (simulated)",
    500: "Server Error - an unexpected error occurred (simulated)",
    501: "Generation failed (simulated)",
    505: "This feature is disabled (simulated)",
}


@dataclass(frozen=True, slots=True)
class Reply:
    """One API answer. `drop`: the task was created but no answer must be sent.

    `bare`: send `msg` as the whole body with `http_status` (no JSON envelope), as
    `media_type` (plain text unless set).
    """

    code: int
    msg: str
    data: Any = None
    http_status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False
    bare: bool = False
    media_type: str = "text/plain"

    @property
    def body(self) -> dict[str, Any]:
        return envelope(self.code, self.msg, self.data)


def injected_error(code: int, style: str) -> Reply:
    """An injected error answer in `FaultProfile.error_style` ("body", "status", "bare")."""
    msg = ERROR_MESSAGES.get(code, f"Error {code} (simulated)")
    if style == "body":
        return Reply(code, msg)
    return Reply(code, msg, http_status=code, bare=style == "bare")


_GATEWAY_REASONS = {500: "Internal Server Error", 502: "Bad Gateway"}


def gateway_page(status: int) -> Reply:
    """A gateway's own HTML error page with HTTP `status`: no envelope at all."""
    title = f"{status} {_GATEWAY_REASONS.get(status, 'Error')}"
    page = f"<html><body><h1>{title}</h1></body></html>"
    return Reply(status, page, http_status=status, bare=True, media_type="text/html")


def wire_body(body: Mapping[str, Any], quirks: frozenset[str]) -> dict[str, Any]:
    """The envelope as sent, with the envelope-level `FaultProfile.quirks` applied."""
    out = dict(body)
    if "message_key" in quirks and "msg" in out:
        out = {("message" if k == "msg" else k): v for k, v in out.items()}
    if "string_code" in quirks and "code" in out:
        out["code"] = str(out["code"])
    if "extra_fields" in quirks:
        out["requestId"] = "req-sim-0001"
        out["serverTime"] = 1_700_000_000_000
        out["meta"] = {"region": "sim", "note": "unknown fields must be ignored"}
    return out


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
