"""What a catalog says about a model: frozen dataclasses, a leaf that imports nothing of ours.

These are the one definition of a catalog entry's shape: the pydantic schema that checks a
catalog file (`_schema.py`) is derived from them, field by field, defaults included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any, Literal

__all__ = [
    "REQUIRED",
    "ConditionalDefault",
    "FieldSpec",
    "FieldType",
    "ModelSpec",
    "PriceRule",
    "default_of",
]

#: What `default_of` gives for a field that has no default.
REQUIRED: Any = dataclasses.MISSING


def default_of(f: dataclasses.Field[Any]) -> Any:
    """A dataclass field's default (made afresh from a factory), or REQUIRED."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


FieldType = Literal[
    "string", "integer", "number", "boolean", "url_list", "string_list", "object_list"
]


@dataclass(frozen=True, slots=True)
class ConditionalDefault:
    """A default that changes with another field (kling: sound is on with multi_shots)."""

    field: str
    value: Any
    default: Any


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One input field of a model.

    Stringly-typed numbers (kling `duration`, imagen4-fast `num_images`, imagen4-ultra
    `seed`) are `type: string`: the service wants "5", not 5.
    """

    name: str
    type: FieldType
    required: bool = False
    default: Any = None  # what the service assumes when omitted; documentation/plan only
    enum: tuple[Any, ...] | None = None
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_items: int | None = None
    max_items: int | None = None
    item_max_length: int | None = None
    description: str = ""
    doubt: str | None = None
    required_if: str | None = None  # required when this boolean field is true
    required_unless: str | None = None  # required unless this boolean field is true
    default_if: ConditionalDefault | None = None
    item_fields: Mapping[str, FieldSpec] | None = None  # object_list: the keys of each item
    # url_list fields that take images: which media types (sniffed from the bytes) a local
    # file may have, and its largest size in MB of 10**6 bytes (the docs' "10 MB" read the
    # strict way). None: the field takes URLs only, no local files.
    file_types: tuple[str, ...] | None = None
    max_file_mb: float | None = None


@dataclass(frozen=True, slots=True)
class PriceRule:
    """Credits per task. `by_field` keys are "field" or "a+b"; values "v" or "v+w" (booleans
    as true/false); a later matching entry overrides an earlier one and the base."""

    credits: float
    by_field: Mapping[str, Mapping[str, float]] = _field(default_factory=dict)
    per_second_field: str | None = None  # video: credits are multiplied by int(input[field])
    note: str = ""
    # The service bills whole credits per task, rounded up; None: as the catalog says
    # (`credits_round_up`, default true).
    round_up: bool | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model; `source` is "builtin" or the user catalog file that added or changed it."""

    id: str
    name: str
    kind: Literal["image", "video"]
    fields: Mapping[str, FieldSpec]
    price: PriceRule
    typical_seconds: float
    aliases: tuple[str, ...] = ()
    outputs_per_task: int = 1
    doubt: str | None = None
    source: str = "builtin"

    def image_field(self) -> str | None:
        """The model's list of input images: its one top-level url_list field that takes
        local files (`file_types`). A manifest's model-neutral `images` key maps onto it,
        so one manifest can give the same inputs to several models. None when the model
        has no such field (or several, and `images` could mean either)."""
        found = [f.name for f in self.fields.values() if f.type == "url_list" and f.file_types]
        return found[0] if len(found) == 1 else None
