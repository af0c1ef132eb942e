"""`validate` and `plan` through click's runner, and random bad manifests (hypothesis)."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import liangxin_batch.catalog._catalog as _catalog
import liangxin_batch.cli._manifest as _cli_manifest
from liangxin_batch.cli import main
from liangxin_batch.run._client import LiangXinClient
from tests.manifest_support import write

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(
    [*(ROOT / "manifests").iterdir(), *(ROOT / "examples").iterdir()], key=lambda p: p.name
)
SHIPPED = [p for p in SHIPPED if p.is_file() and p.suffix != ".md"]  # not photos/


@pytest.fixture(autouse=True, scope="module")
def _builtin_catalog_once() -> Iterator[None]:
    """Every invocation would parse catalog.yaml again (~30 ms); the property tests run hundreds."""
    cached = _catalog.default_catalog()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_catalog, "load_catalog", lambda extra=(): cached if not extra else _load(extra))
        yield


_load = _catalog.load_catalog


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_exit(result: Result) -> None:
    """Exit 0 or 2 and never a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output


def assert_located(result: Result, path: Path) -> None:
    """Every problem line names the file and a line number."""
    lines = result.stderr.splitlines()
    assert lines, result.output
    assert lines[0].startswith("error: ")
    assert re.match(r"error: \d+ problem\(s\) in the manifest; nothing was sent:$", lines[0]), (
        lines[0]
    )
    body = lines[1:]
    assert body
    located = re.compile(re.escape(str(path)) + r":\d+ ")
    for line in body:
        assert located.match(line) or re.fullmatch(
            r"\.\.\. and \d+ more problem\(s\) not shown", line
        ), line


def test_shipped_manifests_are_found() -> None:
    names = {p.name for p in SHIPPED}
    assert {
        "quickstart.yaml",
        "edit.yaml",
        "jobs.csv",
        "jobs.tsv",
        "jobs.yaml",
        "jobs.jsonl",
    } <= names
    assert len([p for p in SHIPPED if p.parent.name == "manifests"]) >= 6


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_every_shipped_manifest_validates(path: Path) -> None:
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: ")


def test_quickstart_is_small_cheap_and_mixed() -> None:
    from liangxin_batch.catalog._catalog import default_catalog
    from liangxin_batch.manifest._manifest import validate_manifest

    report = validate_manifest(ROOT / "examples" / "quickstart.yaml", catalog=default_catalog())
    assert 6 <= report.jobs <= 10
    assert {
        "z-image",
        "seedream/4.5-text-to-image",
        "google/nano-banana",
        "kling-3.0/video",
    } <= set(report.per_model)
    assert report.per_model["kling-3.0/video"] == 1
    assert report.total_credits < 100


def test_validate_ok(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "model,prompt,aspect_ratio\nz-image,a,1:1\nz-image,b,16:9\n")
    result = invoke("validate", path)
    assert (result.exit_code, result.stdout) == (0, "OK: 2 jobs (z-image: 2)\n")


def test_validate_problems_exit_2_located(tmp_path: Path) -> None:
    path = write(
        tmp_path, "m.csv", "model,prompt,aspect_ratio\nz-image,a,1:1\nz-image,b,16-9\nnope,c,1:1\n"
    )
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert f"{path}:3 [aspect_ratio] expected one of" in result.stderr
    assert f"{path}:4 [model] expected a model in the catalog; got 'nope'" in result.stderr
    assert_located(result, path)


def test_validate_default_model_and_max_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "prompt,aspect_ratio\na,1:1\nb,9:9\nc,8:8\nd,7:7\n")
    assert invoke("validate", path, "--model", "z-image", "--max-problems", "1").stderr.endswith(
        "... and 2 more problem(s) not shown\n"
    )
    ok = write(tmp_path, "ok.csv", "prompt,aspect_ratio\na,1:1\n")
    assert invoke("validate", ok, "--model", "zimage").stdout == "OK: 1 jobs (z-image: 1)\n"


def test_validate_missing_file_and_unknown_format(tmp_path: Path) -> None:
    missing = invoke("validate", tmp_path / "nope.csv")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    other = write(tmp_path, "m.txt", "x")
    result = invoke("validate", other)
    assert result.exit_code == 2 and "unknown manifest format '.txt'" in result.stderr


def test_plan(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "model,prompt,aspect_ratio\nz-image,a,1:1\nz-image,b,16:9\n")
    result = invoke(
        "plan", path, "--out", tmp_path / "o", "--rate", "1/min", "--max-in-flight", "5"
    )
    assert result.exit_code == 0, result.output
    assert "z-image" in result.stdout and "2.0" in result.stdout  # 0.8 each, billed as 1
    assert "create rate 1/60s: submitting takes 1m 00s" in result.stdout
    assert f"{tmp_path}/o/outputs/z-image/z-image-" in result.stdout
    assert not (tmp_path / "o").exists()  # planning writes nothing


