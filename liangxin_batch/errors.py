"""Every error liangxin-batch raises on purpose.

```
LiangXinBatchError                  str() is a complete message for a person
├── ConfigError                     missing base URL or key, bad flag values
├── CatalogError                    a catalog file is malformed
├── ManifestError                   .problems; str() lists them with file:line
├── StateError                      the state file is unusable or belongs elsewhere
│   └── WorkerLostError             this worker's lease ran out; its jobs are another's
├── DiskFullError                   the disk under DIR is full; resume after freeing
└── LiangXinError                   talking to the service went wrong
    ├── TransportError              never got an answer
    │   ├── NotSentError            provably never reached the service: safe to retry
    │   └── AmbiguousError          may have reached it: a createTask may exist
    └── APIError                    an HTTP answer that says no; its evidence: .http_status,
        │                           .envelope (was it the service's JSON envelope?),
        │                           .api_code, .path, .snippet (redacted, short)
        ├── BadRequestError           400
        ├── AuthError                 401  stops the batch
        ├── InsufficientCreditsError  402  stops the batch
        ├── NotFoundError             404
        ├── UpstreamTimeoutError      408  retryable
        ├── InvalidInputError         422
        ├── RateLimitedError          429  retryable, nothing was created
        ├── QuotaExceededError        433  stops the batch
        ├── MaintenanceError          455  retryable, nothing was created
        ├── ServerError               500  retryable
        ├── GenerationFailedError     501
        └── FeatureDisabledError      505  stops the batch
```

Errors carry their evidence, not policy: what to do about them (may a createTask have
created a task? stop the batch?) is decided by pure functions in `core._states`, and the
exit code an error means is the CLI's (`cli._exit`).

No message built here ever contains the API key: messages are made from service
answers and our own text, and `redact()` scrubs anything that passes through.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar, Protocol


class _Located(Protocol):
    """A problem that can say where it is and what is wrong (`manifest.Problem`)."""

    def format(self) -> str: ...


__all__ = [
    "APIError",
    "AmbiguousError",
    "AuthError",
    "BadRequestError",
    "CatalogError",
    "ConfigError",
    "DiskFullError",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidInputError",
    "LiangXinBatchError",
    "LiangXinError",
    "MaintenanceError",
    "ManifestError",
    "NotFoundError",
    "NotSentError",
    "QuotaExceededError",
    "RateLimitedError",
    "ServerError",
    "StateError",
    "TransportError",
    "UpstreamTimeoutError",
    "WorkerLostError",
    "api_error_for",
    "redact",
]


_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def redact(text: str, secret: str | None = None) -> str:
    """Remove a secret (and any bearer token) from text that may reach a person."""
    if secret:
        text = text.replace(secret, "***")
    return _BEARER.sub(r"\1***", text)


class LiangXinBatchError(Exception):
    """Base class. `str(err)` is the whole message shown to the user."""


class ConfigError(LiangXinBatchError):
    """Configuration is missing or wrong (base URL, API key, a flag)."""


class CatalogError(LiangXinBatchError):
    """A catalog file could not be read or is malformed."""


class StateError(LiangXinBatchError):
    """The state file cannot be used (wrong manifest, changed jobs, newer schema)."""


class WorkerLostError(StateError):
    """One of several workers of a shared batch found its lease ended by another (a
    pause longer than the lease): its jobs are no longer its own, so it stops (exit 3;
    the same command joins again as a new worker)."""


class DiskFullError(LiangXinBatchError):
    """Writing under the output folder failed for want of space; what is committed stays."""


class ManifestError(LiangXinBatchError):
    """The manifest has problems; nothing was sent."""

    def __init__(self, problems: Sequence[_Located], *, total: int | None = None) -> None:
        self.problems = list(problems)
        self.total = total if total is not None else len(self.problems)
        lines = [p.format() for p in self.problems]
        rest = self.total - len(lines)
        if rest > 0:
            lines.append(f"... and {rest} more problem(s) not shown")
        head = f"{self.total} problem(s) in the manifest; nothing was sent:"
        super().__init__("\n".join([head, *lines]))


class LiangXinError(LiangXinBatchError):
    """Something went wrong talking to LiangXin."""

    retryable: ClassVar[bool] = False
    fatal: ClassVar[bool] = False


class TransportError(LiangXinError):
    """No answer was received."""

    retryable: ClassVar[bool] = True

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class NotSentError(TransportError):
    """The request provably never reached the service (e.g. the connection was refused)."""


class AmbiguousError(TransportError):
    """The request may have reached the service but no answer came back.

    For createTask this means a task may exist and may be billed: never repeat it blindly.
    """


class APIError(LiangXinError):
    """The service answered with an error code."""

    code: ClassVar[int] = 0
    hint: ClassVar[str] = ""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        envelope: bool = True,
        path: str | None = None,
        snippet: str | None = None,
    ) -> None:
        self.message = message
        self.api_code = code if code is not None else self.code
        self.http_status = http_status
        self.retry_after = retry_after
        #: The answer was the service's JSON envelope. False: a bare HTTP status (an HTML
        #: page, an empty or non-envelope body), which may come from a proxy in between.
        self.envelope = envelope
        self.path = path
        #: The start of the body, redacted (evidence for a person, never parsed again).
        self.snippet = snippet
        if envelope:
            text = f"LiangXin answered {self.api_code}: {message}"
        else:
            where = f" from {path}" if path else ""
            text = f"HTTP {http_status}{where} without a LiangXin answer"
            if snippet:
                text += f" (body: {snippet!r})"
        if self.hint:
            text += f" ({self.hint})"
        super().__init__(text)


class BadRequestError(APIError):
    code = 400


class AuthError(APIError):
    code = 401
    fatal = True
    hint = "check LIANGXIN_API_KEY"


class InsufficientCreditsError(APIError):
    code = 402
    fatal = True
    hint = "top up the account, then run the same command again to continue"


class NotFoundError(APIError):
    code = 404


class UpstreamTimeoutError(APIError):
    code = 408
    retryable = True


class InvalidInputError(APIError):
    code = 422


class RateLimitedError(APIError):
    code = 429
    retryable = True


class QuotaExceededError(APIError):
    code = 433
    fatal = True
    hint = "the API key's usage cap is reached; raise it in the console or use another key"


class MaintenanceError(APIError):
    code = 455
    retryable = True


class ServerError(APIError):
    code = 500
    retryable = True


class GenerationFailedError(APIError):
    code = 501


class FeatureDisabledError(APIError):
    code = 505
    fatal = True
    hint = "this feature is disabled for the account"


_BY_CODE: dict[int, type[APIError]] = {
    cls.code: cls
    for cls in (
        BadRequestError,
        AuthError,
        InsufficientCreditsError,
        NotFoundError,
        UpstreamTimeoutError,
        InvalidInputError,
        RateLimitedError,
        QuotaExceededError,
        MaintenanceError,
        ServerError,
        GenerationFailedError,
        FeatureDisabledError,
    )
}


def api_error_for(
    code: int,
    message: str,
    *,
    http_status: int | None = None,
    retry_after: float | None = None,
    envelope: bool = True,
    path: str | None = None,
    snippet: str | None = None,
) -> APIError:
    """The APIError subclass for an API code; unknown 5xx count as server errors."""
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = ServerError if code >= 500 else APIError
    return cls(
        message,
        code=code,
        http_status=http_status,
        retry_after=retry_after,
        envelope=envelope,
        path=path,
        snippet=snippet,
    )
