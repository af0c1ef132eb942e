from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

import liangxin_batch.errors as E
from liangxin_batch.core._states import (
    TRANSITIONS,
    CreateVerdict,
    Event,
    JobState,
    decide_create_failure,
    may_have_created,
    recovery_step,
    target_of,
)
from liangxin_batch.run._client import LiangXinClient


@pytest.mark.parametrize(
    ("err", "verdict"),
    [
        (E.NotSentError("refused"), CreateVerdict.RETRY),
        (E.AmbiguousError("read timeout"), CreateVerdict.UNKNOWN),
        (E.RateLimitedError("slow"), CreateVerdict.RETRY),
        (E.MaintenanceError("maint"), CreateVerdict.RETRY),
        (E.ServerError("oops"), CreateVerdict.RETRY),
        (E.BadRequestError("bad"), CreateVerdict.REJECT),
        (E.InvalidInputError("bad ratio"), CreateVerdict.REJECT),
        (E.NotFoundError("no such model"), CreateVerdict.REJECT),
        # 408 and gateway errors may come after the task was created upstream.
        (E.UpstreamTimeoutError("408"), CreateVerdict.UNKNOWN),
        (E.GenerationFailedError("501"), CreateVerdict.UNKNOWN),
        (E.AuthError("key"), CreateVerdict.STOP),
        (E.InsufficientCreditsError("top up"), CreateVerdict.STOP),
        (E.QuotaExceededError("cap"), CreateVerdict.STOP),
        (E.FeatureDisabledError("off"), CreateVerdict.STOP),
        (E.api_error_for(502, "bad gateway"), CreateVerdict.UNKNOWN),
        (E.api_error_for(503, "unavailable"), CreateVerdict.UNKNOWN),
        (E.api_error_for(504, "gateway timeout"), CreateVerdict.UNKNOWN),
    ],
)
def test_create_failure_verdicts(err: E.LiangXinError, verdict: CreateVerdict) -> None:
    assert decide_create_failure(err, tries=1, window=10.0).verdict is verdict


def test_429_throttles_everyone_for_retry_after_or_a_window() -> None:
    d = decide_create_failure(E.RateLimitedError("x", retry_after=4.0), tries=1, window=10.0)
    assert d.throttle and d.delay == 4.0
    d = decide_create_failure(E.RateLimitedError("x"), tries=1, window=10.0)
    assert d.delay == 10.0


def test_backoff_grows_for_not_created_errors() -> None:
    delays = [
        decide_create_failure(E.ServerError("x"), tries=t, window=10).delay for t in (1, 2, 3)
    ]
    assert delays == [1.0, 2.0, 4.0]


# -- the evidence table: may this createTask have created a task? ------------------------

HTML = b"<html><body><h1>500 Internal Server Error</h1></body></html>"


def _envelope(code: int) -> bytes:
    return json.dumps({"code": code, "msg": f"code {code}", "data": None}).encode()


ANSWERS: list[tuple[str, int, bytes, bool]] = [
    # what, HTTP status, body, may have created
    *[(f"envelope {c}", 200, _envelope(c), False) for c in (429, 455, 500)],
    *[(f"envelope {c} on HTTP {c}", c, _envelope(c), False) for c in (429, 455, 500)],
    *[(f"envelope {c}", 200, _envelope(c), False) for c in (400, 404, 422)],
    *[(f"envelope {c}", 200, _envelope(c), False) for c in (401, 402, 433, 505)],
    *[(f"envelope {c}", 200, _envelope(c), True) for c in (408, 501, 502, 503, 504)],
    *[(f"HTTP {s} html", s, HTML, True) for s in (500, 502, 503, 504)],
    *[(f"HTTP {s} empty", s, b"", True) for s in (500, 502, 503, 504)],
    *[(f"HTTP {s} json, no envelope", s, b'{"error": "bad gateway"}', True) for s in (500, 502)],
    ("HTTP 408 bare", 408, b"", True),
    ("HTTP 429 bare (a proxy's limiter)", 429, b"Too Many Requests", True),
    ("HTTP 200 unreadable", 200, b"<html>ok</html>", True),
    ("HTTP 200 envelope without taskId", 200, _envelope(200), True),
]


@pytest.mark.parametrize(
    ("what", "status", "body", "created"), ANSWERS, ids=[a[0] for a in ANSWERS]
)
def test_may_have_created_answers(what: str, status: int, body: bytes, created: bool) -> None:
    err = asyncio.run(_create_against(lambda request: httpx.Response(status, content=body)))
    assert may_have_created(err) is created, f"{what}: {err!r}"
    if isinstance(err, E.APIError):
        assert err.envelope is (body.startswith(b'{"code"'))
        assert err.path == "/api/v1/jobs/createTask"
        if not err.envelope and body:
            assert err.snippet and len(err.snippet) <= 200


