"""The `liangxin-batch` command: a thin click adapter over the library.

Each area registers its commands from its own module (`cli/_*.py`); the context they
share lives in `_context.py`, so no command module imports this one. Library errors
(`LiangXinBatchError`) become a message on stderr and their documented exit code —
never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from liangxin_batch.cli._context import CliContext, pass_cli
from liangxin_batch.errors import LiangXinBatchError, redact

__all__ = ["CliContext", "main", "pass_cli"]


class _Group(click.Group):
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--catalog",
    "catalog_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="LIANGXIN_CATALOG",
    help="Extra catalog YAML that adds or overrides models (repeatable; env LIANGXIN_CATALOG).",
)
@click.version_option(package_name="liangxin-batch")
@click.pass_context
def main(ctx: click.Context, catalog_paths: tuple[Path, ...]) -> None:
    """Run large prompt sets through the LiangXin Market API.

    Exit codes: 0 all jobs succeeded; 1 some jobs did not succeed; 2 bad manifest, catalog
    or usage (nothing sent); 3 stopped for a reason you must fix (auth, credits, quota);
    130 interrupted (run the same command again to resume).
    """
    ctx.obj = CliContext(catalog_paths=catalog_paths)


def _more_catalogs(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> None:
    if value:
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


def _register() -> None:
    from liangxin_batch.cli import _manifest, _models, _outputs, _run, _sim

    for module in (_models, _manifest, _run, _outputs, _sim):
        module.register(main)
    for command in main.commands.values():
        _catalog_after(command)


_register()
