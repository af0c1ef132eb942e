"""Running a batch from the command line: the simulator when asked, the signal handlers,
and the summary printed at the end. The library sets no process-wide hooks; this does."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from liangxin_batch.cli._exit import EXIT_INTERRUPTED
from liangxin_batch.cli._options import log_retries
from liangxin_batch.core._local_files import bytes_text
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import ConfigError
from liangxin_batch.run._callback_setup import CallbackOptions
from liangxin_batch.run._credentials import load_accounts
from liangxin_batch.run._progress import BarsObserver
from liangxin_batch.run._run import RunHandle, run_batch_async
from liangxin_batch.state._pg import has_password
from liangxin_batch.state._status import credits_line

__all__ = ["format_summary", "run_from_cli"]


#: Flags whose value is a secret: the resume command names the variable instead.
_SECRET_FLAGS = {"--webhook-hmac-key": "LIANGXIN_WEBHOOK_HMAC_KEY"}


#: A state URL is repeated as given, unless it holds a password: then by its variable.
_STATE_FLAG, _STATE_ENV = "--state", "LIANGXIN_STATE_URL"


def _command_line(extra: str = "") -> str:
    """The command that was run, to repeat it; secrets replaced by their variable."""
    args: list[str] = []
    argv = iter(sys.argv[1:])
    for arg in argv:
        if arg in ("--retry-failed", "--resubmit-unknown"):
            continue
        name, has_value, value = arg.partition("=")
        if name in _SECRET_FLAGS:
            if not has_value:
                next(argv, None)
            args.append(f'{name}="${_SECRET_FLAGS[name]}"')
            continue
        if name == _STATE_FLAG:
            args.append(_state_flag(value if has_value else next(argv, "")))
            continue
        args.append(shlex.quote(arg))
    line = "liangxin-batch " + " ".join(args)
    return f"{line} {extra}".rstrip()


def _state_flag(url: str) -> str:
    if has_password(url):
        return f'{_STATE_FLAG}="${_STATE_ENV}"'
    return f"{_STATE_FLAG} {shlex.quote(url)}"


def _with_state(command: str) -> str:
    """`command` plus the --state the run was given (status and report need it too)."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        name, has_value, value = arg.partition("=")
        if name == _STATE_FLAG:
            url = value if has_value else (argv[i + 1] if i + 1 < len(argv) else "")
            return f"{command} {_state_flag(url)}"
    return command


def _unfinished(summary: RunSummary) -> int:
    """Jobs in no final state (`downloading`: generated, files still to fetch)."""
    c = summary.counts
    return sum(c.get(status, 0) for status in ("pending", "submitting", "submitted", "downloading"))


def format_summary(summary: RunSummary, out_dir: Path) -> str:
    c = summary.counts
    minutes, seconds = divmod(int(summary.wall_seconds), 60)
    head = "Interrupted" if summary.interrupted else "Stopped" if summary.stopped_reason else "Done"
    lines = [
        f"{head} after {minutes}m {seconds:02d}s: {summary.succeeded} succeeded, "
        f"{c.get('failed', 0)} failed, {c.get('unknown', 0)} unknown, "
        f"{c.get('timed_out', 0)} timed out, {c.get('download_failed', 0)} download failed, "
        f"{_unfinished(summary)} not finished "
        f"(of {summary.total}); " + credits_line(summary.credits, summary.credits_estimated),
        f"polls: {summary.polls}; tasks finished by callback: {summary.finished_by_callback}, "
        f"by polling: {summary.tasks_finished - summary.finished_by_callback}"
        + (
            f"; local files uploaded: {summary.uploads} ({bytes_text(summary.upload_bytes)})"
            if summary.uploads
            else ""
        ),
    ]
    if summary.accounts_to_top_up:
        lines.append(
            f"Account(s) out of credits: {', '.join(summary.accounts_to_top_up)}: top up "
            "(their tasks already created were still polled and downloaded)"
        )
    if summary.accounts_missing:
        named = ", ".join(f"{n} ({k} task(s))" for n, k in summary.accounts_missing.items())
        lines.append(
            f"Not polled: tasks created by account(s) not in the accounts file: {named}; "
            "run again with an accounts file that names them"
        )
    if summary.stopped_reason:
        lines.append(f"Stopped early: {summary.stopped_reason}")
        lines.append(f"Fix that, then continue with: {_command_line()}")
    elif summary.interrupted:
        lines.append(f"Nothing is lost. Resume with: {_command_line()}")
    elif c.get("pending", 0) or c.get("submitted", 0):
        lines.append(f"Continue with: {_command_line()}")
    if summary.removed_jobs:
        lines.append(
            f"{summary.removed_jobs} job(s) in the state are no longer in the manifest: "
            f"kept with their results ({summary.removed_credits:g} credits), "
            "not counted above"
        )
    if summary.unknown_jobs:
        shown = ", ".join(summary.unknown_jobs[:10])
        lines.append(
            f"Unknown ({c.get('unknown', 0)}): the submit reply was lost, so a task may exist "
            f"and be billed; not resubmitted: {shown}"
        )
        lines.append(f"To resubmit them anyway: {_command_line('--resubmit-unknown')}")
    if c.get("failed", 0) or c.get("timed_out", 0) or c.get("download_failed", 0):
        lines.append(f"To retry failed and timed-out jobs: {_command_line('--retry-failed')}")
    printed = "\n".join(lines)
    unset = sorted(
        var
        for var in (*_SECRET_FLAGS.values(), _STATE_ENV)
        if f"${var}" in printed and not os.environ.get(var)
    )
    if unset:  # a command above names a variable this shell does not have
        lines.append(
            f"{', '.join(unset)} is not set in this shell: set it to the key (or state URL) "
            "you gave (or repeat the flag with it) before running that command"
        )
    folder = shlex.quote(str(out_dir))
    lines.append(f"Details: {_with_state(f'liangxin-batch status {folder}')}")
    if summary.other_workers:
        lines.append(
            f"results.csv and report.html: written by the last of the {summary.other_workers} "
            f"other worker(s) still at work (or: {_with_state(f'liangxin-batch report {folder}')})"
        )
        return "\n".join(lines)
    if not summary.reports_written:
        lines.append(
            "results.csv and report.html were not rebuilt (a big batch, interrupted): "
            + _with_state(f"liangxin-batch report {folder}")
        )
        return "\n".join(lines)
    for name, label in (("results.csv", "Results"), ("report.html", "Report")):
        if (out_dir / name).exists():
            lines.append(f"{label}: {out_dir / name}")
    return "\n".join(lines)


