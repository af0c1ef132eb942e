"""YAML loaders with YAML 1.2 core-schema rules instead of PyYAML's YAML 1.1 ones.

PyYAML's `safe_load` follows YAML 1.1: `16:9` becomes 969 (base 60), `00042` becomes 34
(octal), `no`/`on` become booleans and `2026-01-02` a date. Two loaders fix that:

- `Yaml12Loader`: the YAML 1.2 core schema. Booleans only `true`/`false` (any case
  variant the spec allows), null only `null`/`~`/empty, integers in base 10 (leading zeros
  stay base 10), `0o`/`0x`, floats including `1e3`; no base-60 numbers, no timestamps.
- `TextLoader` (manifests): booleans and null as above, every other plain scalar stays its
  original text as a `PlainText` (a `str`), so the manifest converts it by the catalog's
  field type exactly like a CSV cell; `resolve_plain` applies the core schema later where
  no field type is known.

Both keep `<<` merge keys and anchors. Aliases can make a small document expand into
billions of nodes ("billion laughs"): `check_expansion` counts the nodes a composed
document expands to, before anything is constructed, and refuses it past a bound.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import IO, Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from liangxin_batch.core._accounts import Located

__all__ = [
    "MAX_ALIAS_CHARS",
    "MAX_ALIAS_NODES",
    "MAX_SCALAR_CHARS",
    "ExpansionError",
    "PlainText",
    "TextLoader",
    "Yaml12Loader",
    "check_expansion",
    "load_located",
    "load_text",
    "load_yaml12",
    "resolve_plain",
]

#: What aliases may add to a document once followed: nodes and characters beyond the
#: document's own (a plain list of a million jobs is fine; a few lines that expand into a
#: million copies are a "billion laughs" and are refused). Repeated parts are written with
#: `matrix`, `repeat` or `jobs_from`.
MAX_ALIAS_NODES = 1_000_000
MAX_ALIAS_CHARS = 10_000_000
#: Characters in one scalar value (prompts are at most a few thousand).
MAX_SCALAR_CHARS = 1_000_000


class ExpansionError(yaml.constructor.ConstructorError):
    """The document expands beyond the bounds: refused before it is built."""


def check_expansion(
    root: Node,
    *,
    max_alias_nodes: int = MAX_ALIAS_NODES,
    max_alias_chars: int = MAX_ALIAS_CHARS,
    max_scalar: int = MAX_SCALAR_CHARS,
) -> None:
    """Raise ExpansionError (located) when following the aliases of `root` would add more
    than `max_alias_nodes` nodes or `max_alias_chars` characters to what the document
    itself holds, when a scalar is over `max_scalar` characters, or when an alias contains
    itself.

    Each node is visited once: the cost is linear in the document, not in its expansion.
    """
    # (nodes, characters) each node expands to, aliases counted once per use.
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    own_nodes = own_chars = 0  # the document itself: every distinct node once
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            nodes, chars = 1, len(node.value) if isinstance(node, ScalarNode) else 0
            for kid in _children(node):
                kid_nodes, kid_chars = sizes[id(kid)]
                nodes, chars = nodes + kid_nodes, chars + kid_chars
            sizes[key] = (nodes, chars)
            if nodes - own_nodes > max_alias_nodes or chars - own_chars > max_alias_chars:
                raise ExpansionError(
                    None,
                    None,
                    "aliases here expand to more than "
                    f"{max_alias_nodes:,} values or {max_alias_chars:,} characters; write "
                    "repeated parts with `matrix`, `repeat` or `jobs_from` instead",
                    node.start_mark,
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise ExpansionError(None, None, "an alias that contains itself", node.start_mark)
        if isinstance(node, ScalarNode):
            if len(node.value) > max_scalar:
                raise ExpansionError(
                    None,
                    None,
                    f"a value of {len(node.value):,} characters; at most {max_scalar:,}",
                    node.start_mark,
                )
            own_chars += len(node.value)
        own_nodes += 1
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node) if id(kid) not in sizes)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_MERGE = re.compile(r"^(?:<<)$")


class PlainText(str):
    """A scalar written without quotes; its meaning depends on the field it is given to."""

    __slots__ = ()


def _int_value(text: str) -> int:
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)  # "00042" is 42: YAML 1.2 has no implicit octal


def _float_value(text: str) -> float:
    low = text.lower()
    if low in (".inf", "+.inf"):
        return math.inf
    if low == "-.inf":
        return -math.inf
    if low == ".nan":
        return math.nan
    return float(text)


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema implicit types."""

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        try:
            return _int_value(text)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"expected an integer, got {text!r}", node.start_mark
            ) from None

    def construct_yaml_float(self, node: ScalarNode) -> float:
        text = str(self.construct_scalar(node))
        try:
            return _float_value(text)
        except ValueError:
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a number, got {text!r}", node.start_mark
            ) from None

    def construct_yaml_bool(self, node: ScalarNode) -> bool:
        text = str(self.construct_scalar(node))
        if not _BOOL.match(text):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected true or false, got {text!r}", node.start_mark
            )
        return text.lower() == "true"


