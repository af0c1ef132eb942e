"""Callbacks for a run (`CallbackOptions`): the receiver and its link to the runner
made when they are on, and the run with the receiver serving beside it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from liangxin_batch.core._summary import RunSummary
from liangxin_batch.run._client import LiangXinClient
from liangxin_batch.run._progress import Observer
from liangxin_batch.run._runner import Runner
from liangxin_batch.state._store import StateStore

if TYPE_CHECKING:  # the receiver (starlette) is imported only when callbacks are on
    from liangxin_batch.run._callback_link import CallbackLink

__all__ = [
    "DEFAULT_LISTEN",
    "CallbackOptions",
    "callback_link",
    "run_with_callbacks",
]


#: The callback receiver's address: loopback (a proxy or tunnel exposes it), and not
#: 8787, where `simulate` listens by default.
DEFAULT_LISTEN = "127.0.0.1:8788"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackOptions:
    """Receive the service's callbacks on `listen`, reachable from outside at `public_base`."""

    public_base: str
    listen: str = DEFAULT_LISTEN
    hmac_key: str | None = None
    #: Opt-in: a signed success with its result URLs is taken without a recordInfo,
    #: accepting that a party on the callback's path could swap the URLs (run/_callback_link.py).
    trust_signed: bool = False
    #: Tests route callbacks in-process (see `receiver_ready`) instead of listening.
    in_process: bool = False
    #: Unix time for the signature's timestamp window (tests and simulators inject theirs).
    clock: Callable[[], float] = time.time

    def __repr__(self) -> str:  # never show the HMAC key
        return f"CallbackOptions(public_base={self.public_base!r}, listen={self.listen!r})"


def callback_link(
    store: StateStore,
    client: LiangXinClient,
    options: CallbackOptions | None,
    receiver_ready: Callable[[Any], None] | None,
) -> CallbackLink | None:
    """The callback receiver and its link to the runner, when callbacks are on."""
    if options is None:
        return None
    from liangxin_batch.run._callback_link import CallbackLink
    from liangxin_batch.run._webhook import CallbackReceiver, ReceiverSettings

    # One token per batch, not per process: callbacks for tasks created before a crash
    # still reach the resumed run (and can reconcile jobs left `unknown`).
    token = store.get_meta("callback_token")
    if token is None:
        token = secrets.token_urlsafe(24)
        store.set_meta({"callback_token": token})
    receiver = CallbackReceiver(
        ReceiverSettings(public_base=options.public_base, hmac_key=options.hmac_key),
        token=token,
        clock=options.clock,
    )
    link = CallbackLink(
        receiver=receiver, client=client, store=store, trust_signed=options.trust_signed
    )
    if receiver_ready is not None:
        receiver_ready(receiver)
    return link


async def run_with_callbacks(
    runner: Runner, link: CallbackLink, options: CallbackOptions, observer: Observer
) -> RunSummary:
    """The runner's run with the receiver serving beside it (unless in-process) and the
    link consuming what it receives; the summary counts the callbacks taken."""
    from liangxin_batch.run._webhook import serve_receiver

    receiver = link.receiver
    async with contextlib.AsyncExitStack() as stack:
        if not options.in_process:
            local = await stack.enter_async_context(serve_receiver(receiver, options.listen))
            observer.message(f"callbacks: listening on {local}, public at {options.public_base}")
        consumer = asyncio.create_task(link.consume(runner))
        try:
            summary = await runner.run()
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
    refused = {k: v for k, v in receiver.counters.items() if v and k != "accepted"}
    if refused:
        observer.message(f"callbacks refused or ignored: {refused}")
    summary.callbacks_received = receiver.counters.get("accepted", 0)
    return summary