def _run_with_signals(
    start: Callable[[RunHandle], Awaitable[RunSummary]], say: Callable[[str], None]
) -> RunSummary:
    """First SIGINT/SIGTERM: stop new work and checkpoint; a second: exit at once.

    The handlers go in when the runner starts. Before that (validating and syncing a big
    manifest, all synchronous) Ctrl-C is a plain KeyboardInterrupt: the sync transaction
    rolls back, nothing was sent, and the CLI exits 130.
    """

    async def main() -> RunSummary:
        loop = asyncio.get_running_loop()
        hits = 0
        installed = False
        handle: RunHandle

        def on_signal() -> None:
            nonlocal hits
            hits += 1
            if hits == 1:  # through the bars: a line above them, not written across one
                say(
                    "interrupted: finishing the calls in progress and saving state "
                    "(press Ctrl-C again to quit at once; the state stays consistent)"
                )
                handle.interrupt()
            else:
                os._exit(EXIT_INTERRUPTED)

        def install() -> None:
            nonlocal installed
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
            installed = True

        handle = RunHandle(on_attach=install)
        try:
            return await start(handle)
        finally:
            if installed:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    return asyncio.run(main())


def run_from_cli(
    manifest: Path,
    out_dir: Path,
    *,
    catalog: Any,
    settings: RunSettings,
    default_model: str | None,
    base_url: str | None,
    simulate: bool,
    sim_latency_scale: float,
    quiet: bool,
    callbacks: CallbackOptions | None = None,
    allow_outside: bool = False,
    upload_base_url: str | None = None,
    accounts_file: Path | None = None,
) -> RunSummary:
    if simulate and accounts_file is not None:
        raise ConfigError(
            "--accounts with --simulate: the built-in simulator knows one key; run "
            "`liangxin-batch simulate` and point LIANGXIN_BASE_URL at it instead"
        )
    # A bad accounts file is said before a simulator starts or anything is read.
    accounts = load_accounts(accounts_file) if accounts_file is not None else None
    observer = BarsObserver(enabled=False if quiet else None)  # quiet: messages to the log
    with contextlib.ExitStack() as stack:
        api_key = None
        if simulate:
            hmac_key = callbacks.hmac_key if callbacks else None
            from liangxin_batch.simulator import local_simulator

            base_url, api_key = stack.enter_context(
                # Its tasks kept in out_dir: the resume command printed meets them again.
                local_simulator(latency_scale=sim_latency_scale, hmac_key=hmac_key, out_dir=out_dir)
            )
            settings = dataclasses.replace(settings, poll_scale=max(sim_latency_scale, 0.01))
            from liangxin_batch.simulator import upload_base_url as sim_upload_url

            upload_base_url = sim_upload_url(base_url)  # its own upload host, on its server
            click.echo(f"simulator listening on {base_url}", err=True)
        log_retries()
        start = functools.partial(
            run_batch_async,
            manifest,
            out_dir=out_dir,
            settings=settings,
            catalog=catalog,
            default_model=default_model,
            allow_outside=allow_outside,
            api_key=api_key,
            base_url=base_url,
            observer=observer,
            callbacks=callbacks,
            upload_base_url=upload_base_url,
            accounts=accounts,
        )
        return _run_with_signals(lambda handle: start(handle=handle), observer.notice)
