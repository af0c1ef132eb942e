"""Checking a task input against a model's fields, CSV cell coercion, and task prices.

Pure: no I/O. `validate_input` reports every problem it finds (not just the first), each
with what was expected, what was given and, where it can guess, a suggestion.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from liangxin_batch.core._local_files import token_sha256
from liangxin_batch.core._records import got_text as _got

if TYPE_CHECKING:
    from liangxin_batch.catalog._specs import FieldSpec, ModelSpec, PriceRule

__all__ = [
    "FieldProblem",
    "check_field",
    "coerce_text",
    "describe_price",
    "effective_values",
    "estimate_credits",
    "near_miss",
    "price_inputs",
    "price_key",
    "validate_input",
]

_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)
# "16-9", "16x9", "16/9", "16 : 9", "16_9" all mean the ratio 16:9.
_RATIO = re.compile(r"^\s*(\d+)\s*(?:[-xX×/_:.,]|\s)\s*(\d+)\s*$")
_LIST_TYPES = ("url_list", "string_list", "object_list")
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}
_TYPE_TEXT = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "url_list": "a list of http(s) URLs",
    "string_list": "a list of strings",
    "object_list": "a list of objects",
}


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    expected: str  # "one of 1:1, 16:9, ..." / "at most 3000 characters" / "an integer"
    got: str  # repr-ish, truncated
    suggestion: str | None = None  # "did you mean '16:9'?"

    def format(self) -> str:
        text = f"[{self.field}] expected {self.expected}; got {self.got}"
        return f"{text}; {self.suggestion}" if self.suggestion else text


def _num(x: float) -> str:
    return f"{x:g}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _type_ok(ftype: str, v: Any) -> bool:
    if ftype == "string":
        return isinstance(v, str)
    if ftype == "integer":
        return _is_int(v)
    if ftype == "number":
        return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)
    if ftype == "boolean":
        return isinstance(v, bool)
    return False  # list types are checked item by item (_check_items)


def _type_hint(spec: FieldSpec, value: Any) -> str | None:
    """A suggestion for a value of the wrong type, e.g. 5 for a stringly-typed number."""
    if spec.type == "string" and _is_int(value):
        return f"write it as the string {str(value)!r}"
    if spec.type in ("url_list", "string_list") and isinstance(value, str):
        return f"give a list, e.g. [{value!r}]"
    if spec.type == "boolean" and isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE | _FALSE:
            return f"use {str(low in _TRUE).lower()} (a boolean, not a string)"
    if spec.type in ("integer", "number") and isinstance(value, str):
        return "give a number, not a string"
    return None


def near_miss(value: Any, choices: tuple[Any, ...]) -> Any | None:
    """The choice a near-miss value most likely meant: ratio spelling, case, close spelling."""
    text = str(value).strip()
    m = _RATIO.match(text)
    if m:
        ratio = f"{int(m.group(1))}:{int(m.group(2))}"
        if ratio in choices:
            return ratio
    by_lower = {str(c).lower(): c for c in choices}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    close = difflib.get_close_matches(text.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def _enum_text(choices: tuple[Any, ...]) -> str:
    return "one of " + ", ".join(str(c) for c in choices)


def _is_present(value: Any) -> bool:
    return value is not None and value != ""


def _check_value(name: str, spec: FieldSpec, value: Any, out: list[FieldProblem]) -> None:
    if spec.type in _LIST_TYPES and isinstance(value, list | tuple):
        _check_items(name, spec, value, out)  # bad items are reported one by one
        return
    if not _type_ok(spec.type, value):
        out.append(FieldProblem(name, _TYPE_TEXT[spec.type], _got(value), _type_hint(spec, value)))
        return
    if spec.enum is not None and value not in spec.enum:
        guess = near_miss(value, spec.enum)
        hint = f"did you mean {guess!r}?" if guess is not None else None
        out.append(FieldProblem(name, _enum_text(spec.enum), _got(value), hint))
    elif isinstance(value, str):
        _check_length(name, spec.min_length, spec.max_length, value, out)
    elif not isinstance(value, bool):
        _check_range(name, spec, value, out)


def _check_length(
    name: str, low: int | None, high: int | None, text: str, out: list[FieldProblem]
) -> None:
    n = len(text)
    if low is not None and n < low:
        out.append(
            FieldProblem(name, f"at least {low} characters", f"{n} characters: {_got(text)}")
        )
    if high is not None and n > high:
        out.append(
            FieldProblem(
                name,
                f"at most {high} characters",
                f"{n} characters",
                f"shorten it by {n - high} characters",
            )
        )


def _check_range(name: str, spec: FieldSpec, v: float, out: list[FieldProblem]) -> None:
    low, high = spec.minimum, spec.maximum
    if (low is not None and v < low) or (high is not None and v > high):
        if low is not None and high is not None:
            expected = f"between {_num(low)} and {_num(high)}"
        elif low is not None:
            expected = f"at least {_num(low)}"
        else:
            expected = f"at most {_num(high or 0)}"
        out.append(FieldProblem(name, expected, _got(v)))


def _check_items(
    name: str, spec: FieldSpec, items: list[Any] | tuple[Any, ...], out: list[FieldProblem]
) -> None:
    n = len(items)
    if spec.min_items is not None and n < spec.min_items:
        out.append(FieldProblem(name, f"at least {spec.min_items} item(s)", f"{n} item(s)"))
    if spec.max_items is not None and n > spec.max_items:
        out.append(
            FieldProblem(
                name,
                f"at most {spec.max_items} item(s)",
                f"{n} item(s)",
                f"remove {n - spec.max_items} item(s)",
            )
        )
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if spec.type == "object_list":
            if not isinstance(item, Mapping):
                out.append(FieldProblem(where, "an object", _got(item)))
            elif spec.item_fields is not None:
                out.extend(_check_mapping(spec.item_fields, item, where + ".", "this item"))
            continue
        if not isinstance(item, str):
            out.append(FieldProblem(where, "a string", _got(item)))
            continue
        if (
            spec.type == "url_list"
            and not _URL.match(item.strip())
            # A local file, read and checked by the manifest reader, named by its bytes.
            and not (spec.file_types and token_sha256(item) is not None)
        ):
            out.append(FieldProblem(where, "an http(s) URL", _got(item), _url_hint(item)))
        if spec.item_max_length is not None and len(item) > spec.item_max_length:
            out.append(
                FieldProblem(
                    where, f"at most {spec.item_max_length} characters", f"{len(item)} characters"
                )
            )


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".heic", ".tif", ".tiff")


def _url_hint(item: str) -> str:
    """What to do about a non-URL item of a URL-only field."""
    text = item.strip()
    local = "://" not in text or text.lower().startswith("file:")
    if local and (
        text.lower().startswith(("file:", "/", "./", "../", "~"))
        or "\\" in text
        or text.lower().endswith(_IMAGE_SUFFIXES)
    ):
        return "this field takes URLs only: upload the file first and give its URL"
    return "upload the file first and give its URL"


def _is_true(values: Mapping[str, Any], name: str) -> bool:
    return values.get(name) is True


def _close_fields(key: str, known: list[str]) -> list[str]:
    """Field names a mistyped key may mean: aspect-ratio, Aspect Ratio, aspct_ratio, aspect."""
    norm = re.sub(r"[\s-]+", "_", key.strip().lower())
    if norm in known:
        return [norm]
    close = difflib.get_close_matches(norm, known, n=3, cutoff=0.6)
    return close or [k for k in known if len(norm) >= 3 and (k.startswith(norm) or norm in k)]


def _missing(name: str, spec: FieldSpec) -> FieldProblem:
    why = ""
    if spec.required_if:
        why = f" (required when {spec.required_if} is true)"
    elif spec.required_unless:
        why = f" (required unless {spec.required_unless} is true)"
    hint = None
    if spec.default is not None:
        hint = f"add it, e.g. {spec.default!r}"
    elif spec.enum:
        hint = f"add it: {_enum_text(spec.enum)}"
    return FieldProblem(name, f"a value{why}", "nothing", hint)


def _check_mapping(
    fields: Mapping[str, FieldSpec], values: Mapping[str, Any], prefix: str, owner: str
) -> list[FieldProblem]:
    out: list[FieldProblem] = []
    known = list(fields)
    for key in values:
        if key in fields:
            continue
        close = _close_fields(str(key), known)
        takes = f"{owner} takes: {', '.join(known)}"
        hint = f"did you mean {close[0]!r}? {takes}" if close else f"remove it; {takes}"
        out.append(FieldProblem(prefix + str(key), f"a field of {owner}", _got(values[key]), hint))
    for name, spec in fields.items():
        value = values.get(name)
        required = (
            spec.required
            or (spec.required_if is not None and _is_true(values, spec.required_if))
            or (spec.required_unless is not None and not _is_true(values, spec.required_unless))
        )
        if not _is_present(value) and (value is None or spec.type == "string"):
            if required:
                out.append(_missing(prefix + name, spec))
            continue
        _check_value(prefix + name, spec, value, out)
    return out


def check_field(name: str, spec: FieldSpec, value: Any) -> list[FieldProblem]:
    """The problems of one present value on its own (type, choices, length, range, items):
    what `validate_input` checks of each field besides whether a required one is there."""
    out: list[FieldProblem] = []
    _check_value(name, spec, value, out)
    return out


def validate_input(spec: ModelSpec, values: Mapping[str, Any]) -> list[FieldProblem]:
    """Every problem with `values` as the input of model `spec` (empty list: it is fine).

    A value of None counts as omitted; an empty string counts as omitted for string fields.
    """
    return _check_mapping(spec.fields, values, "", f"model {spec.id}")


def _split_list(text: str, what: str) -> list[Any]:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} (a JSON array did not parse: {err.msg})") from None
        if not isinstance(data, list):
            raise ValueError(what)
        return data
    return [part.strip() for part in stripped.split("|") if part.strip()]


def coerce_text(field: FieldSpec, text: str) -> Any:
    """Turn a manifest cell into the value the field takes; ValueError says what was expected.

    Strings stay exactly as given, so stringly-typed numbers (kling duration "5") stay strings.
    """
    ftype = field.type
    if ftype == "string":
        return text
    s = text.strip()
    if ftype == "integer":
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            raise ValueError("an integer") from None
        # Spreadsheets write 4 as "4.0": accept it when it is a whole number.
        if math.isfinite(f) and f.is_integer():
            return int(f)
        raise ValueError("an integer")
    if ftype == "number":
        try:
            num = float(s)
        except ValueError:
            raise ValueError("a number") from None
        if not math.isfinite(num):
            raise ValueError("a finite number")
        return int(num) if re.fullmatch(r"[+-]?\d+", s) else num
    if ftype == "boolean":
        low = s.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("true or false (also yes/no, 1/0)")
    if ftype in ("url_list", "string_list"):
        what = "a JSON array of strings or values separated by |"
        items = _split_list(text, what)
        if not all(isinstance(i, str) for i in items):
            raise ValueError(what)
        return [i.strip() for i in items] if ftype == "url_list" else items
    # object_list: only JSON can say what the objects are.
    what = 'a JSON array of objects, e.g. [{"prompt": "...", "duration": 3}]'
    try:
        data = json.loads(s)
    except json.JSONDecodeError:
        raise ValueError(what) from None
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
        raise ValueError(what)
    return data


# ---- prices ----------------------------------------------------------------------------


def effective_values(spec: ModelSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """The input as the service sees it: given values over (conditional) defaults."""
    out = {name: f.default for name, f in spec.fields.items() if f.default is not None}
    out.update({k: v for k, v in values.items() if v is not None})
    for name, f in spec.fields.items():
        cond = f.default_if
        if cond is not None and values.get(name) is None and out.get(cond.field) == cond.value:
            out[name] = cond.default
    return out


def price_inputs(spec: ModelSpec) -> tuple[str, ...]:
    """The fields whose given values decide `estimate_credits`: equal values of these give
    equal credits, so a caller may keep one estimate per distinct tuple of them."""
    rule = spec.price
    names = [part for key in rule.by_field for part in key.split("+")]
    if rule.per_second_field is not None:
        names.append(rule.per_second_field)
    for name in names:  # a conditional default reads another field (which may have one too)
        field = spec.fields.get(name)
        cond = field.default_if if field is not None else None
        if cond is not None and cond.field not in names:
            names.append(cond.field)
    return tuple(dict.fromkeys(names))


def estimate_credits(spec: ModelSpec, values: Mapping[str, Any]) -> float:
    """Credits one task should cost, using service defaults for omitted fields."""
    rule = spec.price
    eff = effective_values(spec, values)
    credits = rule.credits
    for key, table in rule.by_field.items():
        hit = table.get(price_key(key, eff))
        if hit is not None:
            credits = hit
    if rule.per_second_field is not None:
        try:
            seconds = int(str(eff.get(rule.per_second_field, 0)))
        except ValueError:
            seconds = 0
        credits *= seconds
    if rule.round_up:  # whole credits per task; the epsilon keeps 6.0000001 from becoming 7
        credits = float(math.ceil(credits - 1e-9))
    return credits


def describe_price(rule: PriceRule) -> str:
    """One line: base credits, overrides and the per-second rule."""
    text = f"{rule.credits:g} credits"
    for key, table in rule.by_field.items():
        text += f"; by {key}: " + ", ".join(f"{v}={c:g}" for v, c in table.items())
    if rule.per_second_field:
        text += f"; per second of {rule.per_second_field}"
    return text + (f" ({rule.note})" if rule.note else "")


def price_key(key: str, values: Mapping[str, Any]) -> str:
    """The lookup key of a `price.by_field` table: "mode+sound" -> "pro+false"."""
    parts = []
    for name in key.split("+"):
        value = values.get(name)
        parts.append(str(value).lower() if isinstance(value, bool) else str(value))
    return "+".join(parts)
