"""Written values -> a field's type: text cells, YAML/JSON values, lists and objects.

Apart from the job builder because it is the one place a manifest's text becomes typed
input, and it keeps a cache: short scalar cells repeat a lot in a big manifest (a seed,
`true`), so each distinct text of a numeric or boolean field is converted once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from liangxin_batch.catalog._catalog import coerce_text
from liangxin_batch.catalog._yaml12 import resolve_plain

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import FieldSpec

__all__ = ["ValueConverter"]

_CACHE_MAX = 50_000
_MISS = object()


class _Bad:
    """A cached conversion failure: what the field expected."""

    __slots__ = ("expected",)

    def __init__(self, expected: str) -> None:
        self.expected = expected


class ValueConverter:
    """Converts a written value to its field's type (ValueError(expected) when it cannot)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str], Any] = {}

    def convert(self, fs: FieldSpec, value: Any) -> Any:
        if isinstance(value, str):
            if fs.type == "string":
                return str(value)  # also drops the PlainText marker
            if fs.type in ("integer", "number", "boolean") and len(value) <= 64:
                key = (id(fs), value)
                hit = self._cache.get(key, _MISS)
                if hit is _MISS:
                    try:
                        hit = coerce_text(fs, str(value))
                    except ValueError as err:
                        hit = _Bad(str(err))
                    if len(self._cache) >= _CACHE_MAX:
                        self._cache.clear()
                    self._cache[key] = hit
                if isinstance(hit, _Bad):
                    raise ValueError(hit.expected)
                return hit
            return coerce_text(fs, str(value))
        if isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            return str(value) if fs.type == "string" else value  # JSON 5 for a "5" field
        if isinstance(value, list):
            if fs.type == "object_list":
                return [self._item(fs, v) for v in value]
            return [str(v) if isinstance(v, str) else resolve_plain(v) for v in value]
        return resolve_plain(value)

    def _item(self, fs: FieldSpec, item: Any) -> Any:
        if not isinstance(item, dict):
            return resolve_plain(item)
        out: dict[str, Any] = {}
        for k, v in item.items():
            sub = fs.item_fields.get(str(k)) if fs.item_fields else None
            if sub is None:
                out[str(k)] = resolve_plain(v)
                continue
            try:
                out[str(k)] = self.convert(sub, v)
            except ValueError:
                out[str(k)] = str(v)  # validate_input names the item and what it expected
        return out
