"""`simulate`: serve the LiangXin simulator in the foreground until Ctrl-C."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from liangxin_batch.cli._context import CliContext, pass_cli
from liangxin_batch.errors import ConfigError

__all__ = ["simulate_command"]

DEFAULT_SIM_KEY = "sk-sim-local"


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    default=8787,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind (0 picks a free one).",
)
@click.option(
    "--api-key",
    default=DEFAULT_SIM_KEY,
    show_default=True,
    envvar="LIANGXIN_SIM_API_KEY",
    help="The key clients must send (env LIANGXIN_SIM_API_KEY).",
)
@click.option(
    "--credits",
    type=click.IntRange(min=0),
    default=1_000_000,
    show_default=True,
    help="Starting credit balance.",
)
@click.option(
    "--latency-scale",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Multiply each model's typical latency.",
)
@click.option(
    "--faults",
    "faults_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Fault profile file (YAML/JSON; FaultProfile field names).",
)
@click.option("--hmac-key", default=None, help="Sign callbacks with this webhook HMAC key.")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed for task ids, latency jitter and fault draws.",
)
@click.option(
    "--upload-lifetime",
    type=click.FloatRange(min=0, min_open=True),
    default=24 * 3600.0,
    show_default=True,
    help="Seconds an uploaded file is served before it expires.",
)
@click.option(
    "--foreign-inputs",
    type=click.Choice(["accept", "fail"]),
    default="accept",
    show_default=True,
    help="Input URLs on other hosts: accept them, or fail the task as if unreachable.",
)
@pass_cli
def simulate_command(
    cli: CliContext,
    host: str,
    port: int,
    api_key: str,
    credits: int,
    latency_scale: float,
    faults_file: Path | None,
    hmac_key: str | None,
    seed: int,
    upload_lifetime: float,
    foreign_inputs: str,
) -> None:
    """Serve a local LiangXin simulator (same API, real files, optional faults).

    Prints the base URL and the environment variables to export, then serves
    until Ctrl-C. GET /_sim/ledger shows everything it saw; POST /_sim/top-up
    with {"credits": N} adds credits. The upload host is served under
    /upload-host (its base URL is printed too).
    """
    from secrets import token_hex

    from liangxin_batch.simulator import (
        FaultProfile,
        SimConfig,
        load_fault_profile,
        run_simulator,
        upload_base_url,
    )

    faults = load_fault_profile(faults_file) if faults_file else FaultProfile()
    if not api_key:
        raise ConfigError("--api-key must not be empty")
    config = SimConfig(
        api_key=api_key,
        credits=credits,
        latency_scale=latency_scale,
        faults=faults,
        hmac_key=hmac_key or None,
        seed=seed,
        id_salt=token_hex(8),  # a restarted simulator never reuses a taskId
        upload_lifetime_seconds=upload_lifetime,
        foreign_inputs=foreign_inputs,
    )

    default = FaultProfile()
    changed = {
        f.name: getattr(faults, f.name)
        for f in fields(FaultProfile)
        if getattr(faults, f.name) != getattr(default, f.name)
    }

    def ready(base_url: str) -> None:
        click.echo(f"LiangXin simulator listening on {base_url}")
        click.echo("Point liangxin-batch at it with:")
        click.echo(f"  export LIANGXIN_BASE_URL={base_url}")
        click.echo(f"  export LIANGXIN_API_KEY={api_key}")
        click.echo(f"  export LIANGXIN_UPLOAD_BASE_URL={upload_base_url(base_url)}")
        if changed:
            click.echo("Faults: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
        click.echo("Press Ctrl-C to stop.")

    try:
        run_simulator(config, host, port, on_ready=ready, catalog=cli.catalog)
    except OSError as err:
        raise ConfigError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None
    except KeyboardInterrupt:
        # uvicorn re-raises the captured SIGINT after its graceful shutdown.
        pass
    click.echo("simulator stopped")
