"""Reading LiangXin's answers: the `{code, msg, data}` envelope and task records.

Pure functions: no I/O. The client and the callback receiver both call these, so a
callback payload and a recordInfo answer are read by exactly the same code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from liangxin_batch.errors import api_error_for, redact

__all__ = [
    "TaskRecord",
    "TaskState",
    "check_envelope",
    "parse_result_urls",
    "parse_retry_after",
    "parse_task_record",
]


class TaskState(StrEnum):
    WAITING = "waiting"
    QUEUING = "queuing"
    GENERATING = "generating"
    SUCCESS = "success"
    FAIL = "fail"
    #: Anything the service says that we do not know: treated as still running.
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.SUCCESS, TaskState.FAIL)

    @classmethod
    def parse(cls, value: object) -> TaskState:
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        return cls.UNKNOWN


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task as recordInfo (or a callback) describes it."""

    task_id: str
    state: TaskState
    model: str | None = None
    raw_state: str | None = None
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_msg: str | None = None
    cost_time: float | None = None
    create_time: int | None = None
    complete_time: int | None = None
    credits_consumed: float | None = None
    #: The callBackUrl the task was created with (from `param`), to reconcile lost replies.
    callback_url: str | None = None

    @property
    def failure(self) -> tuple[str, str]:
        """The (error_code, error_message) a failed task is recorded with: the service's,
        or words of ours when it gave none."""
        return self.fail_code or "fail", self.fail_msg or "generation failed"


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def parse_result_urls(result_json: object) -> tuple[str, ...]:
    """URLs from `resultJson`, which is a JSON *string* ("" or null until success).

    A dict is accepted too, for services that send the object itself.
    """
    if result_json is None:
        return ()
    obj: object = result_json
    if isinstance(result_json, str):
        if not result_json.strip():
            return ()
        try:
            obj = json.loads(result_json)
        except json.JSONDecodeError:
            return ()
    if not isinstance(obj, Mapping):
        return ()
    urls = obj.get("resultUrls")
    if not isinstance(urls, list):
        return ()
    return tuple(u for u in urls if isinstance(u, str) and u)


def _callback_url_from_param(param: object) -> str | None:
    """`param` is the whole createTask body as a JSON string; read it defensively."""
    if isinstance(param, str):
        try:
            param = json.loads(param)
        except json.JSONDecodeError:
            return None
    if isinstance(param, Mapping):
        url = param.get("callBackUrl")
        return url if isinstance(url, str) and url else None
    return None


def parse_task_record(data: object, *, task_id: str | None = None) -> TaskRecord:
    """A TaskRecord from an envelope's `data`. Unknown extra fields are ignored."""
    if not isinstance(data, Mapping):
        if task_id is None:
            raise ValueError("task record has no data")
        return TaskRecord(task_id=task_id, state=TaskState.UNKNOWN)
    raw_state = _text(data.get("state"))
    complete = _number(data.get("completeTime"))
    create = _number(data.get("createTime"))
    return TaskRecord(
        task_id=_text(data.get("taskId")) or task_id or "",
        state=TaskState.parse(raw_state),
        model=_text(data.get("model")),
        raw_state=raw_state,
        result_urls=parse_result_urls(data.get("resultJson")),
        fail_code=_text(data.get("failCode")),
        fail_msg=_text(data.get("failMsg")),
        cost_time=_number(data.get("costTime")),
        create_time=int(create) if create is not None else None,
        complete_time=int(complete) if complete is not None else None,
        credits_consumed=_number(data.get("creditsConsumed")),
        callback_url=_callback_url_from_param(data.get("param")),
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if now is None:
        return None
    return max(0.0, when.timestamp() - now)


def check_envelope(
    http_status: int,
    body: bytes | str | None,
    *,
    retry_after: float | None = None,
    path: str | None = None,
    redact_with: str | None = None,
) -> Any:
    """Return `data` from a successful answer, or raise the matching APIError.

    The rule: HTTP status outside 2xx **or** a body `code` other than 200 is an error.
    An envelope is a JSON object with a readable `code`: only then does the code come
    from the service, and the error says so (`envelope=True`). Anything else (an HTML
    page, an empty body, JSON without `code`) is a bare HTTP status: `envelope=False`,
    the code taken from the status, and a short redacted snippet of the body kept as
    evidence. A 2xx that is not an envelope raises ValueError: the caller decides whether
    that is ambiguous (createTask) or retryable.
    """
    parsed: object = None
    if body:
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None
    code = _envelope_code(parsed)
    ok_status = 200 <= http_status < 300
    if code is None:
        if ok_status and not isinstance(parsed, Mapping):
            raise ValueError(f"unreadable answer (HTTP {http_status})")
        if ok_status:
            raise ValueError(f"answer without a code (HTTP {http_status})")
        raise api_error_for(
            http_status,
            f"HTTP {http_status}",
            http_status=http_status,
            retry_after=retry_after,
            envelope=False,
            path=path,
            snippet=snippet_of(body, redact_with),
        )
    assert isinstance(parsed, Mapping)
    if ok_status and code == 200:
        return parsed.get("data")
    message = parsed.get("msg") or parsed.get("message") or ""
    effective = code if code != 200 else http_status
    raise api_error_for(
        effective,
        redact(str(message), redact_with)[:SNIPPET] or f"HTTP {http_status}",
        http_status=http_status,
        retry_after=retry_after,
        path=path,
    )


#: How much of an unexpected body an error keeps as evidence.
SNIPPET = 200


def snippet_of(body: bytes | str | None, secret: str | None = None) -> str | None:
    """The start of a body, as text fit for a message: short, one line, redacted."""
    if not body:
        return None
    text = body[: SNIPPET * 4].decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())[:SNIPPET]
    return redact(text, secret) or None


def _envelope_code(parsed: object) -> int | None:
    """The envelope's `code` as a number (some copies send "200"); None: not an envelope."""
    if not isinstance(parsed, Mapping) or "code" not in parsed:
        return None
    code = parsed["code"]
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    try:
        return int(str(code).strip())
    except ValueError:
        return None
