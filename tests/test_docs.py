"""The README and --help stay true to the code (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from liangxin_batch._catalog import default_catalog, render_model_table
from liangxin_batch.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_model_table_is_generated_from_the_catalog() -> None:
    found = re.search(r"<!-- models:start -->\n(.*?)\n<!-- models:end -->", README, re.S)
    assert found, "README lost its model table markers"
    assert found.group(1).strip() == render_model_table(default_catalog()).strip(), (
        "README model table is stale: paste `liangxin-batch models list --markdown`"
    )


def test_readme_shows_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, (*prefix, name)))
    return out


@pytest.mark.parametrize("path", _commands(main), ids=" ".join)
def test_every_command_has_help_and_is_in_the_readme(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    cmd: click.Command = main
    for part in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[part]
    assert (cmd.help or "").strip(), f"{' '.join(path)} has no help text"
    if len(path) == 1:
        assert f"`{path[0]}" in README, f"README does not mention `{path[0]}`"


def test_every_exit_code_is_documented() -> None:
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"):
        assert code in README
