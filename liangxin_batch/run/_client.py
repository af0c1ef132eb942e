"""LiangXinClient: the one module that speaks HTTP to the LiangXin API, and owns its limits.

Both of the service's limits live here: every createTask waits for a turn (an even pace
inside the exact 20-per-10-s window, in one of a few places for POSTs in progress:
two, more only when the round trip needs them to keep the rate, `_places`), and
every recordInfo attempt (a poll, a retry, a URL refresh, a callback check) passes the
recordInfo limiter. A 429 holds the matching limiter for its window.

createTask is never retried here: whether a failed create may be repeated depends on
whether the service could have created the task (`_lifecycle.may_have_created` decides
from the error's evidence). The idempotent calls (recordInfo, credit, download-url) retry
with jittered backoff, honour `Retry-After`, and stay within `RunSettings`' bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Executor
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import httpx
import stamina
import stamina.instrumentation

from liangxin_batch.core._envelope import (
    TaskRecord,
    check_envelope,
    parse_retry_after,
    parse_task_record,
)
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._uploads import account_fingerprint
from liangxin_batch.errors import (
    AmbiguousError,
    APIError,
    ConfigError,
    LiangXinError,
    NotSentError,
    RateLimitedError,
    TransportError,
    redact,
)
from liangxin_batch.run._account import Account, AccountMissingError
from liangxin_batch.run._credentials import (
    ENV_API_KEY,
    ENV_BASE_URL,
    AccountKey,
    Secret,
    default_account,
    resolve_base_url,
    resolve_settings,
)
from liangxin_batch.run._places import CreatePlaces
from liangxin_batch.run._ratelimit import SlidingWindowLimiter
from liangxin_batch.run._shared_limiter import SharedLimiter
from liangxin_batch.run._transport import LeanTransport, env_proxied
from liangxin_batch.state._limits import SharedLimits

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "Account",
    "AccountMissingError",
    "CreateTurn",
    "LiangXinClient",
    "PollTurn",
    "Secret",
    "read_envelope",
    "resolve_settings",
    "retry_hook",
    "wire_error",
]

#: Explicit timeouts: `pool=None` because callers gate concurrency themselves, so waiting
#: for a pooled connection is never an error (httpx raises PoolTimeout otherwise).
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=None)

CREATE_PATH = "/api/v1/jobs/createTask"
RECORD_PATH = "/api/v1/jobs/recordInfo"
CREDIT_PATH = "/api/v1/chat/credit"
DOWNLOAD_URL_PATH = "/api/v1/common/download-url"


class _BearerAuth(httpx.Auth):
    """Adds the key per request."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "_BearerAuth(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key.reveal()}"
        yield request


_log = logging.getLogger("liangxin_batch")


def log_retry(details: stamina.instrumentation.RetryDetails) -> None:
    """A stamina retry hook that writes to our log (and run.log), not to stderr where it
    would tear the bars. Installing it is the application's business (the CLI does);
    a library sets no process-wide hooks."""
    _log.info(
        "retry %d in %.1fs after %s",
        details.retry_num,
        details.wait_for,
        redact(str(details.caused_by)),
    )


def retry_hook(exc: Exception) -> bool | float:
    """stamina's `on=`: True to retry with backoff, a float to wait exactly that long."""
    if isinstance(exc, APIError):
        if not exc.retryable:
            return False
        return min(exc.retry_after, MAX_RETRY_AFTER) if exc.retry_after is not None else True
    return isinstance(exc, TransportError)


