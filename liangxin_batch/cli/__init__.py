"""The `liangxin-batch` command: a thin click adapter over the library.

Each area defines its commands in its own module (`cli/_*.py`), imported only when one
of them is used (`_lazy.LazyGroup`): `--help` lists them from `_COMMANDS` without paying
for their imports. The context they share lives in `_context.py`, so no command module
imports this one. Library errors (`LiangXinBatchError`) become a message on stderr and
their documented exit code — never a traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from liangxin_batch.cli._lazy import Lazy, LazyGroup
from liangxin_batch.errors import LiangXinBatchError, redact

if TYPE_CHECKING:
    from liangxin_batch.cli._context import CliContext, pass_cli

__all__ = ["CliContext", "main", "pass_cli"]

_CLI = "liangxin_batch.cli."

#: Every command: its module and name there, and its help's first paragraph (the line
#: `--help` shows; tests/test_light_start.py checks it against the command's own help).
_COMMANDS = {
    "demo": Lazy(
        _CLI + "_run",
        "demo_command",
        "Run the quickstart manifest against the built-in simulator (no account, no network).",
    ),
    "export": Lazy(
        _CLI + "_outputs",
        "export_command",
        "Write the results of DIR as a table (csv, jsonl, parquet, xlsx) or a dataset "
        "(hf, webdataset, parquet --embed-images) at OUT.",
    ),
    "models": Lazy(
        _CLI + "_models",
        "models_group",
        "List the models in the catalog (with any --catalog files applied).",
    ),
    "plan": Lazy(
        _CLI + "_manifest",
        "plan_command",
        "Show what running MANIFEST would do: jobs and credits per model, the shortest "
        "duration at --rate and --max-in-flight, and where outputs would land. Nothing is "
        "sent (--check-balance only reads the balance).",
    ),
    "report": Lazy(
        _CLI + "_outputs",
        "report_command",
        "Rebuild DIR/results.csv, DIR/report.html and thumbnails from the state alone.",
    ),
    "run": Lazy(
        _CLI + "_run",
        "run_command",
        "Run MANIFEST to finished tasks in --out; run it again to resume.",
    ),
    "simulate": Lazy(
        _CLI + "_sim",
        "simulate_command",
        "Serve a local LiangXin simulator (same API, real files, optional faults).",
    ),
    "status": Lazy(
        _CLI + "_run",
        "status_command",
        "Counts by state and model, oldest tasks in flight, recent problems, credits used.",
    ),
    "validate": Lazy(
        _CLI + "_manifest",
        "validate_command",
        "Check every job in MANIFEST against the catalog; nothing is sent.",
    ),
}


def __getattr__(name: str) -> Any:
    # The shared context loads with the first command that runs, not for `--help`.
    if name in ("CliContext", "pass_cli"):
        from liangxin_batch.cli import _context

        return getattr(_context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _more_catalogs(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> None:
    if value:
        from pathlib import Path

        from liangxin_batch.cli._context import CliContext

        cli = ctx.ensure_object(CliContext)
        cli.catalog_paths = (*cli.catalog_paths, *(Path(v) for v in value))


def _catalog_after(command: click.Command) -> None:
    """Every command also takes --catalog after its name, as users write it."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _catalog_after(sub)
        return
    command.params.append(
        click.Option(
            ["--catalog"],
            multiple=True,
            type=click.Path(exists=True, dir_okay=False),
            expose_value=False,
            is_eager=True,  # before any other option's callback may read the catalog
            callback=_more_catalogs,
            help="Extra catalog YAML (also accepted before the command).",
        )
    )


class _Group(LazyGroup):
    """Turns our own errors into a message and an exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LiangXinBatchError as err:
            from liangxin_batch.cli._exit import exit_code_for

            click.echo(f"error: {redact(str(err))}", err=True)
            sys.exit(exit_code_for(err))
        except KeyboardInterrupt:  # before a run started (a run handles Ctrl-C itself)
            from liangxin_batch.cli._exit import EXIT_INTERRUPTED

            click.echo("\ninterrupted before anything was sent", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(
    cls=_Group,
    lazy=_COMMANDS,
    prepare=_catalog_after,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--catalog",
    "catalog_paths",
    multiple=True,
    # Strings, made paths below: click's path_type=Path would import pathlib for --help.
    type=click.Path(exists=True, dir_okay=False),
    envvar="LIANGXIN_CATALOG",
    help="Extra catalog YAML that adds or overrides models (repeatable; env LIANGXIN_CATALOG).",
)
@click.version_option(package_name="liangxin-batch")
@click.pass_context
def main(ctx: click.Context, catalog_paths: tuple[str, ...]) -> None:
    """Run large prompt sets through the LiangXin Market API.

    Exit codes: 0 all jobs succeeded; 1 some jobs did not succeed; 2 bad manifest, catalog
    or usage (nothing sent); 3 stopped for a reason you must fix (auth, credits, quota);
    130 interrupted (run the same command again to resume).
    """
    from pathlib import Path

    from liangxin_batch.cli._context import CliContext

    ctx.obj = CliContext(catalog_paths=tuple(Path(p) for p in catalog_paths))