def test_plan_refuses_over_max_credits(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "model,prompt,aspect_ratio\nz-image,a,1:1\nz-image,b,16:9\n")
    assert invoke("plan", path, "--max-credits", "2").exit_code == 0
    result = invoke("plan", path, "--max-credits", "1.9")
    assert result.exit_code == 2
    assert "more than --max-credits 1.9; nothing was sent" in result.stderr


def test_plan_bad_rate_and_bad_manifest(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "model,prompt,aspect_ratio\nz-image,a,1:1\n")
    result = invoke("plan", path, "--rate", "fast")
    assert result.exit_code == 2 and "--rate: expected a rate like 20/10s" in result.stderr
    bad = write(tmp_path, "b.csv", "model,prompt,aspect_ratio\nz-image,a,2:1\n")
    result = invoke("plan", bad)
    assert result.exit_code == 2 and f"{bad}:2 [aspect_ratio]" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(("balance", "covers"), [(100, True), (0, False)])
def test_plan_check_balance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, balance: int, covers: bool
) -> None:
    seen: list[str | None] = []

    def fake(base_url: str | None) -> int:
        seen.append(base_url)
        return balance

    monkeypatch.setattr(_cli_manifest, "fetch_balance", fake)
    path = write(tmp_path, "m.csv", "model,prompt,aspect_ratio\nz-image,a,1:1\n")
    result = invoke("plan", path, "--check-balance", "--base-url", "https://lx.test")
    assert result.exit_code == 0, result.output
    assert seen == ["https://lx.test"]
    if covers:
        assert "Balance: 100 credits; covers the estimate of 1.0 (99.0 left" in result.stdout
    else:
        assert (
            "Balance: 0 credits; does NOT cover the estimate of 1.0 (short by 1.0)" in result.stdout
        )


def test_plan_check_balance_reads_through_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def credits(self: LiangXinClient) -> int:
        return 3

    async def reachable(self: LiangXinClient) -> None:
        return None  # lx.test is not looked up: no test leaves the loopback

    monkeypatch.setattr(LiangXinClient, "get_credits", credits)
    monkeypatch.setattr(LiangXinClient, "check_reachable", reachable)
    monkeypatch.setenv("LIANGXIN_API_KEY", "sk-test")
    monkeypatch.setenv("LIANGXIN_BASE_URL", "https://lx.test")
    path = write(
        tmp_path,
        "m.csv",
        "model,prompt,quality,aspect_ratio\nseedream/4.5-text-to-image,a,basic,1:1\n",
    )
    result = invoke("plan", path, "--check-balance")
    assert result.exit_code == 0, result.output
    assert "Balance: 3 credits; does NOT cover the estimate of 7.0 (short by 4.0)" in result.stdout


def test_plan_check_balance_without_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIANGXIN_API_KEY", raising=False)
    monkeypatch.delenv("LIANGXIN_BASE_URL", raising=False)
    path = write(tmp_path, "m.csv", "model,prompt,aspect_ratio\nz-image,a,1:1\n")
    result = invoke("plan", path, "--check-balance")
    assert result.exit_code == 2
    assert "LIANGXIN_BASE_URL" in result.stderr
    assert_clean_exit(result)


# ---- random bad manifests -------------------------------------------------------------------

FIELD_NAMES = [
    "id",
    "model",
    "prompt",
    "aspect_ratio",
    "quality",
    "resolution",
    "seed",
    "image_urls",
    "input",
    "repeat",
    "duration",
    "mode",
    "_note",
    "nsfw_checker",
    "",
    "bogus",
]
MODELS = ["z-image", "seedream/4.5-text-to-image", "kling-3.0/video", "nano-banana-pro", "nope", ""]
CELL = st.one_of(
    st.sampled_from(
        [
            "",
            "1:1",
            "16:9",
            "16-9",
            "basic",
            "2K",
            "true",
            "maybe",
            "00042",
            "5",
            "-1",
            "https://e.com/a.png",
            "a|b",
            "[1, 2]",
            '{"seed": 1}',
            "{",
            "001",
            "a b",
            ".x",
        ]
    ),
    st.sampled_from(MODELS),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
    st.text(alphabet='ab,"\n\r\t {}[]:|', max_size=10),
)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 100), CELL)
TREE = st.recursive(
    SCALAR,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from([*FIELD_NAMES, "defaults", "vars", "matrix", "jobs"]),
            children,
            max_size=5,
        ),
    ),
    max_leaves=20,
)
TOP = st.dictionaries(
    st.sampled_from(["defaults", "vars", "matrix", "jobs", "jobs_from", "repeat", "job", "model"]),
    TREE,
    max_size=5,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_file(name: str, content: bytes | str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), name, content)
        result = invoke("validate", path)
        assert_clean_exit(result)
        if result.exit_code == 2:
            assert_located(result, path)
        else:
            assert result.stdout.startswith("OK: ")