def wire_error(path: str, err: httpx.HTTPError, key: str) -> NotSentError | AmbiguousError:
    """What a failed exchange with a LiangXin host means for money: NotSentError when
    the request provably never left (no connection), AmbiguousError otherwise (a read
    timeout, a dropped or undecodable answer: the host may have acted on it). The key
    is redacted from the evidence."""
    detail = redact(str(err) or type(err).__name__, key)
    text = f"{path}: {type(err).__name__}: {detail}"
    if isinstance(err, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return NotSentError(text, path=path)
    return AmbiguousError(text, path=path)


def read_envelope(response: httpx.Response, content: bytes, *, path: str, key: str) -> Any:
    """A LiangXin answer's `data`, or the APIError its status and envelope say (with the
    answer's Retry-After, the key redacted)."""
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
    return check_envelope(
        response.status_code, content, retry_after=retry_after, path=path, redact_with=key
    )


def _hold(err: APIError, window: float) -> float:
    """How long a 429 holds its limiter: Retry-After (capped), else one window."""
    return min(err.retry_after, MAX_RETRY_AFTER) if err.retry_after is not None else window


#: The longest a 429's Retry-After may hold a limiter: a peer must not stop us for hours.
MAX_RETRY_AFTER = 120.0


class PollTurn:
    """A recordInfo turn: one of the concurrent places, then admitted by the limiter.
    `get_task()` uses it once; `release()` gives it back unused."""

    __slots__ = ("_client", "_released", "account")

    def __init__(self, client: LiangXinClient, account: Account) -> None:
        self._client = client
        self.account = account
        self._released = False

    async def get_task(self, task_id: str) -> TaskRecord:
        try:
            data = await self._client._send_record(task_id, self.account)
        finally:
            self.release()
        return parse_task_record(data, task_id=task_id)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._client._poll_gate.release()


class CreateTurn:
    """A createTask turn: admitted by the limiter, holding one of the concurrent-POST
    places. Commit the intent, then `create()`; or `release()` it unused."""

    __slots__ = ("_admitted", "_client", "_given", "_released", "account")

    def __init__(
        self, client: LiangXinClient, account: Account, admitted: float | None = None
    ) -> None:
        self._client = client
        self.account = account
        self._admitted = admitted
        #: When the limiter let it go (a busy loop's late wake-up is before this).
        self._given = asyncio.get_running_loop().time()
        self._released = False

    async def create(
        self, model: str, input: Mapping[str, Any], callback_url: str | None = None
    ) -> str:
        try:
            return await self._client._create(
                model, input, callback_url, self._admitted, self.account
            )
        finally:
            self.release()

    def late(self) -> bool:
        """Too late to send on this turn's slot: `too_late` of the account's limiter,
        for our own waits since the turn was given (uploads checked, the intent
        written) past the slot."""
        if self._admitted is None:
            return False
        held = asyncio.get_running_loop().time() - max(self._given, self._admitted)
        return self.account.create_limiter.too_late(held)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.account.create_places.release()


class LiangXinClient:
    """Async client for the LiangXin Market task API.

    Args:
        api_key: defaults to `$LIANGXIN_API_KEY`: the one account, named `default`.
        accounts: several accounts instead (`load_accounts`), each with its own key and
            limits; a task is always asked about with the key of the account that
            created it.
        base_url: defaults to `$LIANGXIN_BASE_URL`.
        transport: an httpx transport (tests pass `httpx.ASGITransport(app=simulator)`).
        settings: the limits (create and recordInfo rates, concurrent calls) and the
            bounds on retries of idempotent calls; `RunSettings()` by default.
        timeout: httpx timeout; explicit by default.
        max_connections: size of the connection pool; the client's own gates keep the
            calls in progress below it.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        accounts: Sequence[AccountKey] | None = None,
        base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        settings: RunSettings | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_connections: int = 32,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        settings = settings or RunSettings()
        if accounts:
            url = resolve_base_url(base_url)
            keys = list(accounts)
        else:
            key, url = resolve_settings(api_key, base_url)
            keys = [default_account(key)]
            del key
        del api_key
        self.base_url = url
        self.settings = settings
        self._retry_attempts = settings.call_retries
        self._retry_timeout = settings.call_retry_timeout
        self._on_request = on_request
        #: The accounts, in the file's order (one, `default`, without an accounts file).
        self.accounts: dict[str, Account] = {a.name: Account(a, settings) for a in keys}
        #: The first account: the one that asks for what belongs to no task (credits).
        self.account = next(iter(self.accounts.values()))
        #: An accounts file was given (the summary then names the accounts to top up).
        self.named_accounts = bool(accounts)
        self._poll_gate = asyncio.Semaphore(min(settings.max_concurrent_polls, max_connections))
        # Our own wire (see _transport): httpcore's cost about 1 ms of CPU a request.
        wire = transport or LeanTransport(
            max_connections=max_connections, max_keepalive=min(max_connections, 12)
        )
        self._http = httpx.AsyncClient(
            base_url=url,
            transport=wire,
            timeout=timeout,
            headers={"User-Agent": "liangxin-batch"},
        )
        #: The API calls need nothing of the client's per-request machinery (URL merging,
        #: auth flow, redirects, cookies: ~250 µs of CPU a call), so they are handed to the
        #: transport directly, unless a proxy from the environment may apply: then the
        #: client's own proxy mounts decide, as before.
        proxied = env_proxied(url)
        self._direct: httpx.AsyncBaseTransport | None = (
            wire if transport is not None or not proxied else None
        )
        self._headers = httpx.Headers(self._http.headers)
        self._timeout = timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}
        #: A TCP check of the host before anything is sent (see check_reachable) makes
        #: sense only on our own wire with no proxy in between.
        self._checkable = transport is None and not proxied

    def __repr__(self) -> str:
        return f"LiangXinClient(base_url={self.base_url!r}, api_key=***)"

    @property
    def create_limiter(self) -> SlidingWindowLimiter:
        """The first account's createTask limiter (the only one without accounts)."""
        return self.account.create_limiter

    @property
    def poll_limiter(self) -> SlidingWindowLimiter:
        return self.account.poll_limiter

    @property
    def create_places(self) -> CreatePlaces:
        return self.account.create_places

    def account_named(self, name: str | None) -> Account:
        """The account a task was created by (None: a task recorded before accounts
        were, created with LIANGXIN_API_KEY: the `default` account)."""
        from liangxin_batch.core._accounts import DEFAULT_ACCOUNT

        account = self.accounts.get(name or DEFAULT_ACCOUNT)
        if account is None:
            raise AccountMissingError(
                f"created by account {name or DEFAULT_ACCOUNT!r}, which is not among this "
                f"run's accounts ({', '.join(self.accounts)}): run with an accounts file "
                "that names it to poll or download it (never with another account's key)"
            )
        return account

    def open_accounts(self) -> list[Account]:
        """The accounts that may still create tasks, in order."""
        return [a for a in self.accounts.values() if a.stopped is None]

    def soonest_account(self) -> Account | None:
        """The open account whose createTask limiter admits soonest (the first in file
        order on a tie): where the next job goes. None when every account is stopped."""
        open_ = self.open_accounts()
        if len(open_) <= 1:
            return open_[0] if open_ else None
        now = asyncio.get_running_loop().time()
        return min(open_, key=lambda a: a.create_limiter.delay(now))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def share_limits(self, limits: SharedLimits, executor: Executor) -> None:
        """Workers of a shared batch: each account paces by the limits every worker
        holds (run/_shared_limiter.py), with its own settings. A limit is named by the
        account's fingerprint (one-way: never the key), so two names for one key share it."""
        for account in self.accounts.values():
            who = account_fingerprint(self.base_url, account.key.reveal())
            account.create_limiter = SharedLimiter.like(
                account.create_limiter, name=f"{who}:create", limits=limits, executor=executor
            )
            account.poll_limiter = SharedLimiter.like(
                account.poll_limiter, name=f"{who}:poll", limits=limits, executor=executor
            )

    # -- the four calls ---------------------------------------------------------------

    async def create_turn(self, account: Account | None = None) -> CreateTurn:
        """Wait for a createTask turn (a concurrent-POST place, then the rate limiter) of
        `account`, by default the open account that admits soonest (the first account
        when all are stopped: the caller stops before sending).

        Cancelling the wait sends nothing and gives the place back.
        """
        account = account or self.soonest_account() or self.account
        await account.create_places.acquire()
        try:
            admitted = await account.create_limiter.acquire()
        except BaseException:
            account.create_places.release()
            raise
        return CreateTurn(self, account, admitted)

    async def create_task(
        self, model: str, input: Mapping[str, Any], callback_url: str | None = None
    ) -> str:
        """Wait for a turn, submit one task and return its taskId. Never retried here.

        Raises NotSentError when the request provably never reached the service,
        AmbiguousError when it may have (a task may exist), APIError for an answer
        (whose `.envelope` says whether the service itself gave it).
        """
        turn = await self.create_turn()
        return await turn.create(model, input, callback_url)

    async def _create(
        self,
        model: str,
        input: Mapping[str, Any],
        callback_url: str | None,
        admitted: float | None = None,
        account: Account | None = None,
    ) -> str:
        account = account or self.account
        limiter = account.create_limiter
        body: dict[str, Any] = {"model": model, "input": dict(input)}
        if callback_url:
            body["callBackUrl"] = callback_url
        loop = asyncio.get_running_loop()
        sent = loop.time()
        if admitted is not None:  # the intent's commit (and a busy loop) came in between
            limiter.sent_late(admitted, sent)
        counted = sent

        async def on_trace(event: str, info: Any) -> None:
            # The bytes go out only now: a busy loop can hold a request 100 ms between
            # our call and its write, and the service counts the write. (httpcore calls
            # this; an in-process transport does not.)
            nonlocal counted
            if admitted is not None and event == "http11.send_request_headers.started":
                now = loop.time()
                limiter.sent_late(counted, now)
                counted = now

        try:
            data = await self._call(
                "POST", CREATE_PATH, account, json=body, extensions={"trace": on_trace}
            )
            account.create_places.observe(loop.time() - sent)
        except ValueError as err:  # a 2xx we could not read: the task may exist
            raise AmbiguousError(f"createTask answer unreadable: {err}", path=CREATE_PATH) from None
        except RateLimitedError as err:
            # The service's 429 (nothing created) or a proxy's (maybe created): either way
            # hold every create back for the window, then go slower.
            limiter.block_for(_hold(err, limiter.window))
            limiter.slow_down()
            raise
        task_id = data.get("taskId") if isinstance(data, Mapping) else None
        if not isinstance(task_id, str) or not task_id:
            raise AmbiguousError("createTask answered success without a taskId", path=CREATE_PATH)
        return task_id

    async def poll_turn(self, account: Account | None = None) -> PollTurn:
        """Wait for a recordInfo turn of `account` (default: the first), a concurrent
        place shared by all, then its limiter: the runner's polls wait here, where a stop
        can cancel them before anything is sent."""
        account = account or self.account
        await self._poll_gate.acquire()
        try:
            await account.poll_limiter.acquire()
        except BaseException:
            self._poll_gate.release()
            raise
        return PollTurn(self, account)

    async def get_task(self, task_id: str, *, account: str | None = None) -> TaskRecord:
        """recordInfo for one task, with the key of the account (by name) that created
        it, retried on transport errors, 429, 455 and 5xx within the settings' bounds;
        every attempt takes a turn (the place, then the limiter). AccountMissingError
        when that account is not among this client's."""
        owner = self.account_named(account)
        async for attempt in stamina.retry_context(
            on=retry_hook, attempts=self._retry_attempts, timeout=self._retry_timeout
        ):
            with attempt:
                turn = await self.poll_turn(owner)
                return await turn.get_task(task_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_record(self, task_id: str, account: Account) -> Any:
        try:
            return await self._call("GET", RECORD_PATH, account, params={"taskId": task_id})
        except ValueError as err:
            raise TransportError(
                f"unreadable answer from {RECORD_PATH}: {err}", path=RECORD_PATH
            ) from None
        except RateLimitedError as err:  # hold every recordInfo back for the window
            account.poll_limiter.block_for(_hold(err, account.poll_limiter.window))
            raise

    async def check_reachable(self, *, attempts: int = 3, pause: float = 1.0) -> None:
        """Before anything is sent: can a connection reach the base URL's host at all?

        Refused connections (or a name that does not resolve) on the very first calls mean
        a wrong LIANGXIN_BASE_URL or a service that is down; the retries that protect a
        running batch would take minutes to say so. Opens and closes a TCP connection (no
        request, no credit) up to `attempts` times, `pause` apart; ConfigError if none
        connects. Skipped behind a proxy and with a caller's own transport (tests).
        """
        if not self._checkable:
            return
        url = httpx.URL(self.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        why = ""
        for attempt in range(attempts):
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(url.raw_host.decode("ascii"), port), timeout=10.0
                )
            except (OSError, TimeoutError) as err:
                why = err.strerror if isinstance(err, OSError) and err.strerror else "no answer"
                if attempt + 1 < attempts:
                    await asyncio.sleep(pause)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise ConfigError(
            f"cannot reach {ENV_BASE_URL}={self.base_url} ({why}): check the variable "
            "(or --base-url), or the service is down; nothing was sent"
        )

    async def get_credits(self, *, account: str | None = None) -> int:
        """An account's remaining credits (by name; default: the first account)."""
        owner = self.account_named(account) if account is not None else self.account
        data = await self._idempotent("GET", CREDIT_PATH, owner)
        try:
            return int(data)
        except (TypeError, ValueError):
            raise LiangXinError(f"credit endpoint answered {data!r}, not a number") from None

    async def get_download_url(self, url: str, *, account: str | None = None) -> str:
        """A fresh temporary (about 20 minutes) URL for a LiangXin-generated file, asked
        with the key of the account (by name) whose task made it."""
        owner = self.account_named(account)
        data = await self._idempotent("POST", DOWNLOAD_URL_PATH, owner, json={"url": url})
        if not isinstance(data, str) or not data.startswith(("http://", "https://")):
            raise LiangXinError(f"download-url answered {data!r}, not a URL")
        return data

    # -- plumbing ---------------------------------------------------------------------

    async def _idempotent(self, method: str, path: str, account: Account, **kwargs: Any) -> Any:
        """credit and download-url (recordInfo has its own turns: `get_task`)."""
        async for attempt in stamina.retry_context(
            on=retry_hook, attempts=self._retry_attempts, timeout=self._retry_timeout
        ):
            with attempt:
                try:
                    return await self._call(method, path, account, **kwargs)
                except ValueError as err:
                    raise TransportError(
                        f"unreadable answer from {path}: {err}", path=path
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(
        self,
        method: str,
        path: str,
        key: Secret,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Request:
        """The request `AsyncClient.request` would build, without its URL merging."""
        url = self._urls.get(path) if not params else None
        if params:
            url = httpx.URL(f"{self.base_url}{path}?{urlencode(params)}")
        elif url is None:
            url = self._urls[path] = httpx.URL(self.base_url + path)
        headers = self._headers.copy()
        headers["Authorization"] = f"Bearer {key.reveal()}"
        return httpx.Request(
            method,
            url,
            headers=headers,
            json=json,
            extensions={"timeout": self._timeout, **(extensions or {})},
        )

    async def _send(self, method: str, path: str, key: Secret, **kwargs: Any) -> httpx.Response:
        if self._direct is None:
            return await self._http.request(method, path, auth=_BearerAuth(key), **kwargs)
        request = self._request(method, path, key, **kwargs)
        response = await self._direct.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def _call(self, method: str, path: str, account: Account, **kwargs: Any) -> Any:
        if self._on_request is not None:
            self._on_request(path)
        key = account.key
        try:
            response = await self._send(method, path, key, **kwargs)
        except httpx.HTTPError as err:
            raise wire_error(path, err, key.reveal()) from None
        return read_envelope(response, response.content, path=path, key=key.reveal())
