"""CLI: `run`, `status`, `demo`. Thin: options in, `run_batch_async` out, summary printed."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from liangxin_batch.cli._options import (
    accounts_opt,
    allow_outside_opt,
    base_url_opt,
    manifest_arg,
    max_image_pixels_opt,
    max_in_flight_opt,
    model_opt,
    parse_rate_flag,
    rate_opt,
    state_opt,
)
from liangxin_batch.errors import ConfigError

if TYPE_CHECKING:  # the run's machinery (httpx, the runner) loads only when a run starts
    from liangxin_batch.run._callback_setup import CallbackOptions

__all__ = ["demo_command", "run_command", "status_command"]


def _parse_stall(text: str) -> tuple[int, float]:
    """`--download-stall 10KB/30s` -> (10000, 30.0); `off` -> no stall detection."""
    if text.strip().lower() == "off":
        return 1, math.inf
    from liangxin_batch.core._settings import parse_size  # not at import: --help stays light

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


def _callback_options(
    callback_url: str | None, listen: str | None, hmac_key: str | None, *, trust_signed: bool
) -> CallbackOptions | None:
    if callback_url is None:
        if listen is not None:
            raise ConfigError(
                "--listen needs --callback-url: the public URL at which the service can reach "
                "this receiver (e.g. a reverse proxy or tunnel in front of --listen)"
            )
        if trust_signed:
            raise ConfigError("--trust-signed-callbacks needs --callback-url")
        return None
    if trust_signed and not hmac_key:
        raise ConfigError(
            "--trust-signed-callbacks needs --webhook-hmac-key: only signed callbacks are "
            "ever taken without a recordInfo"
        )
    from liangxin_batch.run._callback_setup import DEFAULT_LISTEN, CallbackOptions

    return CallbackOptions(
        public_base=callback_url,
        listen=listen or DEFAULT_LISTEN,
        hmac_key=hmac_key or None,
        trust_signed=trust_signed,
    )


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
@click.option(
    "--simulate",
    is_flag=True,
    help="Run against the built-in simulator (no account); it keeps its tasks in "
    "--out/.simulator/, so the same command resumes.",
)
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
    "--embed-metadata",
    is_flag=True,
    envvar="LIANGXIN_EMBED_METADATA",
    help="Also write a copy of each output image with its prompt and parameters inside "
    "(PNG 'parameters' text, JPEG/WebP EXIF UserComment) under DIR/with-metadata/; the "
    "originals are never rewritten [env LIANGXIN_EMBED_METADATA].",
)
@click.option(
    "--max-file-size",
    default="500MB",
    show_default=True,
    metavar="SIZE",
    help="Refuse result files larger than this.",
)
@click.option(
    "--min-free-disk",
    default="50MB",
    show_default=True,
    metavar="SIZE",
    help="Stop downloading (exit 3) rather than leave less than this free under --out: "
    "the state's own commits need room.",
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
    help="Where the callback receiver listens [default: 127.0.0.1:8788]; "
    "0.0.0.0:PORT listens on every interface.",
)
@click.option(
    "--webhook-hmac-key",
    envvar="LIANGXIN_WEBHOOK_HMAC_KEY",
    metavar="KEY",
    help="Verify callback signatures with this key [env LIANGXIN_WEBHOOK_HMAC_KEY]; "
    "a callback then triggers an immediate poll (unsigned ones are refused).",
)
@click.option(
    "--trust-signed-callbacks",
    is_flag=True,
    help="Take a signed callback's success and result URLs without asking recordInfo "
    "(no poll per task; the signature does not cover the body, so whoever relays the "
    "callback could swap the URLs). Needs --webhook-hmac-key.",
)
@click.option(
    "--upload-base-url",
    envvar="LIANGXIN_UPLOAD_BASE_URL",
    metavar="URL",
    help="LiangXin's file upload host, where local input files are uploaded (no public "
    "default; needed only when the manifest names local files) "
    "[env LIANGXIN_UPLOAD_BASE_URL].",
)
@click.option(
    "--upload-lifetime",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="How long an upload serves when the host does not say (its expiresAt).",
)
@click.option(
    "--upload-margin",
    default="6h",
    show_default=True,
    metavar="DURATION",
    help="Upload again before a createTask when less than this is left (at most half "
    "the lifetime).",
)
@click.option(
    "--upload-concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Local files uploaded at once (each tried up to 5 times within 5 minutes).",
)
@click.option(
    "--upload-rate", default="10/s", show_default=True, help="Uploads started per second."
)
@click.option(
    "--upload-method",
    type=click.Choice(["stream", "base64"]),
    default="stream",
    show_default=True,
    help="stream: multipart read from disk as it is sent (any size); base64: a JSON body "
    "holding the whole file (small files only).",
)
@click.option(
    "--report-every",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="Refresh report.html this often while the batch runs (open it to see what is "
    "done so far; at least 1s); 0: only at the end.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option(
    "--csv-safe",
    is_flag=True,
    help="results.csv: prefix cells that a spreadsheet would run as formulas with '.",
)
@allow_outside_opt
@state_opt
@click.option(
    "--lease",
    default="60s",
    show_default=True,
    help="With a postgresql:// --state: how long a worker's jobs stay its own without a "
    "renewal (renewed every third of it); a dead worker's tasks are taken over after it.",
)
@accounts_opt
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
    embed_metadata: bool,
    max_file_size: str,
    min_free_disk: str,
    download_concurrency: int,
    download_stall: str,
    download_min_rate: str,
    max_image_pixels: int,
    callback_url: str | None,
    listen: str | None,
    webhook_hmac_key: str | None,
    trust_signed_callbacks: bool,
    upload_base_url: str | None,
    upload_lifetime: str,
    upload_margin: str,
    upload_concurrency: int,
    upload_rate: str,
    upload_method: str,
    report_every: str,
    quiet: bool,
    csv_safe: bool,
    allow_outside: bool,
    state: str | None,
    lease: str,
    accounts_file: Path | None,
) -> None:
    """Run MANIFEST to finished tasks in --out; run it again to resume."""
    from liangxin_batch.state._backends import state_url

    callbacks = _callback_options(
        callback_url, listen, webhook_hmac_key, trust_signed=trust_signed_callbacks
    )
    create_limit, create_window = parse_rate_flag(rate, "--rate")
    poll_limit, poll_window = parse_rate_flag(poll_rate, "--poll-rate")
    stall_bytes, stall_window = _parse_stall(download_stall)
    upload_limit, upload_window = parse_rate_flag(upload_rate, "--upload-rate")
    from liangxin_batch.core._settings import RunSettings, parse_duration, parse_size

    lifetime = parse_duration(upload_lifetime, flag="--upload-lifetime")
    margin = parse_duration(upload_margin, flag="--upload-margin")
    if not lifetime > 0:
        raise ConfigError(
            f"--upload-lifetime {upload_lifetime}: an upload must live longer than zero; "
            "give how long the upload host keeps a file (24h unless it says otherwise)"
        )
    every = parse_duration(report_every, flag="--report-every")
    if 0 < every < 1:
        raise ConfigError(
            f"--report-every {report_every}: each refresh rewrites report.html, at most once "
            "a second; give 1s or more (30s is the default), or 0 for only at the end"
        )
    if margin > lifetime / 2:
        raise ConfigError(
            f"--upload-margin {upload_margin} is more than half of --upload-lifetime "
            f"{upload_lifetime}: an upload made just now would already count as stale. "
            "Lower the margin or raise the lifetime"
        )
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
        embed_metadata=embed_metadata,
        max_file_size=parse_size(max_file_size),
        min_free_disk=parse_size(min_free_disk, flag="--min-free-disk", minimum=0),
        download_concurrency=download_concurrency,
        stall_bytes=stall_bytes,
        stall_window=stall_window,
        min_download_rate=parse_size(download_min_rate, flag="--download-min-rate"),
        max_image_pixels=max_image_pixels,
        csv_safe=csv_safe,
        report_every=every,
        state_url=state_url(state),
        worker_lease=parse_duration(lease, flag="--lease"),
        upload_lifetime=lifetime,
        upload_margin=margin,
        upload_concurrency=upload_concurrency,
        upload_limit=upload_limit,
        upload_window=upload_window,
        upload_method=upload_method,
    )
    from liangxin_batch.cli._launch import format_summary, run_from_cli

    summary = run_from_cli(
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
        upload_base_url=upload_base_url,
        accounts_file=accounts_file,
    )
    click.echo(format_summary(summary, out_dir))
    sys.exit(summary.exit_code)


@click.command("status")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@state_opt
def status_command(out_dir: Path, state: str | None) -> None:
    """Counts by state and model, oldest tasks in flight, recent problems, credits used."""
    from liangxin_batch.state._backends import state_url
    from liangxin_batch.state._status import format_status, read_status

    click.echo(format_status(read_status(out_dir, state_url=state_url(state))))


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
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A manifest to run instead of the bundled quickstart (8 jobs, several models).",
)
@click.pass_obj
def demo_command(cli: Any, out_dir: Path, manifest: Path | None) -> None:
    """Run the quickstart manifest against the built-in simulator (no account, no network)."""
    import importlib.resources

    from liangxin_batch.cli._launch import format_summary, run_from_cli
    from liangxin_batch.core._settings import RunSettings

    if manifest is None:  # package data: demo works from any folder and from the wheel
        bundled = importlib.resources.files("liangxin_batch.demo") / "quickstart.yaml"
        manifest = Path(str(bundled))

    summary = run_from_cli(
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
