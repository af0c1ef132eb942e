"""User catalog files: adding models, replacing and patching entries, malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest

from liangxin_batch.catalog._catalog import (
    default_catalog,
    estimate_credits,
    load_catalog,
    validate_input,
)
from liangxin_batch.errors import CatalogError

NEW_MODEL = """
models:
  - id: "acme/painter"
    name: "Acme Painter"
    kind: image
    aliases: ["painter"]
    typical_seconds: 3
    price: {credits: 2}
    fields:
      prompt: {type: string, required: true, max_length: 10}
      style: {type: string, enum: ["oil", "ink"], default: "oil"}
"""


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_user_file_adds_a_model(tmp_path: Path) -> None:
    path = write(tmp_path, NEW_MODEL)
    catalog = load_catalog([path])
    painter = catalog.get("painter")
    assert painter is not None and painter.id == "acme/painter"
    assert painter.source == str(path)
    assert len(catalog) == len(default_catalog()) + 1
    assert catalog.get("z-image") is not None
    assert catalog.credit_usd == 0.005  # kept from the builtin file
    problems = validate_input(painter, {"prompt": "hello", "style": "Oil"})
    assert [(p.field, p.suggestion) for p in problems] == [("style", "did you mean 'oil'?")]


def test_user_file_replaces_a_whole_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
credit_usd: 0.01
models:
  - id: "z-image"
    name: "Z-Image (LiangXin price)"
    kind: image
    typical_seconds: 4
    price: {credits: 3}
    fields:
      prompt: {type: string, required: true}
""",
    )
    catalog = load_catalog([path])
    z = catalog.get("z-image")
    assert z is not None
    assert z.name == "Z-Image (LiangXin price)"
    assert list(z.fields) == ["prompt"]  # replaced, not merged
    assert z.aliases == ()
    assert z.source == str(path)
    assert estimate_credits(z, {}) == 3
    assert catalog.credit_usd == 0.01
    assert default_catalog().get("z-image") is not z  # the cached builtin is untouched


def test_user_file_patches_an_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
models:
  - id: "nano-banana-pro"
    patch: true
    price: {credits: 20, by_field: {resolution: {"4K": 30}}}
    fields:
      resolution: {type: string, enum: ["1K", "2K", "4K", "8K"], default: "1K"}
""",
    )
    spec = load_catalog([path]).get("nano-banana-pro")
    assert spec is not None
    assert spec.source == f"{path} (patch of builtin)"
    assert spec.fields["resolution"].enum == ("1K", "2K", "4K", "8K")
    assert spec.fields["image_input"].max_items == 8  # untouched fields stay
    assert spec.aliases == ("gemini-3-pro-image",)
    assert estimate_credits(spec, {"resolution": "4K"}) == 30
    assert estimate_credits(spec, {"resolution": "2K"}) == 20


def test_later_user_files_win(tmp_path: Path) -> None:
    first = write(tmp_path, NEW_MODEL, "a.yaml")
    second = write(
        tmp_path,
        NEW_MODEL.replace("credits: 2", "credits: 5").replace("Acme Painter", "Painter v2"),
        "b.yaml",
    )
    spec = load_catalog([first, second]).get("painter")
    assert spec is not None
    assert (spec.name, spec.price.credits, spec.source) == ("Painter v2", 5, str(second))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [", "not valid YAML"),
        ("- just a list", "expected a mapping"),
        ("modles: []", "modles: unknown key; did you mean 'models'?"),
        (NEW_MODEL.replace("kind: image", "kind: audio"), "model 'acme/painter': kind"),
        (
            NEW_MODEL.replace("typical_seconds: 3", "typical_seconds: 3\n    colour: red"),
            "model 'acme/painter': colour: unknown key",
        ),
        (
            NEW_MODEL.replace("type: string, required", "type: text, required"),
            "model 'acme/painter': fields.prompt.type",
        ),
        (
            NEW_MODEL.replace('["oil", "ink"]', '[3, "ink"]'),
            "enum value 3 is not a string (quote it)",
        ),
        (NEW_MODEL.replace('default: "oil"', 'default: "pastel"'), "default 'pastel' is not in"),
        (
            NEW_MODEL.replace("{credits: 2}", "{credits: 2, by_field: {size: {a: 1}}}"),
            "price.by_field names unknown field(s) size",
        ),
        (
            NEW_MODEL.replace("{credits: 2}", "{credits: 2, per_second_field: seconds}"),
            "per_second_field 'seconds' is not a field",
        ),
        (NEW_MODEL.replace('id: "acme/painter"', 'name_only: "x"'), "models[0]: each model needs"),
        (
            NEW_MODEL.replace('aliases: ["painter"]', 'aliases: ["z-image"]'),
            "'z-image' is already used by model 'z-image'",
        ),
        (
            NEW_MODEL.replace('id: "acme/painter"', 'id: "acme/painter"\n    patch: true'),
            "'patch: true' but no earlier catalog has this id",
        ),
        (
            NEW_MODEL.replace("required: true, max", "required_unless: style, max"),
            "refers to 'style', not a boolean field",
        ),
        (
            "models:\n  - id: z-image\n    patch: true\n    fields: [1]",
            "fields: expected a mapping",
        ),
    ],
)
def test_malformed_user_catalog_names_file_and_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text, "broken.yaml")
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_user_catalog(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError, match=r"nope\.yaml: cannot read it"):
        load_catalog([path])


def test_builtin_catalog_is_cached() -> None:
    assert default_catalog() is default_catalog()


def test_unquoted_ratios_in_a_user_catalog_stay_text(tmp_path: Path) -> None:
    # YAML 1.1 would read 16:9 as 969; catalog files are read with the YAML 1.2 core schema.
    path = write(
        tmp_path,
        NEW_MODEL.replace('["oil", "ink"]', "[16:9, 4:3]").replace(
            'default: "oil"', "default: 16:9"
        ),
    )
    spec = load_catalog([path]).get("painter")
    assert spec is not None
    assert spec.fields["style"].enum == ("16:9", "4:3")
    assert spec.fields["style"].default == "16:9"
