"""Click options that more than one command takes, defined once so their defaults agree."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["manifest_arg", "max_in_flight_opt", "model_opt", "rate_opt"]

manifest_arg = click.argument(
    "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path)
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
    help="Tasks submitted and not yet finished.",
)
