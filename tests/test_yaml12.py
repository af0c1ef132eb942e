"""The YAML 1.2 loaders: the YAML 1.1 traps of PyYAML's safe_load do not happen."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from liangxin_batch.catalog._yaml12 import PlainText, load_text, load_yaml12, resolve_plain


def test_the_traps_exist_in_pyyaml_safe_load() -> None:
    # Proves the problem is real, and that our loaders did not change PyYAML globally.
    data = yaml.safe_load("ar: 16:9\nseed: 00042\nanswer: no\nflag: on\nday: 2026-01-02")
    assert data["ar"] == 969
    assert data["seed"] == 34
    assert data["answer"] is False
    assert data["flag"] is True
    assert str(data["day"]) == "2026-01-02" and not isinstance(data["day"], str)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16:9", "16:9"),
        ("00042", "00042"),
        ("001", "001"),
        ("012", "012"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("yes", "yes"),
        ("1e3", "1e3"),
        ("2026-01-02", "2026-01-02"),
        ("2026-01-02T10:00:00Z", "2026-01-02T10:00:00Z"),
        ("0x1F", "0x1F"),
        (".inf", ".inf"),
        ("1_000", "1_000"),
        ("42", "42"),
    ],
)
def test_text_loader_keeps_plain_scalars_as_written(text: str, expected: str) -> None:
    value = load_text(f"v: {text}")["v"]
    assert value == expected
    assert isinstance(value, PlainText)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("FALSE", False),
        ("null", None),
        ("~", None),
        ("", None),
    ],
)
def test_text_loader_types_only_booleans_and_null(text: str, expected: Any) -> None:
    assert load_text(f"v: {text}")["v"] is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16:9", "16:9"),
        ("00042", 42),  # base 10, never octal
        ("012", 12),
        ("001", 1),
        ("-7", -7),
        ("+3", 3),
        ("0o17", 15),
        ("0x1F", 31),
        ("1e3", 1000.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("no", "no"),
        ("on", "on"),
        ("yes", "yes"),
        ("2026-01-02", "2026-01-02"),
        ("true", True),
        ("False", False),
        ("null", None),
        ("~", None),
        ("1_000", "1_000"),
        ("1:30:00", "1:30:00"),
    ],
)
def test_core_schema_loader(text: str, expected: Any) -> None:
    value = load_yaml12(f"v: {text}")["v"]
    assert value == expected
    assert type(value) is type(expected)


def test_core_schema_special_floats() -> None:
    data = load_yaml12("a: .inf\nb: -.inf\nc: .nan\nd: .Inf")
    assert data["a"] == math.inf and data["b"] == -math.inf and data["d"] == math.inf
    assert math.isnan(data["c"])


def test_quoted_and_block_scalars_are_plain_str_not_plaintext() -> None:
    data = load_text("a: \"00042\"\nb: '16:9'\nc: |\n  two\n  lines\nd: 00042")
    assert data["a"] == "00042" and type(data["a"]) is str
    assert data["b"] == "16:9" and type(data["b"]) is str
    assert data["c"] == "two\nlines\n" and type(data["c"]) is str
    assert type(data["d"]) is PlainText


def test_explicit_tags_follow_yaml_12_too() -> None:
    assert load_yaml12('v: !!int "012"')["v"] == 12
    assert load_text('v: !!int "0x10"')["v"] == 16
    with pytest.raises(yaml.YAMLError, match="true or false"):
        load_yaml12("v: !!bool yes")


def test_merge_keys_and_anchors_still_work() -> None:
    data = load_text("base: &b {ar: 16:9, n: 1}\njob:\n  <<: *b\n  n: 2\n")
    assert data["job"] == {"ar": "16:9", "n": "2"}


def test_resolve_plain_applies_the_core_schema_only_to_unquoted_text() -> None:
    data = load_text('shots: [{duration: 3, prompt: "5"}, {duration: 012, ratio: 16:9, x: 1e3}]')
    resolved = resolve_plain(data)
    assert resolved["shots"] == [
        {"duration": 3, "prompt": "5"},
        {"duration": 12, "ratio": "16:9", "x": 1000.0},
    ]
    assert type(resolved["shots"][0]["prompt"]) is str


def test_plain_text_is_a_str() -> None:
    value = load_text("v: 16:9")["v"]
    assert isinstance(value, str)
    assert type(str(value)) is str
    assert value == "16:9" and hash(value) == hash("16:9")


def test_characters_yaml_refuses_are_located(tmp_path: Path) -> None:
    from tests.manifest_support import only_problem, read, where, write

    p = only_problem(read(write(tmp_path, "nul.yaml", "jobs:\n  - prompt: a\x00b\n"))[1])
    assert where(p) == ("nul.yaml", 2, None)
    assert p.expected == "valid YAML" and "special characters" in p.got
