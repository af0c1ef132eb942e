"""Issue 16: the catalog's local-file limits (media types, MB per file) on image-list fields,
as the builtin file gives them, as `models show` prints them, and a user file's mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from liangxin_batch.catalog._catalog import default_catalog, load_catalog
from liangxin_batch.catalog._specs import FieldSpec
from liangxin_batch.cli import main
from liangxin_batch.errors import CatalogError

ALL = ("image/jpeg", "image/png", "image/webp")
JPG_PNG = ("image/jpeg", "image/png")


def field(model: str, name: str, item: str | None = None) -> FieldSpec:
    spec = default_catalog().get(model)
    assert spec is not None
    f = spec.fields[name]
    if item is not None:
        assert f.item_fields is not None
        f = f.item_fields[item]
    return f


@pytest.mark.parametrize(
    ("model", "name", "item", "types", "mb", "count"),
    [
        ("google/nano-banana-edit", "image_urls", None, ALL, 10.0, 10),
        ("nano-banana-pro", "image_input", None, ALL, 30.0, 8),
        ("nano-banana-2", "image_input", None, ALL, 30.0, 14),
        ("seedream/4.5-edit", "image_urls", None, ALL, 10.0, 14),
        ("seedream/5-lite-image-to-image", "image_urls", None, ALL, 10.0, 14),
        ("flux-2/pro-image-to-image", "input_urls", None, ALL, 10.0, 8),
        ("kling-3.0/video", "image_urls", None, JPG_PNG, 10.0, 2),
        ("kling-3.0/video", "kling_elements", "element_input_urls", JPG_PNG, 10.0, 4),
    ],
)
def test_image_fields_carry_their_file_limits(
    model: str, name: str, item: str | None, types: tuple[str, ...], mb: float, count: int
) -> None:
    f = field(model, name, item)
    assert (f.file_types, f.max_file_mb, f.max_items) == (types, mb, count)


def test_doubtful_limits_say_so() -> None:
    assert "10 images at 10 MB" in (field("nano-banana-pro", "image_input").doubt or "")
    assert "Seedream 4.5" in (field("seedream/5-lite-image-to-image", "image_urls").doubt or "")
    assert "10 MB" in (field("kling-3.0/video", "image_urls").doubt or "")


def test_only_image_lists_take_local_files() -> None:
    """Video and audio element fields, and every non-url_list field, stay URL-only."""
    with_files = set()
    for spec in default_catalog():
        for f in spec.fields.values():
            for g in (f, *(f.item_fields or {}).values()):
                if g.file_types is not None:
                    with_files.add((spec.id, g.name))
                    assert g.type == "url_list" and g.max_file_mb is not None
    assert ("kling-3.0/video", "element_input_video_urls") not in with_files
    assert ("kling-3.0/video", "element_input_audio_urls") not in with_files
    assert len(with_files) == 8


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_models_show_prints_the_file_limits() -> None:
    code, out, _err = run("models", "show", "nano-banana-pro")
    assert code == 0
    assert "<= 8 items; http(s) URLs or local files; files: jpeg/png/webp, <= 30 MB each" in out
    code, out, _err = run("models", "show", "kling-3.0/video")
    assert code == 0
    assert "1–4 items; http(s) URLs or local files; files: jpeg/png, <= 10 MB each" in out
    video = out.split("element_input_video_urls:")[1].splitlines()[1]
    assert video.strip() == "<= 1 items; http(s) URLs"


PAINTER = """
models:
  - id: "acme/painter"
    name: "Acme Painter"
    kind: image
    typical_seconds: 3
    price: {credits: 2}
    fields:
      prompt: {type: string, required: true}
      refs: {type: url_list, max_items: 3, file_types: ["image/png"], max_file_mb: 5}
"""


def test_a_user_catalog_may_give_file_limits(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(PAINTER, encoding="utf-8")
    spec = load_catalog([path]).get("acme/painter")
    assert spec is not None
    assert (spec.fields["refs"].file_types, spec.fields["refs"].max_file_mb) == (
        ("image/png",),
        5.0,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('["image/png"]', '["image/gif"]'),
            "field 'refs': file_types: 'image/gif' is not a media type local files may have; "
            "use image/jpeg, image/png, image/webp",
        ),
        (('["image/png"]', '"image/png"'), "fields.refs.file_types: expected a list"),
        (('["image/png"]', "[]"), "field 'refs': file_types is empty"),
        (("max_file_mb: 5", "max_file_mb: 0"), "max_file_mb must be > 0; got 0"),
        (("max_file_mb: 5", "max_file_mb: big"), "fields.refs.max_file_mb: expected a number"),
        (
            ("{type: string, required: true}", "{type: string, max_file_mb: 3}"),
            "field 'prompt': file_types and max_file_mb only fit type url_list",
        ),
    ],
)
def test_a_bad_file_limit_in_a_user_catalog_is_named(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(PAINTER.replace(*change), encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_a_bad_file_type_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(PAINTER.replace("image/png", "png"), encoding="utf-8")
    code, _out, err = run("--catalog", str(path), "models")
    assert code == 2
    assert str(path) in err and "'png' is not a media type" in err
    assert "Traceback" not in err
