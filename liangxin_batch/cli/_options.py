"""Click options that more than one command takes, defined once so their defaults agree."""

from __future__ import annotations

from pathlib import Path

import click

from liangxin_batch.errors import ConfigError

__all__ = [
    "accounts_opt",
    "allow_outside_opt",
    "base_url_opt",
    "log_retries",
    "manifest_arg",
    "max_image_pixels_opt",
    "max_in_flight_opt",
    "model_opt",
    "parse_rate_flag",
    "rate_opt",
    "state_opt",
]

manifest_arg = click.argument(
    "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
allow_outside_opt = click.option(
    "--allow-outside",
    is_flag=True,
    help="Let `jobs_from` read files outside the manifest's folder (refused by default).",
)
max_image_pixels_opt = click.option(
    "--max-image-pixels",
    default=40_000_000,
    show_default=True,
    type=click.IntRange(1),
    help="Larger images get no thumbnail and are verified without a full decode.",
)
model_opt = click.option("--model", "default_model", help="Model for rows and jobs that name none.")
rate_opt = click.option(
    "--rate", default="20/10s", show_default=True, help="createTask rate limit."
)
max_in_flight_opt = click.option(
    "--max-in-flight",
    default=100,
    show_default=True,
    type=click.IntRange(1),
    help="Tasks running at the service at once, as expected from learned latencies "
    "(results not yet polled do not hold submission back; at most 3x this followed).",
)
state_opt = click.option(
    "--state",
    "state",
    metavar="URL",
    help="Where the batch's state lives: a postgresql://user@host:port/database URL "
    "(needs liangxin-batch[postgres]) [env LIANGXIN_STATE_URL; default: DIR/state.db].",
)
accounts_opt = click.option(
    "--accounts",
    "accounts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A YAML file of accounts (name, key_env, rate, poll_rate) to spread the jobs "
    "over, each with its own key and limits (instead of LIANGXIN_API_KEY).",
)
base_url_opt = click.option(
    "--base-url", envvar="LIANGXIN_BASE_URL", help="API base URL [env LIANGXIN_BASE_URL]."
)


def parse_rate_flag(text: str, flag: str) -> tuple[int, float]:
    """`20/10s` -> (20, 10.0); a ConfigError that names the flag otherwise."""
    from liangxin_batch.core._rates import parse_rate

    try:
        return parse_rate(text)
    except ConfigError as err:
        raise ConfigError(f"{flag}: {err}") from None


def log_retries() -> None:
    """Retries of idempotent calls go to our log (and run.log), not stderr, where
    stamina's default hook would tear the bars. Process-wide: the application's choice,
    made here in the CLI, never by the library."""
    import stamina.instrumentation

    from liangxin_batch.run._client import log_retry

    stamina.instrumentation.set_on_retry_hooks([log_retry])
