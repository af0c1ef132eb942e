"""`liangxin-batch models ...` through click's test runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from liangxin_batch.catalog._catalog import default_catalog, render_model_table
from liangxin_batch.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_models_lists_every_model() -> None:
    code, out, _err = run("models", "--wide")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["MODEL", "KIND", "EST.", "CREDITS", "NAME", "ALIASES"]
    for spec in default_catalog():
        row = next(line for line in lines if line.startswith(spec.id + " "))
        assert spec.kind in row and spec.name in row
        assert all(alias in row for alias in spec.aliases)
    kling = next(line for line in lines if line.startswith("kling-3.0/video"))
    assert "[!]" in kling and "90 ($0.45)" in kling


def test_models_show_nano_banana_pro() -> None:
    code, out, _err = run("models", "show", "nano-banana-pro")
    assert code == 0
    assert out.startswith("nano-banana-pro  (Google - Nano Banana Pro)")
    assert "source: builtin" in out
    assert "by resolution: 1K=18, 2K=18, 4K=24" in out
    assert "image_input: url_list, optional, default []" in out
    assert "<= 8 items; http(s) URLs" in out
    assert "resolution: string, optional, default '1K'" in out
    assert "one of 'png', 'jpg'" in out
    assert "[!] An older README says at most 5000 characters." in out
    for name in ("prompt", "image_input", "aspect_ratio", "resolution", "output_format"):
        assert f"    {name}: " in out


def test_models_show_by_alias_shows_doubt_and_conditions() -> None:
    code, out, _err = run("models", "show", "kling-3-pro")
    assert code == 0
    assert out.startswith("kling-3.0/video")
    assert "prompt: string, required unless multi_shots is true" in out
    assert "multi_prompt: object_list, required when multi_shots is true" in out
    assert "sound: boolean, optional, default false (true when multi_shots is true)" in out
    assert "per second of duration" in out
    assert "- duration: integer, required" in out


def test_models_show_unknown_exits_2_with_suggestion() -> None:
    code, out, err = run("models", "show", "nano-banana-por")
    assert code == 2
    assert out == ""
    assert "unknown model 'nano-banana-por'" in err
    assert "did you mean nano-banana-pro" in err
    assert "Traceback" not in err


def test_models_show_nope_exits_2() -> None:
    code, _out, err = run("models", "show", "nope")
    assert code == 2
    assert err.startswith("error: unknown model 'nope'")
    assert "liangxin-batch models" in err
    assert "Traceback" not in err


def test_models_list_markdown_prints_the_readme_table() -> None:
    code, out, _err = run("models", "list", "--markdown")
    assert code == 0
    assert out == render_model_table(default_catalog())


def test_models_with_user_catalog(tmp_path: Path) -> None:
    path = tmp_path / "extra.yaml"
    path.write_text(
        'models:\n  - id: "acme/x"\n    name: "Acme X"\n    kind: video\n'
        "    typical_seconds: 9\n    price: {credits: 1}\n"
        "    fields:\n      prompt: {type: string, required: true}\n",
        encoding="utf-8",
    )
    code, out, _err = run("--catalog", str(path), "models", "show", "acme/x")
    assert code == 0
    assert f"source: {path}" in out


def test_bad_user_catalog_exits_2_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models: [\n", encoding="utf-8")
    code, _out, err = run("--catalog", str(path), "models")
    assert code == 2
    assert str(path) in err and "not valid YAML" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["seedream-4.5", "kling-3.0/video", "nano-banana-pro", "z-image"])
def test_models_show_yaml_is_a_catalog_entry_to_copy_and_edit(tmp_path: Path, name: str) -> None:
    """Issue 15: `models show NAME --yaml` in the catalog file's own shape; saved under
    `models:` as a user catalog it loads back as the same model."""
    from dataclasses import replace

    from liangxin_batch.catalog._catalog import load_catalog

    code, out, err = run("models", "show", name, "--yaml")
    assert code == 0, err
    assert out.startswith("- id: ")
    user = tmp_path / "mine.yaml"
    user.write_text("models:\n" + "".join(f"  {line}\n" for line in out.splitlines()))
    builtin = default_catalog().get(name)
    assert builtin is not None
    loaded = load_catalog([user]).get(builtin.id)
    assert loaded is not None
    assert replace(loaded, source="builtin") == builtin