def _raise(exc: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)

    return handler


TRANSPORT: list[tuple[str, type[httpx.TransportError], bool]] = [
    ("connection refused", httpx.ConnectError, False),
    ("connect timeout", httpx.ConnectTimeout, False),
    ("read timeout", httpx.ReadTimeout, True),
    ("reset after sending", httpx.RemoteProtocolError, True),
    ("write failed midway", httpx.WriteError, True),
]


@pytest.mark.parametrize(("what", "exc", "created"), TRANSPORT, ids=[t[0] for t in TRANSPORT])
def test_may_have_created_transport(
    what: str, exc: type[httpx.TransportError], created: bool
) -> None:
    err = asyncio.run(_create_against(_raise(exc)))
    assert may_have_created(err) is created, what
    assert isinstance(err, E.TransportError) and err.path == "/api/v1/jobs/createTask"


def test_a_bare_404_or_401_parks_the_job_and_stops_submission() -> None:
    for status in (401, 404):

        def bare(request: httpx.Request, s: int = status) -> httpx.Response:
            return httpx.Response(s, content=HTML)

        err = asyncio.run(_create_against(bare))
        decision = decide_create_failure(err, tries=1, window=10.0)
        assert decision.verdict is CreateVerdict.UNKNOWN and decision.stop


def test_the_key_never_reaches_an_error_snippet() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text=f"<pre>{request.headers['authorization']}</pre>")

    err = asyncio.run(_create_against(echo))
    assert "sk-table-key-0001" not in repr(err.__dict__) and "sk-table-key-0001" not in str(err)


async def _create_against(handler: Callable[[httpx.Request], httpx.Response]) -> E.LiangXinError:
    client = LiangXinClient(
        api_key="sk-table-key-0001", base_url="http://lx", transport=httpx.MockTransport(handler)
    )
    try:
        await client.create_task("z-image", {"prompt": "p"})
    except E.LiangXinError as err:
        return err
    finally:
        await client.aclose()
    raise AssertionError("createTask did not fail")


# -- the transition table ---------------------------------------------------------------


def test_every_event_has_one_target_and_every_state_is_reachable() -> None:
    targets: dict[Event, set[JobState]] = {}
    for _source, target, event in TRANSITIONS:
        targets.setdefault(event, set()).add(target)
    assert set(targets) == set(Event)
    assert all(len(t) == 1 for t in targets.values())
    reachable = {JobState.PENDING}
    for _ in JobState:
        reachable |= {b for a, b, _e in TRANSITIONS if a in reachable}
    assert reachable == set(JobState)
    # Nothing leaves `done` but a lost file or the user's changed content.
    assert {e for a, _b, e in TRANSITIONS if a is JobState.DONE} == {
        Event.OUTPUT_MISSING,
        Event.CONTENT_CHANGED,
    }
    # A task that may exist is never sent again without the user's say-so.
    assert {e for a, b, e in TRANSITIONS if a is JobState.UNKNOWN and b is JobState.PENDING} == {
        Event.RETRY
    }


# -- recovery: a pure plan per job ------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "has_task", "in_manifest", "retry_failed", "resubmit_unknown", "event"),
    [
        (JobState.SUBMITTING, False, True, False, False, Event.INTERRUPTED_SUBMIT),
        (JobState.SUBMITTING, False, False, True, True, Event.INTERRUPTED_SUBMIT),
        (JobState.TIMED_OUT, True, True, False, False, Event.REPOLL),
        (JobState.TIMED_OUT, True, False, True, False, Event.REPOLL),  # removed: not retried
        (JobState.TIMED_OUT, True, True, True, False, Event.RETRY),
        (JobState.FAILED, True, True, False, False, None),
        (JobState.FAILED, True, True, True, False, Event.RETRY),
        (JobState.UNKNOWN, False, True, True, False, None),  # --retry-failed: not unknown
        (JobState.UNKNOWN, False, True, False, True, Event.RETRY),
        (JobState.DOWNLOAD_FAILED, True, True, True, False, Event.RETRY_DOWNLOAD),
        (JobState.DONE, True, True, True, True, None),
        (JobState.PENDING, False, True, True, True, None),
    ],
)
def test_recovery_plan(
    state: JobState,
    has_task: bool,
    in_manifest: bool,
    retry_failed: bool,
    resubmit_unknown: bool,
    event: Event | None,
) -> None:
    step = recovery_step(
        state,
        has_task=has_task,
        in_manifest=in_manifest,
        retry_failed=retry_failed,
        resubmit_unknown=resubmit_unknown,
    )
    assert (step.event if step else None) is event
    if step is not None:
        # every step is a transition the table allows from that state
        assert (state, target_of(step.event), step.event) in TRANSITIONS
