"""Callbacks: one POST of the final record to `callBackUrl` when a task ends.

The terminal time is known at create, so each callback is an asyncio task that
sleeps until then and posts once (no retries, like the documented service). With an
injected clock the task re-reads the clock on a short tick, so a test that advances a
`ManualClock` sees its callback promptly; `run_due()` sends due callbacks at once for
tests that want no waiting at all.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ssl
import threading
from collections.abc import Callable
from typing import Any

import httpx

from ._clock import Clock
from ._config import SimConfig
from ._ledger import Ledger, LedgerEvent

__all__ = ["CallbackSender", "sign_callback", "webhook_signature"]

_TICK = 0.05  # how often an injected clock is re-read while a callback waits
_TIMEOUT = 15.0  # the only documented callback timeout (Veo page)


def webhook_signature(key: str, task_id: str, timestamp: int | str) -> str:
    """base64(HMAC-SHA256(key, f"{taskId}.{timestamp}")), as in the webhook docs."""
    mac = hmac.new(key.encode("utf-8"), f"{task_id}.{timestamp}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def sign_callback(hmac_key: str, task_id: str, timestamp: int | str) -> str:
    """The `X-Webhook-Signature` the simulator sends for `task_id` at `timestamp`.

    For tests that deliver a callback of their own: POST any body with headers
    `X-Webhook-Timestamp: <timestamp>` and `X-Webhook-Signature: <this>`. The signature
    covers only taskId and timestamp (not the body), as the webhook docs define it, so a
    captured signature stays valid with a swapped body. Same as `webhook_signature`.
    """
    return webhook_signature(hmac_key, task_id, timestamp)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One per process: loading the CA bundle is what makes a new client slow."""
    return ssl.create_default_context()


class CallbackSender:
    """Schedules and sends callbacks; owns its asyncio tasks and (maybe) its client."""

    def __init__(
        self,
        *,
        clock: Clock,
        wall_clock: bool,
        ledger: Ledger,
        payload_for: Callable[[str, float], dict[str, Any]],
        config: SimConfig,
        client: httpx.AsyncClient | None,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._ledger = ledger
        self._payload_for = payload_for
        # Read at send time, so a test may change hmac_key or faults mid-run.
        self._config = config
        # Made now, not at the first callback: building a client's TLS context takes
        # 30-60 ms, a stall that would land on the requests the rate limit is counting.
        self._client = (
            client
            if client is not None
            else httpx.AsyncClient(timeout=_TIMEOUT, verify=_tls_context())
        )
        self._own_client = client is None
        self._pending: dict[str, tuple[str, float]] = {}  # task_id -> (url, due)
        self._lock = threading.Lock()
        # Strong references: the loop keeps only weak ones to running tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, task_id: str, url: str, due: float) -> None:
        """Remember the callback and, inside a running loop, start its waiting task."""
        with self._lock:
            self._pending[task_id] = (url, due)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a direct library call): run_due() will send it
        task = loop.create_task(self._deliver_when_due(task_id, due), name=f"callback-{task_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_when_due(self, task_id: str, due: float) -> None:
        while (remaining := due - self._clock()) > 0:
            await asyncio.sleep(remaining if self._wall_clock else min(remaining, _TICK))
        await self._send(task_id)

    async def run_due(self) -> int:
        """Send every pending callback whose time has come; returns how many."""
        now = self._clock()
        with self._lock:
            due = [tid for tid, (_, at) in self._pending.items() if at <= now]
        sent = 0
        for task_id in due:
            sent += await self._send(task_id)
        return sent

    async def _send(self, task_id: str) -> int:
        with self._lock:
            # Whoever pops it sends it: the waiting task and run_due() never both do.
            entry = self._pending.pop(task_id, None)
        if entry is None:
            return 0
        url, _ = entry
        now = self._clock()
        if self._config.faults.drop_callbacks:
            self._ledger.record(
                LedgerEvent(kind="callback", at=now, outcome="dropped", task_id=task_id, path=url)
            )
            return 1
        payload = self._payload_for(task_id, now)
        headers: dict[str, str] = {}
        key = self._config.hmac_key
        if key:
            timestamp = int(now)
            headers["X-Webhook-Timestamp"] = str(timestamp)
            headers["X-Webhook-Signature"] = webhook_signature(key, task_id, timestamp)
        status: int | None = None
        try:
            response = await self._client.post(url, json=payload, headers=headers)
            status = response.status_code
            outcome = "delivered" if 200 <= status < 300 else f"rejected {status}"
        except httpx.HTTPError as err:
            outcome = f"error: {type(err).__name__}"
        self._ledger.record(
            LedgerEvent(
                kind="callback",
                at=self._clock(),
                outcome=outcome,
                task_id=task_id,
                path=url,
                http_status=status,
            )
        )
        return 1

    async def aclose(self) -> None:
        """Cancel waiting callbacks and close the client we created."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_client:
            self._own_client = False
            await self._client.aclose()