for _tag, _method in (
    ("tag:yaml.org,2002:int", Yaml12Loader.construct_yaml_int),
    ("tag:yaml.org,2002:float", Yaml12Loader.construct_yaml_float),
    ("tag:yaml.org,2002:bool", Yaml12Loader.construct_yaml_bool),
):
    Yaml12Loader.add_constructor(_tag, _method)

# Fresh tables: the inherited YAML 1.1 resolvers (base 60, yes/no/on/off, timestamps) are gone.
Yaml12Loader.yaml_implicit_resolvers = {}
# Order matters within one first character: int is tried before float ("42" is an int).
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789"))
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:merge", _MERGE, ["<"])


class TextLoader(Yaml12Loader):
    """Manifest loader: true/false and null are typed; every other plain scalar is `PlainText`."""

    def construct_yaml_str(self, node: ScalarNode) -> str:
        value = str(self.construct_scalar(node))
        # Quoted and block scalars are text by the author's choice; plain ones are ambiguous.
        return PlainText(value) if node.style is None else value


TextLoader.add_constructor("tag:yaml.org,2002:str", TextLoader.construct_yaml_str)
TextLoader.yaml_implicit_resolvers = {}
TextLoader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
TextLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
TextLoader.add_implicit_resolver("tag:yaml.org,2002:merge", _MERGE, ["<"])


def resolve_plain(value: Any) -> Any:
    """Apply the YAML 1.2 core schema to `PlainText` (recursively); other values unchanged.

    For values whose type no field spec tells (e.g. keys of a nested object): `3` -> 3,
    `1e3` -> 1000.0, `16:9` stays text, and quoted text stays text.
    """
    if isinstance(value, PlainText):
        text = str(value)
        if _INT.match(text):
            return _int_value(text)
        if _FLOAT.match(text):
            return _float_value(text)
        return text
    if isinstance(value, list):
        return [resolve_plain(v) for v in value]
    if isinstance(value, dict):
        return {resolve_plain(k): resolve_plain(v) for k, v in value.items()}
    return value


def _load_checked(
    stream: str | bytes | IO[str] | IO[bytes],
    loader_class: type[Any],
    build: Callable[[Any, Node], Any] | None = None,
) -> Any:
    """One document, its expansion bounded, built by `build(loader, node)` (default:
    constructed as plain values)."""
    loader = loader_class(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node)
        return build(loader, node) if build is not None else loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml12(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """Load one document with the YAML 1.2 core schema (typed scalars), bounded."""
    return _load_checked(stream, Yaml12Loader)


def load_text(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """Load one document with `TextLoader` (plain scalars stay text), bounded."""
    return _load_checked(stream, TextLoader)


def load_located(stream: str | bytes | IO[str] | IO[bytes]) -> Located | None:
    """One document (YAML 1.2 core schema, bounded) as `Located` values: each with the
    line it starts on, for messages that say where (an accounts file). A key given
    twice in one mapping is an error at its second line."""
    located: Located | None = _load_checked(stream, Yaml12Loader, _located)
    return located


def _located(loader: Yaml12Loader, node: Node) -> Located:
    line = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        values: dict[Any, Located] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be plain text", key_node.start_mark
                )
            if key in values:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice", key_node.start_mark
                )
            values[key] = _located(loader, value_node)
        return Located(values, line)
    if isinstance(node, SequenceNode):
        return Located([_located(loader, item) for item in node.value], line)
    return Located(loader.construct_object(node, deep=True), line)
