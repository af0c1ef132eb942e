"""Issue 11, manifests: alias bombs, control characters, jobs_from outside its folder,
messages that never quote more than a short excerpt. Each failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from liangxin_batch.catalog._yaml12 import check_expansion, load_text
from liangxin_batch.cli import main
from liangxin_batch.core._records import GOT_MAX, got_text
from liangxin_batch.manifest._manifest import validate_manifest
from tests.manifest_support import CATALOG, only_problem, read, where, write


def bomb(levels: int, width: int = 10) -> str:
    """A billion-laughs document: `levels` lists of `width` aliases of the one before."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join(f"*a{i - 1}" for _ in range(width))
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append("jobs:")
    lines.append(f"  - {{model: z-image, prompt: x, aspect_ratio: '1:1', note: *a{levels}}}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", bomb(9))  # 10^9 nodes once expanded
    _jobs, problems = read(path)
    p = only_problem(problems)
    assert p.expected == "a manifest of bounded size"
    assert "more than 1,000,000 values" in p.got and "matrix" in p.got
    assert where(p)[0] == "m.yaml"


def test_a_small_shared_list_is_fine(tmp_path: Path) -> None:
    text = "vars:\n  base: &d {model: z-image, aspect_ratio: '1:1'}\njobs:\n" + "".join(
        f"  - {{<<: *d, prompt: p{i}}}\n" for i in range(3)
    )
    jobs, problems = read(write(tmp_path, "m.yaml", text))
    assert problems == [] and len(jobs) == 3


def test_aliases_of_a_long_text_are_refused_too(tmp_path: Path) -> None:
    """Few nodes, many characters: 300 copies of a 900 KB value is a bomb as well."""
    text = "vars:\n  s: &s " + "x" * 900_000 + "\n  l: &l [" + ", ".join(["*s"] * 300) + "]\n"
    text += "jobs:\n  - {model: z-image, prompt: p, aspect_ratio: '1:1', note: *l}\n"
    p = only_problem(read(write(tmp_path, "m.yaml", text))[1])
    assert "10,000,000 characters" in p.got


def test_a_large_plain_document_is_not_a_bomb() -> None:
    """Only what aliases add is bounded: 1.2 million plain values are a big manifest."""
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    tag = "tag:yaml.org,2002:str"
    jobs = [
        MappingNode(
            "tag:yaml.org,2002:map",
            [(ScalarNode(tag, "prompt"), ScalarNode(tag, "p")) for _ in range(3)],
        )
        for _ in range(200_000)
    ]
    check_expansion(SequenceNode("tag:yaml.org,2002:seq", jobs))  # no error


def test_a_minified_json_manifest_is_not_a_long_line(tmp_path: Path) -> None:
    import json

    rows = [
        {"model": "z-image", "prompt": f"{i} " + "a detailed prompt " * 40, "aspect_ratio": "1:1"}
        for i in range(2_000)
    ]
    path = write(tmp_path, "m.json", json.dumps(rows))  # one line of ~1.5 million characters
    report = validate_manifest(path, catalog=CATALOG)
    assert report.problems == () and report.jobs == 2_000


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(Exception, match="contains itself"):
        load_text("a: &a [*a]\n")


def test_a_huge_value_is_refused_with_its_size(tmp_path: Path) -> None:
    big = "x" * 1_200_000
    text = f"jobs:\n  - {{model: z-image, prompt: {big}, aspect_ratio: '1:1'}}\n"
    p = only_problem(read(write(tmp_path, "m.yaml", text))[1])
    assert "more than 1,000,000 characters" in p.got and len(p.format()) < 400
    assert where(p)[:2] == ("m.yaml", 2)


def test_a_huge_block_value_is_refused_with_its_size(tmp_path: Path) -> None:
    block = "".join(f"      line {i:07d} of a very long prompt\n" for i in range(40_000))
    text = f"jobs:\n  - model: z-image\n    aspect_ratio: '1:1'\n    prompt: |\n{block}"
    p = only_problem(read(write(tmp_path, "m.yaml", text))[1])
    assert "characters; at most 1,000,000" in p.got and len(p.format()) < 400


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("m.csv", 'model,prompt,aspect_ratio\nz-image,"a\x00b",1:1\n'),
        ("m.tsv", "model\tprompt\taspect_ratio\nz-image\ta\x1bb\t1:1\n"),
        ("m.jsonl", '{"model": "z-image", "prompt": "a\\u0000b", "aspect_ratio": "1:1"}\n'),
        ("m.json", '[{"model": "z-image", "prompt": "a\\u0007b", "aspect_ratio": "1:1"}]\n'),
        ("m.yaml", 'jobs:\n  - {model: z-image, prompt: "a\\x01b", aspect_ratio: "1:1"}\n'),
    ],
)
def test_control_characters_are_refused_in_every_format(
    tmp_path: Path, name: str, text: str
) -> None:
    p = only_problem(read(write(tmp_path, name, text))[1])
    assert where(p)[2] == "prompt"
    assert p.expected.startswith("text without control characters")
    assert p.got.startswith("U+00") and "at character 2" in p.got


