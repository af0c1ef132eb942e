"""A click group that imports a command's module only when the command is used.

`liangxin-batch --help` lists every command with its help line from a table (`Lazy`),
so it imports none of the command modules nor what they import (the state, the
catalog, dataclasses and enums); `liangxin-batch CMD ...` and `CMD --help` import CMD's
module alone. tests/test_light_start.py holds the table's help lines to the commands'
own, and its names to the commands the modules define.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from gettext import gettext as _
from typing import NamedTuple

import click

__all__ = ["Lazy", "LazyGroup"]


class Lazy(NamedTuple):
    """Where a command lives, and the first paragraph of its help (for the listing)."""

    module: str
    attr: str
    text: str

    def load(self) -> click.Command:
        command = getattr(importlib.import_module(self.module), self.attr)
        assert isinstance(command, click.Command), f"{self.module}.{self.attr}"
        return command


class LazyGroup(click.Group):
    """A group whose commands, besides those added, come from `lazy` on first use;
    `prepare` adjusts each loaded command once (shared options)."""

    def __init__(
        self,
        *args: object,
        lazy: Mapping[str, Lazy],
        prepare: Callable[[click.Command], None],
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)
        self.prepare = prepare

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            command = self.lazy[cmd_name].load()
            self.prepare(command)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as err:
            # click suggests close names from the commands loaded (none yet, usually):
            # from every command instead, as before they loaded lazily.
            name = getattr(err, "command_name", None)
            if not isinstance(name, str) or not hasattr(err, "possibilities"):
                raise
            raise type(err)(name, possibilities=self.list_commands(ctx), ctx=ctx) from None  # type: ignore[call-arg]

    def help_line(self, name: str, limit: int) -> str:
        """A command's line in the listing, as click would write it, without loading it."""
        # A stand-in with the same help gives click's own shortening, whatever the version.
        command = self.commands.get(name) or click.Command(name, help=self.lazy[name].text)
        return command.get_short_help_str(limit)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own, with the lines of commands not yet loaded taken from the table (no
        # lazy command is hidden).
        names = [n for n in self.list_commands(ctx) if n in self.lazy or self._shown(ctx, n)]
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(name, self.help_line(name, limit)) for name in names]
        with formatter.section(_("Commands")):
            formatter.write_dl(rows)

    def _shown(self, ctx: click.Context, name: str) -> bool:
        command = self.get_command(ctx, name)
        return command is not None and not command.hidden
