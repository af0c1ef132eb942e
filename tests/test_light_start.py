"""`--help` and `status` start light: the CLI's import pulls in none of the heavy
libraries a run needs (0.3 s of `--help` went to importing them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("pandas", "pydantic", "httpx", "PIL", "numpy", "pyarrow", "starlette", "jinja2")


def imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    modules: list[str] = json.loads(out.splitlines()[-1])
    return modules


def test_importing_the_cli_imports_nothing_heavy() -> None:
    modules = imported_after("import liangxin_batch.cli")
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert heavy == []
    assert "importlib.metadata" not in modules, "the version is read when asked for"


def test_the_package_loads_a_public_name_when_it_is_used() -> None:
    modules = imported_after("import liangxin_batch; liangxin_batch.RunSettings")
    assert "httpx" not in modules and "pydantic" not in modules
    modules = imported_after("import liangxin_batch; liangxin_batch.LiangXinClient")
    assert "httpx" in modules


#: What `--help` may import of ours: the package, its errors and the group itself.
_HELP_MODULES = {"liangxin_batch", "liangxin_batch.errors", "liangxin_batch.cli"}
_HELP_PROBE = """
import io, contextlib, sys
import click
from liangxin_batch.cli import main

def help_text():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(["--help"], prog_name="liangxin-batch")
        except SystemExit:
            pass
    return out.getvalue()

lazy = help_text()
modules = sorted(sys.modules)
ctx = click.Context(main)
for name in main.list_commands(ctx):
    main.get_command(ctx, name)
import json
print(json.dumps({"lazy": lazy, "loaded": help_text(), "modules": modules}))
"""


def test_help_imports_no_command_and_lists_each_as_its_own_help_says() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True, check=True
    ).stdout
    probe = json.loads(out.splitlines()[-1])
    modules: list[str] = probe["modules"]
    ours = {m for m in modules if m.startswith("liangxin_batch")}
    assert ours - _HELP_MODULES <= {"liangxin_batch.cli._lazy"}, "a command module at --help"
    heavy = {m.split(".")[0] for m in modules} & {*HEAVY, "sqlite3", "yaml", "pathlib"}
    assert heavy == set()
    # The lines listed from the table are the ones the loaded commands give themselves.
    assert probe["lazy"] == probe["loaded"]
    listing = probe["lazy"].split("Commands:\n", 1)[1]
    assert [line.split()[0] for line in listing.splitlines()] == sorted(_defined_commands())


def _defined_commands() -> set[str]:
    """The top-level commands the CLI's modules define (not the subcommands of a group)."""
    import importlib
    import pkgutil

    import click

    import liangxin_batch.cli as cli

    found: dict[int, click.Command] = {}
    nested: set[int] = set()
    for info in pkgutil.iter_modules(cli.__path__):
        module = importlib.import_module(f"{cli.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, click.Command) and value is not cli.main:
                found[id(value)] = value
                if isinstance(value, click.Group):
                    nested.update(map(id, value.commands.values()))
    return {cmd.name or "" for key, cmd in found.items() if key not in nested}


def test_every_command_the_modules_define_is_in_the_table() -> None:
    from liangxin_batch.cli import _COMMANDS

    assert _defined_commands() == set(_COMMANDS)


def test_validate_reads_the_builtin_catalog_without_pydantic(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,model,prompt,aspect_ratio\na,z-image,a fox,1:1\n", encoding="utf-8")
    modules = imported_after(
        "from liangxin_batch.cli import main\n"
        f"try:\n    main(['validate', {str(manifest)!r}])\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code"
    )
    heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert heavy == []
