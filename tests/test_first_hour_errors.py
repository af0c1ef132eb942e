"""Issue 15, errors a newcomer meets: YAML indented with tabs, a CSV that a European Excel
wrote with semicolons, an output folder that cannot be made. Through the real entry point:
the message, where, what to do, exit 2, no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli_support import child_env, cli

pytestmark = pytest.mark.slow


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("validate", str(path)),
        capture_output=True,
        text=True,
        env=child_env("http://127.0.0.1:9"),
        timeout=60,
    )


def test_a_yaml_indented_with_a_tab_says_indent_with_spaces(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n  - model: z-image\n\tprompt: a cat\n")
    done = _validate(path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{path}:3" in done.stderr
    assert "indent with spaces" in done.stderr
    assert "quote values" not in done.stderr  # the quoting hint is for other YAML errors


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_csv_separated_by_semicolons_is_read_as_such(tmp_path: Path, sep: str) -> None:
    """A header that splits into more columns on ';' (or a tab) than on ',' is read so."""
    path = tmp_path / "prompts.csv"
    rows = ["id,model,prompt,aspect_ratio".replace(",", sep)]
    rows += [sep.join([f"a{i}", "z-image", f"a cat, take {i}", "1:1"]) for i in range(3)]
    path.write_text("\n".join(rows) + "\n")
    done = _validate(path)
    assert done.returncode == 0, done.stderr
    assert "3 jobs" in done.stdout


def test_a_semicolon_csv_that_is_not_quite_right_says_what_it_was_read_as(
    tmp_path: Path,
) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text("id;model;prompt\na1;z-imag;a cat\n")
    done = _validate(path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "z-imag" in done.stderr  # the real problem, found because the columns were read
    assert "expected a model: a 'model' column" not in done.stderr


def test_a_comma_csv_with_semicolons_in_its_prompts_stays_a_comma_csv(tmp_path: Path) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text('id,model,prompt\na1,z-image,"a cat; a dog; a bird"\n')
    path.write_text(path.read_text() + "a2,z-image,plain\n")
    done = _validate(path)
    assert done.returncode == 2  # z-image needs aspect_ratio: the columns were read right
    assert "[aspect_ratio]" in done.stderr


@pytest.mark.parametrize("where", ["file-in-the-way", "proc"])
def test_an_out_folder_that_cannot_be_made_is_one_line_and_exit_2(
    tmp_path: Path, where: str
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,model,prompt,aspect_ratio\na1,z-image,a cat,1:1\n")
    (tmp_path / "taken").write_text("a file, not a folder")
    out = tmp_path / "taken" / "out" if where == "file-in-the-way" else Path("/proc/lxb-out")
    done = subprocess.run(
        cli("run", str(manifest), "--out", str(out)),
        capture_output=True,
        text=True,
        env=child_env("http://127.0.0.1:9"),
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "output folder" in lines[0], lines


@pytest.mark.parametrize("place", ["before", "after"])
def test_catalog_is_taken_before_or_after_the_command(tmp_path: Path, place: str) -> None:
    """`liangxin-batch validate m.csv --catalog my.yaml`, as users write it."""
    extra = tmp_path / "my.yaml"
    extra.write_text("models:\n  - id: z-image\n    patch: true\n    aliases: [zed]\n")
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,model,prompt,aspect_ratio\na1,zed,a cat,1:1\n")
    args = ["validate", str(manifest)]
    args = (
        ["--catalog", str(extra), *args] if place == "before" else [*args, "--catalog", str(extra)]
    )
    done = subprocess.run(
        cli(*args), capture_output=True, text=True, env=child_env("http://127.0.0.1:9"), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "1 job" in done.stdout


def test_models_fits_an_80_column_terminal_and_wide_shows_everything() -> None:
    env = child_env("http://127.0.0.1:9")
    narrow = subprocess.run(cli("models"), capture_output=True, text=True, env=env, timeout=60)
    assert narrow.returncode == 0
    table = narrow.stdout.split("\n\n")[0].splitlines()
    assert max(len(line) for line in table) <= 80, max(table, key=len)
    assert any(line.startswith("seedream/4.5-edit") for line in table)
    wide = subprocess.run(
        cli("models", "--wide"), capture_output=True, text=True, env=env, timeout=60
    )
    assert wide.returncode == 0
    assert "ALIASES" in wide.stdout and "seedream-4.5-t2i" in wide.stdout
    assert "Seedream4.5 - Text to Image" in wide.stdout


def test_the_callback_receiver_listens_on_loopback_away_from_the_simulators_port() -> None:
    """Default --listen: 127.0.0.1 (a proxy or tunnel exposes it), not all interfaces, and
    not 8787, where `simulate` listens by default."""
    from liangxin_batch.cli._run import _callback_options

    options = _callback_options("https://hooks.example.org/lx", None, None, trust_signed=False)
    assert options is not None
    host, port = options.listen.rsplit(":", 1)
    assert host == "127.0.0.1" and port != "8787"


def test_state_lock_the_readme_and_the_code_agree(tmp_path: Path) -> None:
    """The lock goes when a run ends; the file stays (issue 15: the README said both went)."""
    from liangxin_batch.state._lock import RunLock

    with RunLock(tmp_path):
        pass
    assert (tmp_path / "state.lock").exists()
    with RunLock(tmp_path):  # and it is free again
        pass
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.strip().startswith("state.lock"))
    assert "the file stays" in line and "gone" not in line


def test_the_readmes_layout_example_works_for_a_csv(tmp_path: Path) -> None:
    """The README's --layout example, run on a CSV with the column it names."""
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    template = re.search(r"`--layout '([^']+)'`", readme)
    assert template is not None
    names = re.findall(r"\{(\w+)\}", template.group(1))
    columns = [n for n in names if n not in ("model", "job_id", "index", "task_id", "date")]
    manifest = tmp_path / "m.csv"
    header = ["id", "model", "prompt", "aspect_ratio", *columns]
    manifest.write_text(",".join(header) + "\na1,z-image,a cat,1:1" + ",cats" * len(columns) + "\n")
    done = subprocess.run(
        cli(
            "run",
            str(manifest),
            "--out",
            str(tmp_path / "out"),
            "--simulate",
            "--layout",
            template.group(1),
        ),
        capture_output=True,
        text=True,
        env=child_env("http://127.0.0.1:9"),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [
        p.relative_to(tmp_path / "out" / "outputs").as_posix()
        for p in (tmp_path / "out" / "outputs").rglob("*.png")
    ] == ["z-image/cats/a1.png"]


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_placeholder_image_urls_are_warned_about_not_refused(tmp_path: Path, command: str) -> None:
    """example.com and localhost URLs pass the checks but cannot be what the user meant:
    a located warning, exit 0 (issue 15)."""
    manifest = tmp_path / "edit.yaml"
    manifest.write_text(
        "jobs:\n"
        "  - id: e1\n    model: seedream/4.5-edit\n    prompt: make it blue\n"
        "    aspect_ratio: '1:1'\n    quality: basic\n"
        "    image_urls: [https://example.com/shoe.png]\n"
        "  - id: e2\n    model: seedream/4.5-edit\n    prompt: make it red\n"
        "    aspect_ratio: '1:1'\n    quality: basic\n"
        "    image_urls: ['http://localhost:8000/a.png', 'https://cdn.real-shop.cn/b.png']\n"
        "  - id: e3\n    model: seedream/4.5-edit\n    prompt: fine\n"
        "    aspect_ratio: '1:1'\n    quality: basic\n"
        "    image_urls: [https://cdn.real-shop.cn/c.png]\n"
    )
    done = subprocess.run(
        cli(command, str(manifest)),
        capture_output=True,
        text=True,
        env=child_env("http://127.0.0.1:9"),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 2, done.stderr
    assert f"{manifest}:7" in warnings[0] and "example.com" in warnings[0]
    assert f"{manifest}:13" in warnings[1] and "localhost" in warnings[1]
    assert "real-shop" not in done.stderr


def test_a_malformed_catalog_is_told_in_words_not_pydantic(tmp_path: Path) -> None:
    """Issue 15: where (file, model, field), what was given, and a guess."""
    bad = tmp_path / "my.yaml"
    bad.write_text(
        "models:\n  - id: my-model\n    name: Mine\n    kind: image\n"
        "    typical_seconds: five\n    price: {credits: 1}\n    fields:\n"
        "      prompt: {type: strin, required: true, max_lenght: 5}\n"
    )
    done = subprocess.run(
        cli("--catalog", str(bad), "models"),
        capture_output=True,
        text=True,
        env=child_env("http://127.0.0.1:9"),
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    text = done.stderr
    assert f"{bad}: model 'my-model'" in text
    assert "fields.prompt.type: expected one of string, integer" in text
    assert "got 'strin'; did you mean 'string'?" in text
    assert "fields.prompt.max_lenght: unknown key; did you mean 'max_length'?" in text
    assert "typical_seconds: expected a number; got 'five'" in text
    assert "Input should be" not in text and "Extra inputs" not in text


def _nothing_listens() -> str:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_base_url_where_nothing_listens_is_named_within_seconds(
    tmp_path: Path, command: str
) -> None:
    """Issue 15: refused connections before anything was sent mean a wrong
    LIANGXIN_BASE_URL (or a service that is down): say so fast, exit 2."""
    import time

    manifest = tmp_path / "m.csv"
    manifest.write_text("id,model,prompt,aspect_ratio\na1,z-image,a cat,1:1\n")
    url = _nothing_listens()
    args = ["run", str(manifest), "--out", str(tmp_path / "o")]
    if command == "plan":
        args = ["plan", str(manifest), "--check-balance"]
    started = time.monotonic()
    done = subprocess.run(
        cli(*args), capture_output=True, text=True, env=child_env(url), timeout=120
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "LIANGXIN_BASE_URL" in done.stderr and url in done.stderr
    assert "nothing was sent" in done.stderr
    assert took < 20, took
