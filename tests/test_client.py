"""The client against scripted answers: every envelope quirk and error code."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import liangxin_batch.errors as E
from liangxin_batch.core._envelope import TaskRecord, TaskState
from liangxin_batch.run._client import LiangXinClient
from tests.virtual_time import run_virtual

KEY = "sk-test-SECRET-0123456789abcdef"

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, **kw: Any) -> LiangXinClient:
    return LiangXinClient(
        api_key=KEY,
        base_url="http://lx.test",
        transport=httpx.MockTransport(handler),
        **kw,
    )


def envelope(code: int, msg: str = "", data: object = None, *, key: str = "msg") -> bytes:
    return json.dumps({"code": code, key: msg, "data": data}).encode()


def call(handler: Handler, method: str, *args: object) -> object:
    async def main() -> object:
        async with client_for(handler) as c:
            return await getattr(c, method)(*args)

    return run_virtual(main)


def get_task(handler: Handler, task_id: str) -> TaskRecord:
    """`call(handler, "get_task", task_id)`, typed."""

    async def main() -> TaskRecord:
        async with client_for(handler) as c:
            return await c.get_task(task_id)

    return run_virtual(main)


def test_create_task_sends_bearer_and_body() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(
            200, content=envelope(200, "success", {"taskId": "t1", "recordId": 9})
        )

    assert call(handler, "create_task", "z-image", {"prompt": "p"}, "https://cb/x") == "t1"
    req = seen[0]
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.url.path == "/api/v1/jobs/createTask"
    assert json.loads(req.content) == {
        "model": "z-image",
        "input": {"prompt": "p"},
        "callBackUrl": "https://cb/x",
    }


@pytest.mark.parametrize(
    ("code", "cls", "retryable", "fatal"),
    [
        (400, E.BadRequestError, False, False),
        (401, E.AuthError, False, True),
        (402, E.InsufficientCreditsError, False, True),
        (404, E.NotFoundError, False, False),
        (408, E.UpstreamTimeoutError, True, False),
        (422, E.InvalidInputError, False, False),
        (429, E.RateLimitedError, True, False),
        (433, E.QuotaExceededError, False, True),
        (455, E.MaintenanceError, True, False),
        (500, E.ServerError, True, False),
        (501, E.GenerationFailedError, False, False),
        (505, E.FeatureDisabledError, False, True),
    ],
)
def test_body_code_errors_on_http_200(
    code: int, cls: type[E.APIError], retryable: bool, fatal: bool
) -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, content=envelope(code, f"boom {code}"))

    with pytest.raises(cls) as info:
        call(handler, "create_task", "z-image", {"prompt": "p"})
    err = info.value
    assert err.api_code == code
    assert err.message == f"boom {code}"
    assert err.retryable is retryable
    assert err.fatal is fatal
    assert calls == 1, "createTask must never be retried by the client"


def test_http_status_error_without_body_uses_status() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "7"}, content=b"slow down")

    with pytest.raises(E.RateLimitedError) as info:
        call(handler, "create_task", "z-image", {"prompt": "p"})
    assert info.value.retry_after == 7.0
    assert info.value.http_status == 429


def test_body_code_wins_over_http_status() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=envelope(402, "The current credits are insufficient."))

    with pytest.raises(E.InsufficientCreditsError):
        call(handler, "create_task", "z-image", {"prompt": "p"})


def test_message_falls_back_to_message_key_and_data_may_be_null() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=envelope(422, "bad ratio", None, key="message"))

    with pytest.raises(E.InvalidInputError, match="bad ratio"):
        call(handler, "create_task", "z-image", {"prompt": "p"})


def test_record_info_parses_result_json_string_and_ignores_extras() -> None:
    data = {
        "taskId": "t1",
        "model": "z-image",
        "state": "success",
        "param": "{}",
        "resultJson": json.dumps({"resultUrls": ["https://f/a.png", "https://f/b.png"]}),
        "costTime": 8123,
        "completeTime": 1700000000000,
        "creditsConsumed": 0.8,
        "somethingNew": {"x": 1},
    }

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.params["taskId"] == "t1"
        return httpx.Response(200, content=envelope(200, "success", data))

    rec = get_task(handler, "t1")
    assert rec.state is TaskState.SUCCESS
    assert rec.result_urls == ("https://f/a.png", "https://f/b.png")
    assert rec.credits_consumed == 0.8


@pytest.mark.parametrize("result_json", ["", None, "not json", "[]", '{"resultUrls": "x"}'])
def test_record_info_tolerates_empty_or_odd_result_json(result_json: object) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        data = {"taskId": "t1", "state": "generating", "resultJson": result_json}
        return httpx.Response(200, content=envelope(200, "success", data))

    rec = get_task(handler, "t1")
    assert rec.result_urls == ()


@pytest.mark.parametrize("state", ["processing", "pending", "", None, 3, "SUCCESS!"])
def test_unknown_state_counts_as_running(state: object) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=envelope(200, "ok", {"taskId": "t1", "state": state}))

    rec = get_task(handler, "t1")
    assert rec.state is TaskState.UNKNOWN
    assert not rec.state.terminal


def test_failed_task_is_code_200_with_state_fail() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        data = {"taskId": "t1", "state": "fail", "failCode": "422", "failMsg": "prohibited"}
        return httpx.Response(200, content=envelope(200, "success", data))

    rec = get_task(handler, "t1")
    assert rec.state is TaskState.FAIL
    assert (rec.fail_code, rec.fail_msg) == ("422", "prohibited")


def test_idempotent_calls_retry_and_honour_retry_after() -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "3"}, content=envelope(429, "slow")),
        httpx.Response(200, content=envelope(500, "oops")),
        httpx.Response(200, content=envelope(200, "success", 1234)),
    ]

    async def main() -> tuple[int, list[float]]:
        import asyncio

        loop = asyncio.get_running_loop()
        times: list[float] = []

        def handler(req: httpx.Request) -> httpx.Response:
            times.append(loop.time())
            return answers[len(times) - 1]

        async with client_for(handler) as c:
            return await c.get_credits(), times

    credits, times = run_virtual(main)
    assert credits == 1234
    assert len(times) == 3
    assert times[1] - times[0] == pytest.approx(3.0)


def test_idempotent_call_gives_up_on_non_retryable() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, content=envelope(401, "You do not have access permissions"))

    with pytest.raises(E.AuthError):
        call(handler, "get_credits")
    assert calls == 1


def test_connect_error_is_not_sent_and_read_error_is_ambiguous() -> None:
    def refuse(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    def drop(req: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed", request=req)

    with pytest.raises(E.NotSentError):
        call(refuse, "create_task", "z-image", {"prompt": "p"})
    with pytest.raises(E.AmbiguousError):
        call(drop, "create_task", "z-image", {"prompt": "p"})


def test_unreadable_success_on_create_is_ambiguous() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>gateway</html>")

    with pytest.raises(E.AmbiguousError):
        call(handler, "create_task", "z-image", {"prompt": "p"})


def test_download_url_and_credits() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("download-url"):
            assert json.loads(req.content) == {"url": "https://f/a.png"}
            return httpx.Response(200, content=envelope(200, "success", "https://f/a.png?tmp=1"))
        return httpx.Response(200, content=envelope(200, "success", 100))

    assert call(handler, "get_download_url", "https://f/a.png") == "https://f/a.png?tmp=1"
    assert call(handler, "get_credits") == 100


def test_key_never_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"failed with header Bearer {KEY}", request=req)

    c = client_for(handler)
    assert KEY not in repr(c)
    assert KEY not in repr(c.__dict__)
    with pytest.raises(E.NotSentError) as info:
        call(handler, "create_task", "z-image", {"prompt": "p"})
    assert KEY not in str(info.value)
    assert "***" in str(info.value)


def test_missing_configuration_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIANGXIN_BASE_URL", raising=False)
    monkeypatch.delenv("LIANGXIN_API_KEY", raising=False)
    with pytest.raises(E.ConfigError, match="LIANGXIN_BASE_URL"):
        LiangXinClient(api_key=KEY)
    with pytest.raises(E.ConfigError, match="LIANGXIN_API_KEY"):
        LiangXinClient(base_url="http://x")
    with pytest.raises(E.ConfigError, match="http"):
        LiangXinClient(api_key=KEY, base_url="ftp://x")