@PROPERTY
@given(st.sampled_from(["m.csv", "m.tsv", "m.yaml", "m.jsonl", "m.json"]), st.binary(max_size=300))
def test_random_bytes(name: str, content: bytes) -> None:
    check_file(name, content)


@PROPERTY
@given(
    st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=6),
    st.lists(st.lists(CELL, max_size=7), max_size=6),
    st.sampled_from([",", "\t"]),
)
def test_random_tables(header: list[str], rows: list[list[str]], sep: str) -> None:
    def line(cells: list[str]) -> str:
        return sep.join(
            '"' + c.replace('"', '""') + '"' if (sep in c or "\n" in c) else c for c in cells
        )

    text = "\n".join([line(header), *(line(r) for r in rows)]) + "\n"
    check_file("m.csv" if sep == "," else "m.tsv", text)


@PROPERTY
@given(st.one_of(TOP, TREE))
def test_random_yaml(doc: Any) -> None:
    check_file("m.yaml", yaml.safe_dump(doc, allow_unicode=True))


@pytest.mark.parametrize("name", ["\x00", "a\x00b.csv", "rows\n.csv", "\x1b[31m.csv"])
def test_a_jobs_from_name_with_control_characters_is_refused_where_it_stands(name: str) -> None:
    """Found by test_random_yaml: a NUL in `jobs_from` reached the file system's path
    resolution (ValueError: embedded null byte) instead of a located message."""
    check_file("m.yaml", yaml.safe_dump({"jobs_from": name}))


@pytest.mark.parametrize("path", ["./a\x00b.png", "a\x00", "file:///tmp/a%00b.png"])
def test_a_local_input_path_with_a_nul_is_refused_where_it_stands(path: str) -> None:
    """A local image path holding a NUL (JSON can carry one) reached os.stat, whose
    ValueError was a traceback instead of the row's located problem."""
    row = {"model": "nano-banana-edit", "prompt": "hi", "image_urls": [path]}
    check_file("m.jsonl", json.dumps(row) + "\n")


@PROPERTY
@given(
    st.lists(
        st.one_of(st.dictionaries(st.sampled_from(FIELD_NAMES), TREE, max_size=6), TREE), max_size=5
    )
)
def test_random_jsonl(lines: list[Any]) -> None:
    check_file("m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")


BAD_CELLS = {  # column -> a value z-image refuses, and a word of what the message expects
    "aspect_ratio": ("16-9", "one of"),
    "model": ("z-imag", "a model in the catalog"),
    "prompt": ("x" * 1001, "at most 1000"),
    "nsfw_checker": ("maybe", "true or false"),
}


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="abcdefgh ,;:'", min_size=1, max_size=20).filter(str.strip),
            st.sampled_from(["1:1", "4:3", "3:4", "16:9", "9:16"]),
            st.sampled_from(["", "true", "false"]),
        ),
        min_size=1,
        max_size=30,
    ),
    st.data(),
)
def test_one_bad_cell_anywhere_gives_exit_2_naming_its_row_and_column(
    rows: list[tuple[str, str, str]], data: st.DataObject
) -> None:
    """Random valid tables with one bad cell put in at random: always exit 2, located."""
    bad_row = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.sampled_from(sorted(BAD_CELLS)))
    value, expected = BAD_CELLS[column]
    lines = ["id,model,prompt,aspect_ratio,nsfw_checker"]
    for i, (prompt, ratio, nsfw) in enumerate(rows):
        cells = {"model": "z-image", "prompt": prompt, "aspect_ratio": ratio, "nsfw_checker": nsfw}
        if i == bad_row:
            cells[column] = value
        quoted = ['"' + cells[c].replace('"', '""') + '"' for c in lines[0].split(",")[1:]]
        lines.append(",".join([f"r{i}", *quoted]))
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), "m.csv", "\n".join(lines) + "\n")
        result = invoke("validate", path)
        assert_clean_exit(result)
        assert result.exit_code == 2
        assert_located(result, path)
        problem = result.stderr.splitlines()[1]
        assert problem.startswith(f"{path}:{bad_row + 2} [{column}]"), problem
        assert expected in problem