def test_an_unpaired_surrogate_is_refused_where_it_was_written(tmp_path: Path) -> None:
    """JSON's "\\ud800" decodes to a lone surrogate that no encoder can write: refused in
    validation, with its place, not a UnicodeEncodeError halfway through a run."""
    text = '{"model": "z-image", "prompt": "a\\ud800b", "aspect_ratio": "1:1"}\n'
    p = only_problem(read(write(tmp_path, "m.jsonl", text))[1])
    assert where(p)[2] == "prompt"
    assert "unpaired surrogates" in p.expected and p.got.startswith("U+D800")
    paired = '{"model": "z-image", "prompt": "a\\ud83d\\ude00b", "aspect_ratio": "1:1"}\n'
    jobs, problems = read(write(tmp_path, "ok.jsonl", paired))
    assert problems == [] and jobs[0].input["prompt"] == "a\U0001f600b"


def test_tabs_and_newlines_are_text(tmp_path: Path) -> None:
    text = 'model,prompt,aspect_ratio\nz-image,"line one\nline\ttwo\r",1:1\n'
    jobs, problems = read(write(tmp_path, "m.csv", text))
    assert problems == [] and jobs[0].input["prompt"] == "line one\nline\ttwo\r"


def test_control_characters_inside_a_json_cell_are_found(tmp_path: Path) -> None:
    text = 'model,prompt,image_input\nnano-banana-pro,p,"[""https://x/a\\u0000.png""]"\n'
    p = only_problem(read(write(tmp_path, "m.csv", text))[1])
    assert where(p)[2] == "image_input" and "U+0000" in p.got


def test_control_characters_in_note_columns_and_column_names(tmp_path: Path) -> None:
    text = 'model,prompt,aspect_ratio,_note,"_bad\x1bname"\nz-image,p,1:1,"a\x00b",x\n'
    problems = read(write(tmp_path, "m.csv", text))[1]
    got = sorted(p.got for p in problems)
    assert any("U+0000" in g for g in got) and any("U+001B" in g for g in got)


def test_a_huge_column_name_is_quoted_short(tmp_path: Path) -> None:
    text = f"model,prompt,aspect_ratio,{'y' * 100_000}\nz-image,p,1:1,x\n"
    problems = read(write(tmp_path, "m.csv", text))[1]
    assert problems and all(len(p.format()) < 500 for p in problems)


def test_control_characters_inside_lists_are_found(tmp_path: Path) -> None:
    text = 'jobs:\n  - {model: nano-banana-pro, prompt: p, image_input: ["https://x/a\\x00.png"]}\n'
    p = only_problem(read(write(tmp_path, "m.yaml", text))[1])
    assert where(p)[2] == "image_input" and "U+0000" in p.got


# -- jobs_from ----------------------------------------------------------------------------


def _jobs_from(tmp_path: Path, target: str) -> Path:
    manifest = tmp_path / "proj" / "m.yaml"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text(f"defaults: {{model: z-image, aspect_ratio: '1:1'}}\njobs_from: {target}\n")
    return manifest


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.csv"
    path.write_text("prompt\nroot:x:0:0:root:/root:/bin/bash\n")
    return path


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_jobs_from_outside_the_manifest_folder_is_refused(
    tmp_path: Path, secret: Path, how: str
) -> None:
    if how == "dotdot":
        manifest = _jobs_from(tmp_path, "../secret.csv")
    elif how == "absolute":
        manifest = _jobs_from(tmp_path, str(secret))
    else:
        manifest = _jobs_from(tmp_path, "inside.csv")
        os.symlink(secret, manifest.parent / "inside.csv")
    report = validate_manifest(manifest, catalog=CATALOG)
    [p] = [p for p in report.problems if p.field == "jobs_from"]
    assert p.field == "jobs_from" and p.expected == "a file in the manifest's folder or below"
    assert "--allow-outside" in (p.suggestion or "")
    assert "root:x" not in p.format(), "nothing of the foreign file is echoed"
    allowed = validate_manifest(manifest, catalog=CATALOG, allow_outside=True)
    assert allowed.problems == () and allowed.jobs == 1


def test_jobs_from_below_the_manifest_folder_is_fine(tmp_path: Path) -> None:
    manifest = _jobs_from(tmp_path, "data/rows.csv")
    (manifest.parent / "data").mkdir()
    (manifest.parent / "data" / "rows.csv").write_text("prompt\na cat\n")
    assert validate_manifest(manifest, catalog=CATALOG).jobs == 1


def test_allow_outside_over_the_cli(tmp_path: Path, secret: Path) -> None:
    manifest = _jobs_from(tmp_path, "../secret.csv")
    refused = CliRunner().invoke(main, ["validate", str(manifest)])
    assert refused.exit_code == 2 and "--allow-outside" in refused.output
    allowed = CliRunner().invoke(main, ["validate", str(manifest), "--allow-outside"])
    assert allowed.exit_code == 0, allowed.output


# -- messages ---------------------------------------------------------------------------


def test_a_message_never_quotes_more_than_a_short_excerpt() -> None:
    assert len(got_text("x" * 50_000_000)) <= GOT_MAX
    assert len(got_text(["y" * 1000] * 100_000)) <= GOT_MAX
    assert len(got_text({"k": "z" * 10_000})) <= GOT_MAX
