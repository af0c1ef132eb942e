"""The builtin catalog, validate_input, coerce_text and estimate_credits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from liangxin_batch.catalog import _catalog as _catalog_module
from liangxin_batch.catalog._catalog import (
    Catalog,
    FieldProblem,
    FieldSpec,
    ModelSpec,
    default_catalog,
    estimate_credits,
    render_model_table,
    validate_input,
)
from liangxin_batch.catalog._validate import coerce_text, near_miss
from liangxin_batch.errors import CatalogError

CAT = default_catalog()
URL = "https://example.com/a.png"
URL2 = "https://example.com/b.jpg"

SEED_MODELS = {
    "seedream/4.5-text-to-image": "image",
    "seedream/4.5-edit": "image",
    "seedream/5-lite-text-to-image": "image",
    "seedream/5-lite-image-to-image": "image",
    "z-image": "image",
    "google/nano-banana": "image",
    "google/nano-banana-edit": "image",
    "nano-banana-pro": "image",
    "nano-banana-2": "image",
    "google/imagen4-fast": "image",
    "google/imagen4-ultra": "image",
    "flux-2/pro-text-to-image": "image",
    "flux-2/pro-image-to-image": "image",
    "kling-3.0/video": "video",
}


def spec(name: str) -> ModelSpec:
    found = CAT.get(name)
    assert found is not None, name
    return found


def only(problems: list[FieldProblem]) -> FieldProblem:
    assert len(problems) == 1, problems
    return problems[0]


# ---- the catalog itself -----------------------------------------------------------------


def test_catalog_has_exactly_the_seed_models() -> None:
    assert {s.id: s.kind for s in CAT} == SEED_MODELS
    assert CAT.credit_usd == 0.005
    assert all(s.source == "builtin" for s in CAT)


@pytest.mark.parametrize(
    ("alias", "model_id"),
    [
        ("seedream-4.5", "seedream/4.5-text-to-image"),
        ("seedream-4.5-edit", "seedream/4.5-edit"),
        ("seedream-5-lite", "seedream/5-lite-text-to-image"),
        ("seedream-5-lite-edit", "seedream/5-lite-image-to-image"),
        ("z-image", "z-image"),
        ("nano-banana", "google/nano-banana"),
        ("nano-banana-edit", "google/nano-banana-edit"),
        ("nano-banana-pro", "nano-banana-pro"),
        ("nano-banana-pro-flash", "nano-banana-2"),
        ("imagen4-fast", "google/imagen4-fast"),
        ("imagen4-ultra", "google/imagen4-ultra"),
        ("flux-2-pro", "flux-2/pro-text-to-image"),
        ("flux-2-pro-i2i", "flux-2/pro-image-to-image"),
        ("kling-3-pro", "kling-3.0/video"),
    ],
)
def test_aliases_resolve(alias: str, model_id: str) -> None:
    assert spec(alias).id == model_id


def test_enum_values_and_defaults_keep_their_yaml_types() -> None:
    # A YAML 1.1 loader turns an unquoted 16:9 into 969: every string enum must stay a string.
    for model in CAT:
        for f in model.fields.values():
            if f.type == "string" and f.enum is not None:
                assert all(isinstance(v, str) for v in f.enum), (model.id, f.name, f.enum)
                assert f.default is None or f.default in f.enum, (model.id, f.name)
    kling = spec("kling-3-pro").fields
    assert kling["duration"].enum == tuple(str(n) for n in range(3, 16))
    assert kling["duration"].default == "5"
    assert kling["mode"].default == "pro"
    assert spec("imagen4-fast").fields["num_images"].enum == ("1", "2", "3", "4")
    assert spec("imagen4-fast").fields["num_images"].doubt
    assert spec("imagen4-fast").fields["seed"].type == "integer"
    assert spec("imagen4-ultra").fields["seed"].type == "string"
    assert spec("imagen4-ultra").fields["seed"].max_length == 500


def test_image_field_names_and_limits_per_model() -> None:
    assert spec("nano-banana-pro").fields["image_input"].max_items == 8
    assert spec("nano-banana-2").fields["image_input"].max_items == 14
    flux = spec("flux-2-pro-i2i").fields["input_urls"]
    assert (flux.min_items, flux.max_items, flux.required) == (1, 8, True)
    for name in ("seedream-4.5-edit", "seedream-5-lite-edit"):
        urls = spec(name).fields["image_urls"]
        assert (urls.max_items, urls.required, urls.type) == (14, True, "url_list")
    assert spec("kling-3-pro").fields["multi_prompt"].type == "object_list"
    assert spec("kling-3-pro").fields["kling_elements"].type == "object_list"


def test_doubts_are_recorded() -> None:
    flash = spec("nano-banana-pro-flash")
    assert flash.doubt is not None and "nano-banana-2" in flash.doubt
    assert spec("kling-3-pro").doubt
    assert spec("seedream-4.5").fields["nsfw_checker"].doubt


def test_prompt_required_everywhere_but_kling() -> None:
    for model in CAT:
        prompt = model.fields["prompt"]
        if model.kind == "video":
            assert not prompt.required and prompt.required_unless == "multi_shots"
        else:
            assert prompt.required, model.id


def test_typical_seconds_follow_the_brief() -> None:
    assert spec("kling-3-pro").typical_seconds == 120
    assert spec("z-image").typical_seconds < spec("nano-banana-pro").typical_seconds


def test_suggest_unknown_model_names() -> None:
    assert "nano-banana-pro" in CAT.suggest("nano-banana-por")
    assert "z-image" in CAT.suggest("Z-Image")
    assert "kling-3-pro" in CAT.suggest("kling")
    assert CAT.suggest("qqqqqqqq") == []
    assert CAT.get("Z-IMAGE") is None  # get is exact


# ---- valid input for every model ----------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    "seedream/4.5-text-to-image": {"prompt": "a cat", "aspect_ratio": "21:9", "quality": "high"},
    "seedream/4.5-edit": {
        "prompt": "make it blue",
        "image_urls": [URL] * 14,
        "aspect_ratio": "1:1",
        "quality": "basic",
        "nsfw_checker": False,
    },
    "seedream/5-lite-text-to-image": {"prompt": "cat", "aspect_ratio": "9:16", "quality": "high"},
    "seedream/5-lite-image-to-image": {
        "prompt": "add snow",
        "image_urls": [URL, URL2],
        "aspect_ratio": "3:2",
        "quality": "basic",
    },
    "z-image": {"prompt": "x" * 1000, "aspect_ratio": "16:9", "nsfw_checker": True},
    "google/nano-banana": {"prompt": "a dog", "aspect_ratio": "auto", "output_format": "jpeg"},
    "google/nano-banana-edit": {"prompt": "a dog", "image_urls": [URL] * 10},
    "nano-banana-pro": {
        "prompt": "p" * 10000,
        "image_input": [URL] * 8,
        "resolution": "4K",
        "output_format": "jpg",
        "aspect_ratio": "4:5",
    },
    "nano-banana-2": {
        "prompt": "a map",
        "image_input": [URL] * 14,
        "aspect_ratio": "8:1",
        "resolution": "2K",
        "google_search": True,
    },
    "google/imagen4-fast": {
        "prompt": "a tree",
        "negative_prompt": "blur",
        "num_images": "4",
        "seed": 42,
        "aspect_ratio": "16:9",
    },
    "google/imagen4-ultra": {"prompt": "a tree", "seed": "12345", "aspect_ratio": "3:4"},
    "flux-2/pro-text-to-image": {"prompt": "abc", "aspect_ratio": "2:3", "resolution": "2K"},
    "flux-2/pro-image-to-image": {
        "prompt": "restyle",
        "input_urls": [URL] * 8,
        "aspect_ratio": "auto",
        "resolution": "1K",
    },
    "kling-3.0/video": {
        "prompt": "a drone shot over hills",
        "duration": "10",
        "mode": "4K",
        "sound": True,
        "aspect_ratio": "9:16",
        "image_urls": [URL, URL2],
    },
}


def test_every_model_has_a_valid_example() -> None:
    assert set(VALID) == set(SEED_MODELS) == {spec.id for spec in CAT}


@pytest.mark.parametrize("model_id", sorted(VALID))
def test_valid_input_has_no_problems(model_id: str) -> None:
    assert validate_input(spec(model_id), VALID[model_id]) == []


def test_kling_multi_shot_without_prompt_is_valid() -> None:
    values = {
        "multi_shots": True,
        "multi_prompt": [{"prompt": "shot one", "duration": 3}, {"prompt": "two", "duration": 12}],
        "kling_elements": [
            {"name": "hero", "description": "the hero", "element_input_urls": [URL, URL2]}
        ],
    }
    assert validate_input(spec("kling-3-pro"), values) == []


# ---- invalid input: (model, input, field, text in expected, text in suggestion or None) --

INVALID: list[tuple[str, dict[str, Any], str, str, str | None]] = [
    # seedream 4.5 t2i
    ("seedream-4.5", {"aspect_ratio": "1:1", "quality": "basic"}, "prompt", "a value", None),
    ("seedream-4.5", {"prompt": "a", "quality": "basic"}, "aspect_ratio", "a value", "'1:1'"),
    (
        "seedream-4.5",
        {"prompt": "a", "aspect_ratio": "1:1", "quality": "ultra"},
        "quality",
        "one of basic, high",
        None,
    ),
    (
        "seedream-4.5",
        {"prompt": "a" * 3001, "aspect_ratio": "1:1", "quality": "high"},
        "prompt",
        "at most 3000 characters",
        "shorten it by 1",
    ),
    (
        "seedream-4.5",
        {"prompt": "a", "aspect_ratio": "5:4", "quality": "high"},
        "aspect_ratio",
        "one of 1:1",
        None,
    ),
    # seedream 4.5 edit
    (
        "seedream-4.5-edit",
        {"prompt": "a", "aspect_ratio": "1:1", "quality": "high"},
        "image_urls",
        "a value",
        None,
    ),
    (
        "seedream-4.5-edit",
        {"prompt": "a", "image_urls": [URL] * 15, "aspect_ratio": "1:1", "quality": "high"},
        "image_urls",
        "at most 14 item(s)",
        "remove 1",
    ),
    (
        "seedream-4.5-edit",
        {"prompt": "a", "image_urls": URL, "aspect_ratio": "1:1", "quality": "high"},
        "image_urls",
        "a list of http(s) URLs",
        "give a list",
    ),
    (
        "seedream-4.5-edit",
        {
            "prompt": "a",
            "image_urls": [URL, "/tmp/x.png"],
            "aspect_ratio": "1:1",
            "quality": "high",
        },
        "image_urls[1]",
        "an http(s) URL",
        "upload",
    ),
    # seedream 5 lite t2i
    (
        "seedream-5-lite",
        {"prompt": "ab", "aspect_ratio": "1:1", "quality": "high"},
        "prompt",
        "at least 3 characters",
        None,
    ),
    (
        "seedream-5-lite",
        {"prompt": "abc", "aspect_ratio": "1:1", "quality": "Ultra"},
        "quality",
        "one of basic, high",
        None,
    ),
    (
        "seedream-5-lite",
        {"prompt": "abc", "aspect_ratio": "1:1", "quality": "High"},
        "quality",
        "one of basic, high",
        "did you mean 'high'?",
    ),
    # seedream 5 lite edit
    (
        "seedream-5-lite-edit",
        {"prompt": "abc", "image_urls": [], "aspect_ratio": "1:1", "quality": "high"},
        "image_urls",
        "at least 1 item(s)",
        None,
    ),
    (
        "seedream-5-lite-edit",
        {
            "prompt": "abc",
            "image_urls": [URL],
            "aspect_ratio": "1:1",
            "quality": "high",
            "image_input": [URL],
        },
        "image_input",
        "a field of model",
        "image_urls",
    ),
    (
        "seedream-5-lite-edit",
        {"prompt": "abc", "image_urls": [URL] * 15, "aspect_ratio": "1:1", "quality": "high"},
        "image_urls",
        "at most 14",
        None,
    ),
    (
        "seedream-5-lite-edit",
        {"prompt": "x" * 3001, "image_urls": [URL], "aspect_ratio": "1:1", "quality": "high"},
        "prompt",
        "at most 3000",
        None,
    ),
    # z-image
    ("z-image", {"prompt": "x" * 1001, "aspect_ratio": "1:1"}, "prompt", "at most 1000", None),
    ("z-image", {"prompt": "x", "aspect_ratio": "auto"}, "aspect_ratio", "one of 1:1, 4:3", None),
    ("z-image", {"prompt": "x", "aspect_ratio": "16-9"}, "aspect_ratio", "one of", "'16:9'"),
    (
        "z-image",
        {"prompt": "x", "aspect_ratio": "1:1", "nsfw_checker": "yes"},
        "nsfw_checker",
        "true or false",
        "use true",
    ),
    # nano banana
    (
        "nano-banana",
        {"prompt": "x", "output_format": "jpg"},
        "output_format",
        "one of png, jpeg",
        "did you mean 'jpeg'?",
    ),
    (
        "nano-banana",
        {"prompt": "x", "resolution": "1K"},
        "resolution",
        "a field of model",
        "remove it; model google/nano-banana takes: prompt, output_format",
    ),
    ("nano-banana", {"prompt": "x" * 5001}, "prompt", "at most 5000", None),
    (
        "nano-banana-edit",
        {"prompt": "x", "image_urls": [URL] * 11},
        "image_urls",
        "at most 10",
        None,
    ),
    ("nano-banana-edit", {"prompt": "x"}, "image_urls", "a value", None),
    (
        "nano-banana-edit",
        {"prompt": "x", "image_urls": [URL], "output_format": "webp"},
        "output_format",
        "one of png, jpeg",
        None,
    ),
    (
        "nano-banana-edit",
        {"prompt": "x", "image_urls": ["ftp://files.example/a.png"]},
        "image_urls[0]",
        "http",
        None,
    ),
    # nano banana pro
    (
        "nano-banana-pro",
        {"prompt": "x", "image_input": [URL] * 9},
        "image_input",
        "at most 8 item(s)",
        None,
    ),
    (
        "nano-banana-pro",
        {"prompt": "x", "resolution": "2k"},
        "resolution",
        "one of 1K, 2K, 4K",
        "did you mean '2K'?",
    ),
    (
        "nano-banana-pro",
        {"prompt": "x", "output_format": "jpeg"},
        "output_format",
        "one of png, jpg",
        "did you mean 'jpg'?",
    ),
    (
        "nano-banana-pro",
        {"prompt": "x", "image_urls": [URL]},
        "image_urls",
        "a field of model",
        "did you mean 'image_input'?",
    ),
    ("nano-banana-pro", {"prompt": "x" * 10001}, "prompt", "at most 10000", None),
    # nano banana 2 / pro flash
    (
        "nano-banana-pro-flash",
        {"prompt": "x", "image_input": [URL] * 15},
        "image_input",
        "at most 14",
        None,
    ),
    (
        "nano-banana-pro-flash",
        {"prompt": "x", "aspect_ratio": "1x8"},
        "aspect_ratio",
        "one of",
        "did you mean '1:8'?",
    ),
    (
        "nano-banana-pro-flash",
        {"prompt": "x", "google_search": 1},
        "google_search",
        "true or false",
        None,
    ),
    ("nano-banana-pro-flash", {"prompt": "x" * 20001}, "prompt", "at most 20000", None),
    # imagen 4 fast
    (
        "imagen4-fast",
        {"prompt": "x", "num_images": 2},
        "num_images",
        "a string",
        "write it as the string '2'",
    ),
    ("imagen4-fast", {"prompt": "x", "num_images": "5"}, "num_images", "one of 1, 2, 3, 4", None),
    ("imagen4-fast", {"prompt": "x", "seed": "42"}, "seed", "an integer", "give a number"),
    ("imagen4-fast", {"prompt": "x", "seed": 4.5}, "seed", "an integer", None),
    (
        "imagen4-fast",
        {"prompt": "x", "negative_prompt": "n" * 5001},
        "negative_prompt",
        "at most 5000",
        None,
    ),
    (
        "imagen4-fast",
        {"prompt": "x", "aspect_ratio": "21:9"},
        "aspect_ratio",
        "one of 1:1, 16:9",
        None,
    ),
    # imagen 4 ultra
    ("imagen4-ultra", {"prompt": "x", "seed": 7}, "seed", "a string", "'7'"),
    ("imagen4-ultra", {"prompt": "x", "seed": "s" * 501}, "seed", "at most 500", None),
    ("imagen4-ultra", {"prompt": "x", "num_images": "2"}, "num_images", "a field of model", None),
    ("imagen4-ultra", {"prompt": ""}, "prompt", "a value", None),
    # flux 2 pro t2i
    (
        "flux-2-pro",
        {"prompt": "ab", "aspect_ratio": "1:1", "resolution": "1K"},
        "prompt",
        "at least 3 characters",
        None,
    ),
    (
        "flux-2-pro",
        {"prompt": "abc", "aspect_ratio": "1:1", "resolution": "4K"},
        "resolution",
        "one of 1K, 2K",
        None,
    ),
    (
        "flux-2-pro",
        {"prompt": "abc", "aspect_ratio": "auto", "resolution": "1K"},
        "aspect_ratio",
        "one of",
        None,
    ),
    ("flux-2-pro", {"prompt": "abc", "aspect_ratio": "1:1"}, "resolution", "a value", "'1K'"),
    # flux 2 pro i2i
    (
        "flux-2-pro-i2i",
        {"prompt": "abc", "aspect_ratio": "1:1", "resolution": "1K"},
        "input_urls",
        "a value",
        None,
    ),
    (
        "flux-2-pro-i2i",
        {"prompt": "abc", "input_urls": [URL] * 9, "aspect_ratio": "1:1", "resolution": "1K"},
        "input_urls",
        "at most 8",
        None,
    ),
    (
        "flux-2-pro-i2i",
        {
            "prompt": "abc",
            "input_urls": [URL],
            "image_urls": [URL],
            "aspect_ratio": "1:1",
            "resolution": "1K",
        },
        "image_urls",
        "a field of model",
        "did you mean 'input_urls'?",
    ),
    # kling
    ("kling-3-pro", {"duration": "5"}, "prompt", "required unless multi_shots is true", None),
    (
        "kling-3-pro",
        {"prompt": "x", "duration": 5},
        "duration",
        "a string",
        "write it as the string '5'",
    ),
    ("kling-3-pro", {"prompt": "x", "duration": "16"}, "duration", "one of 3, 4, 5", None),
    ("kling-3-pro", {"prompt": "x", "duration": "2"}, "duration", "one of 3,", None),
    (
        "kling-3-pro",
        {"prompt": "x", "mode": "4k"},
        "mode",
        "one of std, pro, 4K",
        "did you mean '4K'?",
    ),
    ("kling-3-pro", {"prompt": "x", "mode": "PRO"}, "mode", "one of std", "did you mean 'pro'?"),
    (
        "kling-3-pro",
        {"prompt": "x", "aspect_ratio": "16/9"},
        "aspect_ratio",
        "one of 16:9",
        "did you mean '16:9'?",
    ),
    ("kling-3-pro", {"prompt": "x", "image_urls": [URL] * 3}, "image_urls", "at most 2", None),
    (
        "kling-3-pro",
        {"multi_shots": True},
        "multi_prompt",
        "required when multi_shots is true",
        None,
    ),
    (
        "kling-3-pro",
        {"multi_shots": True, "multi_prompt": [{"prompt": "a", "duration": 13}]},
        "multi_prompt[0].duration",
        "between 1 and 12",
        None,
    ),
    (
        "kling-3-pro",
        {"multi_shots": True, "multi_prompt": [{"prompt": "a" * 501, "duration": 2}]},
        "multi_prompt[0].prompt",
        "at most 500",
        None,
    ),
    (
        "kling-3-pro",
        {"multi_shots": True, "multi_prompt": [{"prompt": "a"}]},
        "multi_prompt[0].duration",
        "a value",
        None,
    ),
    (
        "kling-3-pro",
        {"multi_shots": True, "multi_prompt": [{"prompt": "a", "duration": 2}] * 6},
        "multi_prompt",
        "at most 5",
        None,
    ),
    (
        "kling-3-pro",
        {"multi_shots": True, "multi_prompt": ["shot"]},
        "multi_prompt[0]",
        "an object",
        None,
    ),
    (
        "kling-3-pro",
        {"prompt": "x", "kling_elements": [{"name": "a", "urls": [URL]}]},
        "kling_elements[0].urls",
        "a field of this item",
        "element_input_urls",
    ),
    (
        "kling-3-pro",
        {"prompt": "x", "kling_elements": [{"name": "a"}] * 4},
        "kling_elements",
        "at most 3",
        None,
    ),
    (
        "kling-3-pro",
        {"prompt": "x", "multi_prompt": "shot one"},
        "multi_prompt",
        "a list of objects",
        None,
    ),
    (
        "kling-3-pro",
        {"prompt": "x", "negative_prompt": "blur"},
        "negative_prompt",
        "a field of model kling-3.0/video",
        "takes: prompt, image_urls",
    ),
]


@pytest.mark.parametrize(
    ("model", "values", "field", "expected", "suggestion"),
    INVALID,
    ids=[f"{m}-{f}-{i}" for i, (m, _v, f, _e, _s) in enumerate(INVALID)],
)
def test_invalid_input_reports_the_problem(
    model: str, values: dict[str, Any], field: str, expected: str, suggestion: str | None
) -> None:
    problem = only(validate_input(spec(model), values))
    assert problem.field == field
    assert expected in problem.expected
    if suggestion is not None:
        assert problem.suggestion is not None and suggestion in problem.suggestion


def test_every_model_has_invalid_cases() -> None:
    assert {spec(m).id for m, *_ in INVALID} == set(SEED_MODELS)


def test_all_problems_are_reported_at_once() -> None:
    problems = validate_input(
        spec("z-image"), {"prompt": "x" * 1200, "aspect_ratio": "16x9", "aspct": 1}
    )
    assert {p.field for p in problems} == {"prompt", "aspect_ratio", "aspct"}
    by_field = {p.field: p for p in problems}
    assert by_field["prompt"].got == "1200 characters"
    assert by_field["aspect_ratio"].suggestion == "did you mean '16:9'?"
    assert by_field["aspct"].suggestion is not None
    assert "prompt, aspect_ratio, nsfw_checker" in by_field["aspct"].suggestion


def test_got_is_truncated() -> None:
    problem = only(validate_input(spec("imagen4-fast"), {"prompt": "x", "seed": "9" * 200}))
    assert len(problem.got) <= 60


def test_problem_format_reads_well() -> None:
    problem = only(validate_input(spec("z-image"), {"prompt": "x", "aspect_ratio": "16-9"}))
    assert problem.format() == (
        "[aspect_ratio] expected one of 1:1, 4:3, 3:4, 16:9, 9:16; got '16-9'; did you mean '16:9'?"
    )


def test_unknown_field_spellings_point_to_the_real_field() -> None:
    for key in ("aspect-ratio", "Aspect Ratio", "aspct_ratio", "aspect"):
        problem = only(
            validate_input(spec("z-image"), {"prompt": "x", "aspect_ratio": "1:1", key: "1:1"})
        )
        assert problem.suggestion is not None
        assert problem.suggestion.startswith("did you mean 'aspect_ratio'?"), key


def test_validate_does_not_change_its_input() -> None:
    values = {"prompt": "x", "aspect_ratio": "16-9"}
    validate_input(spec("z-image"), values)
    assert values == {"prompt": "x", "aspect_ratio": "16-9"}


@pytest.mark.parametrize(
    ("value", "choices", "want"),
    [
        ("16-9", ("1:1", "16:9"), "16:9"),
        ("16x9", ("1:1", "16:9"), "16:9"),
        ("16/9", ("1:1", "16:9"), "16:9"),
        (" 16 : 9 ", ("1:1", "16:9"), "16:9"),
        ("4 / 3", ("3:4", "4:3", "1:1"), "4:3"),  # too far apart for difflib alone
        ("3 x 4", ("3:4", "4:3", "1:1"), "3:4"),
        ("2k", ("1K", "2K"), "2K"),
        ("Basic", ("basic", "high"), "basic"),
        ("hihg", ("basic", "high"), "high"),
        ("7-3", ("1:1", "16:9"), None),
        ("zzz", ("basic", "high"), None),
    ],
)
def test_near_miss(value: str, choices: tuple[str, ...], want: str | None) -> None:
    assert near_miss(value, choices) == want


# ---- coerce_text -----------------------------------------------------------------------------


def F(type_: Any, **kw: Any) -> FieldSpec:
    return FieldSpec(name="f", type=type_, **kw)


@pytest.mark.parametrize(
    ("type_", "text", "want"),
    [
        ("integer", "4", 4),
        ("integer", " -12 ", -12),
        ("integer", "4.0", 4),
        ("number", "2.5", 2.5),
        ("number", "3", 3),
        ("boolean", "TRUE", True),
        ("boolean", "yes", True),
        ("boolean", "1", True),
        ("boolean", "False", False),
        ("boolean", " no ", False),
        ("boolean", "0", False),
        ("url_list", f"{URL} | {URL2}", [URL, URL2]),
        ("url_list", f'["{URL}", "{URL2}"]', [URL, URL2]),
        ("url_list", URL, [URL]),
        ("url_list", "", []),
        ("string_list", "a|b||c", ["a", "b", "c"]),
        ("object_list", '[{"prompt": "a", "duration": 3}]', [{"prompt": "a", "duration": 3}]),
        ("string", "  keep  spaces ", "  keep  spaces "),
        ("string", "5", "5"),
    ],
)
def test_coerce_text(type_: Any, text: str, want: Any) -> None:
    got = coerce_text(F(type_), text)
    assert got == want
    assert type(got) is type(want)


@pytest.mark.parametrize(
    ("type_", "text", "message"),
    [
        ("integer", "four", "an integer"),
        ("integer", "4.5", "an integer"),
        ("number", "abc", "a number"),
        ("number", "nan", "a finite number"),
        ("boolean", "maybe", "true or false"),
        ("url_list", "[1, 2]", "JSON array of strings"),
        ("url_list", "[not json", "did not parse"),
        ("object_list", "a|b", "JSON array of objects"),
        ("object_list", '{"prompt": "a"}', "JSON array of objects"),
        ("object_list", "[1]", "JSON array of objects"),
    ],
)
def test_coerce_text_errors_say_what_was_expected(type_: Any, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        coerce_text(F(type_), text)


def test_kling_duration_cell_stays_a_string_and_validates() -> None:
    kling = spec("kling-3-pro")
    duration = coerce_text(kling.fields["duration"], "10")
    assert duration == "10"
    assert validate_input(kling, {"prompt": "x", "duration": duration}) == []


# ---- estimate_credits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "values", "credits"),
    [
        ("nano-banana-pro", {"prompt": "x"}, 18),
        ("nano-banana-pro", {"prompt": "x", "resolution": "2K"}, 18),
        ("nano-banana-pro", {"prompt": "x", "resolution": "4K"}, 24),
        ("nano-banana-pro-flash", {"prompt": "x"}, 8),
        ("nano-banana-pro-flash", {"prompt": "x", "resolution": "2K"}, 12),
        ("nano-banana-pro-flash", {"prompt": "x", "resolution": "4K"}, 18),
        ("flux-2-pro", {"prompt": "x", "resolution": "2K"}, 7),
        ("seedream-4.5", {"prompt": "x"}, 7),  # 6.5 listed; billed in whole credits
        ("z-image", {"prompt": "x"}, 1),  # 0.8 listed
        ("imagen4-ultra", {"prompt": "x"}, 12),
    ],
)
def test_estimate_credits_images(model: str, values: dict[str, Any], credits: float) -> None:
    assert estimate_credits(spec(model), values) == pytest.approx(credits)


@pytest.mark.parametrize(
    ("values", "credits"),
    [
        ({"prompt": "x"}, 18 * 5),  # defaults: pro, no sound, "5" seconds
        ({"prompt": "x", "duration": "10"}, 18 * 10),
        ({"prompt": "x", "duration": "3", "mode": "std"}, 14 * 3),
        ({"prompt": "x", "duration": "15", "mode": "std", "sound": True}, 20 * 15),
        ({"prompt": "x", "sound": True}, 27 * 5),
        ({"prompt": "x", "mode": "4K", "duration": "8"}, 67 * 8),
        ({"multi_shots": True, "multi_prompt": []}, 27 * 5),  # multi-shot turns sound on
        ({"multi_shots": True, "sound": False}, 18 * 5),
    ],
)
def test_estimate_credits_kling_per_second(values: dict[str, Any], credits: float) -> None:
    assert estimate_credits(spec("kling-3-pro"), values) == pytest.approx(credits)


def test_estimate_credits_matches_usd_list_prices() -> None:
    # $0.135/s for 1080p with sound; $0.0325 for a Seedream 4.5 image.
    usd = CAT.credit_usd or 0
    kling = estimate_credits(spec("kling-3-pro"), {"prompt": "x", "sound": True, "duration": "1"})
    assert kling * usd == pytest.approx(0.135)
    seedream = spec("seedream-4.5")
    exact = replace(seedream, price=replace(seedream.price, round_up=False))
    assert estimate_credits(exact, {}) * usd == pytest.approx(0.0325)  # the list price
    assert estimate_credits(seedream, {}) == 7  # what the service bills: whole credits


def test_render_model_table_lists_every_model() -> None:
    table = render_model_table(CAT)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| model id | name | kind |")
    assert len(lines) == 2 + len(SEED_MODELS)
    row = next(line for line in lines if "`nano-banana-pro`" in line)
    assert "`prompt`*" in row and "18–24" in row and "$0.09" in row
    kling = next(line for line in lines if "`kling-3.0/video`" in line)
    assert "| 90 |" in kling and "14–67/s" in kling


def test_catalog_rejects_a_name_used_twice() -> None:
    a = spec("z-image")
    b = spec("nano-banana")
    clash = replace(b, aliases=("z-image",), source="mine.yaml")
    with pytest.raises(CatalogError, match=r"mine\.yaml.*'z-image' is already used"):
        Catalog({a.id: a, clash.id: clash})


def test_the_file_schema_is_derived_from_the_specs_field_for_field() -> None:
    """A key a spec gains is a key a catalog file may write, with its default: nothing to
    keep in step by hand."""
    import dataclasses

    from liangxin_batch.catalog._schema import FieldDoc, ModelDoc
    from liangxin_batch.catalog._specs import FieldSpec, ModelSpec

    for spec, doc, unwritten in (
        (FieldSpec, FieldDoc, {"name"}),
        (ModelSpec, ModelDoc, {"source"}),
    ):
        spec_fields = {f.name: f for f in dataclasses.fields(spec)}
        assert set(doc.model_fields) == set(spec_fields) - unwritten
        for name, info in doc.model_fields.items():
            f = spec_fields[name]
            if f.default is not dataclasses.MISSING:
                assert info.default == f.default, name
            elif f.default_factory is dataclasses.MISSING:
                assert info.is_required(), name
    assert FieldDoc.model_config.get("extra") == "forbid"


def test_the_builtin_file_read_without_the_schema_gives_what_the_schema_gives() -> None:
    """The builtin catalog is trusted at start-up (no pydantic); read through the schema
    it gives the same specs, to the repr (an int where pydantic makes a float shows)."""
    from liangxin_batch.catalog._catalog import _builtin_text, _parse_file

    text = _builtin_text()
    checked = _parse_file(text, "builtin", {}, trusted=False)
    trusted = _parse_file(text, "builtin", {}, trusted=True)
    assert repr(trusted) == repr(checked)
    assert trusted == checked


def test_the_builtin_catalog_writes_no_key_twice() -> None:
    """YAML keeps the last of two equal keys without a word; the built-in catalog is read
    without pydantic, so only this can see a key written twice (a merge left four)."""
    import yaml

    from liangxin_batch.manifest._yaml_doc import duplicate_keys

    path = Path(_catalog_module.__file__).parent / "catalog.yaml"
    root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    assert root is not None
    assert [p.format() for p in duplicate_keys(root, path.name)] == []
