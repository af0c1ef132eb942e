"""CLI: `run`, `status`, `demo`. Thin: options in, `run_batch_async` out, summary printed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import secrets
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from liangxin_batch.cli._exit import EXIT_INTERRUPTED
from liangxin_batch.cli._options import (
    allow_outside_opt,
    base_url_opt,
    log_retries,
    manifest_arg,
    max_image_pixels_opt,
    max_in_flight_opt,
    model_opt,
    parse_rate_flag,
    rate_opt,
)
from liangxin_batch.cli._sim import DEFAULT_SIM_KEY as SIM_API_KEY
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import ConfigError
from liangxin_batch.run._download import parse_size
from liangxin_batch.run._progress import BarsObserver, NullObserver
from liangxin_batch.run._run import CallbackOptions, RunHandle, run_batch_async
from liangxin_batch.state._status import credits_line, format_status, read_status

__all__ = ["format_summary", "register"]


@contextlib.contextmanager
def _simulator(latency_scale: float, hmac_key: str | None = None) -> Iterator[str]:
    from liangxin_batch.simulator import SimConfig, create_app, serve_in_thread

    config = SimConfig(
        api_key=SIM_API_KEY,
        latency_scale=latency_scale,
        hmac_key=hmac_key,
        id_salt=secrets.token_hex(8),  # a resumed --simulate run gets fresh task ids
    )
    app = create_app(config)
    with serve_in_thread(app) as url:
        yield url


#: Flags whose value is a secret: the resume command names the variable instead.
_SECRET_FLAGS = {"--webhook-hmac-key": "LIANGXIN_WEBHOOK_HMAC_KEY"}


def _command_line(extra: str = "") -> str:
    """The command that was run, to repeat it; secrets replaced by their variable."""
    args: list[str] = []
    argv = iter(sys.argv[1:])
    for arg in argv:
        if arg in ("--retry-failed", "--resubmit-unknown"):
            continue
        name = arg.split("=", 1)[0]
        if name in _SECRET_FLAGS:
            if "=" not in arg:
                next(argv, None)
            args.append(f'{name}="${_SECRET_FLAGS[name]}"')
            continue
        args.append(shlex.quote(arg))
    line = "liangxin-batch " + " ".join(args)
    return f"{line} {extra}".rstrip()


def _unfinished(summary: RunSummary) -> int:
    """Jobs in no final state; `succeeded` counts here when its files are still to fetch."""
    c = summary.counts
    waiting = ("pending", "submitting", "submitted") + (("succeeded",) if summary.downloads else ())
    return sum(c.get(state, 0) for state in waiting)


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
        f"by polling: {summary.tasks_finished - summary.finished_by_callback}",
    ]
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
            "kept with their results, not counted above"
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
    lines.append(f"Details: liangxin-batch status {shlex.quote(str(out_dir))}")
    for name, label in (("results.csv", "Results"), ("report.html", "Report")):
        if (out_dir / name).exists():
            lines.append(f"{label}: {out_dir / name}")
    return "\n".join(lines)


def _run_with_signals(coro: Any, handle: RunHandle) -> RunSummary:
    """First SIGINT/SIGTERM: stop new work and checkpoint; a second: exit at once.

    The handlers go in when the runner starts. Before that (validating and syncing a big
    manifest, all synchronous) Ctrl-C is a plain KeyboardInterrupt: the sync transaction
    rolls back, nothing was sent, and the CLI exits 130.
    """

    async def main() -> RunSummary:
        loop = asyncio.get_running_loop()
        hits = 0
        installed = False

        def on_signal() -> None:
            nonlocal hits
            hits += 1
            if hits == 1:
                click.echo(
                    "\ninterrupted: finishing the calls in progress and saving state "
                    "(press Ctrl-C again to quit at once; the state stays consistent)",
                    err=True,
                )
                handle.interrupt()
            else:
                os._exit(EXIT_INTERRUPTED)

        def install() -> None:
            nonlocal installed
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
            installed = True

        handle.on_attach = install
        try:
            result: RunSummary = await coro
            return result
        finally:
            if installed:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    return asyncio.run(main())


def _parse_stall(text: str) -> tuple[int, float]:
    """`--download-stall 10KB/30s` -> (10000, 30.0); `off` -> no stall detection."""
    if text.strip().lower() == "off":
        return 1, math.inf
    usage = f"--download-stall: expected SIZE/SECONDS like 10KB/30s, or off; got {text!r}"
    size, _, seconds = text.partition("/")
    try:
        window = float(seconds.strip().removesuffix("s"))
        nbytes = parse_size(size)
    except (ValueError, ConfigError):
        raise ConfigError(usage) from None
    if not 0 < window < 86_400:
        raise ConfigError(usage)
    return nbytes, window


def _run(
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
) -> RunSummary:
    handle = RunHandle()
    observer = NullObserver() if quiet else BarsObserver()
    with contextlib.ExitStack() as stack:
        api_key = None
        if simulate:
            hmac_key = callbacks.hmac_key if callbacks else None
            base_url = stack.enter_context(_simulator(sim_latency_scale, hmac_key))
            settings = dataclasses.replace(settings, poll_scale=max(sim_latency_scale, 0.01))
            api_key = SIM_API_KEY
            click.echo(f"simulator listening on {base_url}", err=True)
        log_retries()
        coro = run_batch_async(
            manifest,
            out_dir=out_dir,
            settings=settings,
            catalog=catalog,
            default_model=default_model,
            allow_outside=allow_outside,
            api_key=api_key,
            base_url=base_url,
            observer=observer,
            handle=handle,
            callbacks=callbacks,
        )
        return _run_with_signals(coro, handle)


def _callback_options(
    callback_url: str | None, listen: str | None, hmac_key: str | None
) -> CallbackOptions | None:
    if callback_url is None:
        if listen is not None:
            raise ConfigError(
                "--listen needs --callback-url: the public URL at which the service can reach "
                "this receiver (e.g. a reverse proxy or tunnel in front of --listen)"
            )
        return None
    return CallbackOptions(
        public_base=callback_url, listen=listen or "0.0.0.0:8787", hmac_key=hmac_key or None
    )


def register(group: click.Group) -> None:
    group.add_command(run_command)
    group.add_command(status_command)
    group.add_command(demo_command)


@click.command("run")
@manifest_arg
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder: state.db, run.log, outputs/, results.csv.",
)
@model_opt
@rate_opt
@click.option("--poll-rate", default="10/s", show_default=True, help="recordInfo rate limit.")
@max_in_flight_opt
@click.option(
    "--task-timeout",
    type=click.FloatRange(min=1),
    help="Seconds before a task counts as timed out [default: 900 image, 3600 video].",
)
@click.option("--retry-failed", is_flag=True, help="Resubmit failed and timed-out jobs.")
@click.option(
    "--resubmit-unknown",
    is_flag=True,
    help="Resubmit jobs whose submit reply was lost (may pay twice).",
)
@click.option(
    "--allow-changed",
    is_flag=True,
    help="Jobs whose content changed since the state was made start over with it.",
)
@click.option(
    "--max-credits",
    type=click.FloatRange(min=0),
    help="Refuse to start when the estimate exceeds this.",
)
@base_url_opt
@click.option("--simulate", is_flag=True, help="Run against the built-in simulator (no account).")
@click.option(
    "--sim-latency-scale",
    default=0.05,
    show_default=True,
    type=click.FloatRange(min=0),
    help="With --simulate: scale the models' typical latency.",
)
@click.option(
    "--layout",
    metavar="TEMPLATE",
    help="Output names under DIR/outputs/, e.g. '{model}/{subject}/{job_id}' "
    "(fields: job_id, model, index, task_id, date, any manifest column).",
)
@click.option(
    "--max-file-size",
    default="500MB",
    show_default=True,
    metavar="SIZE",
    help="Refuse result files larger than this.",
)
@click.option(
    "--download-concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Files downloaded at once.",
)
@click.option(
    "--download-stall",
    default="10KB/30s",
    show_default=True,
    metavar="SIZE/SECONDS",
    help="A file moving less than SIZE in SECONDS is stalled: tried again, then failed "
    "('off': never).",
)
@click.option(
    "--download-min-rate",
    default="100KB",
    show_default=True,
    metavar="SIZE",
    help="After 120 s, a file must average this many bytes per second.",
)
@max_image_pixels_opt
@click.option(
    "--callback-url",
    metavar="URL",
    help="Public base URL the service posts callbacks to (enables the receiver).",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Where the callback receiver listens [default: 0.0.0.0:8787].",
)
@click.option(
    "--webhook-hmac-key",
    envvar="LIANGXIN_WEBHOOK_HMAC_KEY",
    metavar="KEY",
    help="Verify callback signatures with this key [env LIANGXIN_WEBHOOK_HMAC_KEY]; "
    "without it a callback only triggers an immediate poll.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option(
    "--csv-safe",
    is_flag=True,
    help="results.csv: prefix cells that a spreadsheet would run as formulas with '.",
)
@allow_outside_opt
@click.pass_obj
def run_command(
    cli: Any,
    manifest: Path,
    out_dir: Path,
    default_model: str | None,
    rate: str,
    poll_rate: str,
    max_in_flight: int,
    task_timeout: float | None,
    retry_failed: bool,
    resubmit_unknown: bool,
    allow_changed: bool,
    max_credits: float | None,
    base_url: str | None,
    simulate: bool,
    sim_latency_scale: float,
    layout: str | None,
    max_file_size: str,
    download_concurrency: int,
    download_stall: str,
    download_min_rate: str,
    max_image_pixels: int,
    callback_url: str | None,
    listen: str | None,
    webhook_hmac_key: str | None,
    quiet: bool,
    csv_safe: bool,
    allow_outside: bool,
) -> None:
    """Run MANIFEST to finished tasks in --out; run it again to resume."""
    callbacks = _callback_options(callback_url, listen, webhook_hmac_key)
    create_limit, create_window = parse_rate_flag(rate, "--rate")
    poll_limit, poll_window = parse_rate_flag(poll_rate, "--poll-rate")
    stall_bytes, stall_window = _parse_stall(download_stall)
    settings = RunSettings(
        create_limit=create_limit,
        create_window=create_window,
        poll_limit=poll_limit,
        poll_window=poll_window,
        max_in_flight=max_in_flight,
        task_timeout=task_timeout,
        retry_failed=retry_failed,
        resubmit_unknown=resubmit_unknown,
        allow_changed=allow_changed,
        max_credits=max_credits,
        layout=layout,
        max_file_size=parse_size(max_file_size),
        download_concurrency=download_concurrency,
        stall_bytes=stall_bytes,
        stall_window=stall_window,
        min_download_rate=parse_size(download_min_rate),
        max_image_pixels=max_image_pixels,
        csv_safe=csv_safe,
    )
    summary = _run(
        manifest,
        out_dir,
        catalog=cli.catalog,
        settings=settings,
        default_model=default_model,
        base_url=base_url,
        simulate=simulate,
        sim_latency_scale=sim_latency_scale,
        quiet=quiet,
        callbacks=callbacks,
        allow_outside=allow_outside,
    )
    click.echo(format_summary(summary, out_dir))
    sys.exit(summary.exit_code)


@click.command("status")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def status_command(out_dir: Path) -> None:
    """Counts by state and model, oldest tasks in flight, recent problems, credits used."""
    click.echo(format_status(read_status(out_dir)))


@click.command("demo")
@click.option(
    "--out",
    "out_dir",
    default="demo-out",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--manifest",
    default="examples/quickstart.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.pass_obj
def demo_command(cli: Any, out_dir: Path, manifest: Path) -> None:
    """Run the quickstart manifest against the built-in simulator."""
    summary = _run(
        manifest,
        out_dir,
        catalog=cli.catalog,
        settings=RunSettings(),
        default_model=None,
        base_url=None,
        simulate=True,
        sim_latency_scale=0.05,
        quiet=False,
    )
    click.echo(format_summary(summary, out_dir))
    sys.exit(summary.exit_code)
