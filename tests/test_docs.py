"""The README and --help stay true to the code (sqlite-utils' test_docs idea)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from liangxin_batch.catalog._catalog import default_catalog, render_model_table
from liangxin_batch.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_model_table_is_generated_from_the_catalog() -> None:
    found = re.search(r"<!-- models:start -->\n(.*?)\n<!-- models:end -->", README, re.S)
    assert found, "README lost its model table markers"
    assert found.group(1).strip() == render_model_table(default_catalog()).strip(), (
        "README model table is stale: paste `liangxin-batch models list --markdown`"
    )


def test_readme_shows_the_two_commands_and_they_are_the_ones_that_run() -> None:
    """The README's two commands are Makefile targets, and CI runs the test one as written."""
    section = README.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the two commands lost their code block"
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test", "test-fast"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no `{target}` target"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert [line for line in ci if line.startswith("make")] == ["make test"]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the main group loads its commands when asked
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
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
        found = cmd.get_command(click.Context(cmd), part)
        assert found is not None, part
        cmd = found
    assert (cmd.help or "").strip(), f"{' '.join(path)} has no help text"
    if len(path) == 1:
        assert f"`{path[0]}" in README, f"README does not mention `{path[0]}`"


def test_the_exit_code_table_is_the_cli_s() -> None:
    """Every code the CLI can exit with has its row, and each kind of error is where the
    table says (a row per code, in the README's "Exit codes" table)."""
    from liangxin_batch import errors as E
    from liangxin_batch.cli import _exit

    section = README.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M))
    codes = {_exit.EXIT_OK, _exit.EXIT_INCOMPLETE, _exit.EXIT_USAGE, _exit.EXIT_STOPPED}
    assert set(map(int, rows)) == codes | {_exit.EXIT_INTERRUPTED}
    cases = {
        E.ConfigError("x"): "configuration",
        E.ManifestError([]): "manifest",
        E.StateError("x"): "state file",
        E.DiskFullError("x"): "full disk",
        E.AuthError("x"): "401",
        E.InsufficientCreditsError("x"): "402",
    }
    for err, words in cases.items():
        assert words in rows[str(_exit.exit_code_for(err))], (err, words)


def test_readme_column_table_is_exactly_the_columns_results_csv_adds(tmp_path: Path) -> None:
    """Issue 15: every column the tool adds is in the README's table (name, type,
    meaning), in results.csv's order, and nothing else is: read from a real results.csv."""
    from liangxin_batch.outputs._report import RESULT_TYPES, write_results_csv
    from liangxin_batch.state._store import StateStore

    found = re.search(
        r"<!-- results-columns:start -->\n(.*?)<!-- results-columns:end -->", README, re.S
    )
    assert found, "README lost its results.csv column table markers"
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (.+?) \|$", found[1], re.M)
    columns = {"id": "a", "model": "z-image", "prompt": "p", "_note": "n"}
    store = StateStore.in_dir(tmp_path)
    try:
        store.upsert_jobs([("a", 0, "z-image", "{}", json.dumps(columns), "h")])
        header = (write_results_csv(tmp_path, store)).read_text("utf-8").splitlines()[0]
    finally:
        store.close()
    added = header.split(",")[len(columns) :]
    assert header.split(",")[: len(columns)] == list(columns), "manifest names kept"
    assert [name for name, _type, _meaning in rows] == added
    assert {name: kind for name, kind, _meaning in rows} == RESULT_TYPES


def test_readme_numbers_are_the_settings_defaults() -> None:
    from liangxin_batch.core._settings import RunSettings

    s = RunSettings()
    flat = " ".join(README.split())
    assert f"fails on its own after {s.create_retries} tries" in flat
    assert "Five jobs in a row ending alike" in flat and s.stop_after_alike == 5
    assert f"bounded queue ({s.max_download_backlog})" in README
    assert f"at most {s.create_burst} back to back, 2 POSTs on the wire" in flat
    assert f"never more than {s.max_concurrent_creates})" in flat


def test_the_readme_testing_example_runs(tmp_path: Path) -> None:
    """The example users copy into their own tests is run here as written."""
    found = re.search(
        r"<!-- testing-example:start -->\n```python\n(.*?)```\n<!-- testing-example:end -->",
        README,
        re.S,
    )
    assert found, "README lost its testing example markers"
    namespace: dict[str, object] = {}
    exec(compile(found.group(1), "README.md", "exec"), namespace)
    check = namespace["check_my_batch"]
    assert callable(check)
    check(tmp_path)
    assert len(list((tmp_path / "out" / "outputs").rglob("*.png"))) == 1


def test_the_readme_python_api_section_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: the README's Python API example, run as written (against the simulator)."""
    found = re.search(
        r"<!-- python-api:start -->\n```python\n(.*?)```\n<!-- python-api:end -->", README, re.S
    )
    assert found, "README lost its Python API markers"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.csv").write_text(
        "id,model,prompt,aspect_ratio\na,z-image,a red bicycle,16:9\nb,z-image,a kite,1:1\n"
    )
    printed: list[str] = []
    namespace: dict[str, object] = {"print": lambda *a: printed.append(" ".join(map(str, a)))}
    exec(compile(found.group(1), "README.md", "exec"), namespace)
    assert printed[0] == "OK: 2 jobs (z-image: 2)"
    assert printed[1] == "{'succeeded': 2} 2.0"  # one vocabulary: results.csv's words
    assert printed[2] == "{'succeeded': 2}"
    assert printed[3] == "Int64 datetime64[ns, UTC]"  # results(): real dtypes
    assert printed[4] == "{'z-image': 2.0}"


def test_the_readme_says_make_test_may_install_chromium_and_postgresql_as_root() -> None:
    """Issues 15 and 18: `make test` may run apt-get as root; the README says so, and when."""
    flat = " ".join(README.split())
    assert "install -y chromium" in flat and "as root" in flat
    assert "install -y postgresql" in flat
    assert "they are skipped, and the skip message says why" in flat
