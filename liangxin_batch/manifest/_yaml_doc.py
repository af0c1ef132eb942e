"""One YAML (or JSON) document, composed for line numbers and loaded as text, safely.

A line too long to scan quickly, an alias bomb (`check_expansion`), nesting too deep and
keys written twice are refused before or while the document is built, each as a
`Problem` with its line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from liangxin_batch.catalog._yaml12 import (
    MAX_SCALAR_CHARS,
    ExpansionError,
    TextLoader,
    check_expansion,
)
from liangxin_batch.core._records import Problem, SourceRef, got_text

__all__ = ["duplicate_keys", "line_of", "load_document", "pairs_of"]

_LONG_LINE = re.compile(f"[^\n]{{{MAX_SCALAR_CHARS + 1}}}")


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def pairs_of(node: Node | None) -> dict[str, tuple[Node, Node]]:
    """Scalar key -> (key node, value node); the last one wins, as in the loaded data."""
    out: dict[str, tuple[Node, Node]] = {}
    if isinstance(node, MappingNode):
        for knode, vnode in node.value:
            if isinstance(knode, ScalarNode):
                out[str(knode.value)] = (knode, vnode)
    return out


def duplicate_keys(root: Node, display: str) -> Iterator[Problem]:
    """Keys written twice in one mapping (YAML silently keeps the last)."""
    seen: set[int] = set()
    stack = [root]  # iterative: nesting depth is the author's, not ours to recurse on
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases share nodes
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for knode, vnode in node.value:
                if isinstance(knode, ScalarNode) and knode.value != "<<":
                    key = str(knode.value)
                    if key in first:
                        yield Problem(
                            SourceRef(display, line_of(knode), key),
                            key,
                            "each key once in a mapping",
                            f"{key!r} again (first at line {first[key]})",
                            "remove one; YAML would silently keep only the last",
                        )
                    else:
                        first[key] = line_of(knode)
                stack.append(vnode)
        elif isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))


def load_document(
    text: str, display: str, *, one_line_ok: bool = False
) -> tuple[Node | None, Any] | Problem:
    """Compose (for line numbers) and construct the one document, or say why not."""
    # PyYAML scans a character at a time: a 50 MB value would take half a minute
    # before `check_expansion` could refuse it. A line that long is refused first.
    # (Not with `one_line_ok`: a minified JSON manifest is one long line.)
    long_line = None if one_line_ok else _LONG_LINE.search(text)
    if long_line is not None:
        return Problem(
            SourceRef(display, text.count("\n", 0, long_line.start()) + 1),
            None,
            "a manifest of bounded size",
            f"a line of more than {MAX_SCALAR_CHARS:,} characters",
            "put long data in a file named by jobs_from",
        )
    try:
        loader = TextLoader(text)  # rejects non-printable characters right here
    except yaml.YAMLError as err:
        return _yaml_problem(err, text, display)
    try:
        node = loader.get_single_node()
        if node is not None:
            check_expansion(node)  # an alias bomb is refused before it is built
        data = loader.construct_document(node) if node is not None else None
    except ExpansionError as err:
        return Problem(
            SourceRef(display, int(err.problem_mark.line) + 1 if err.problem_mark else 1),
            None,
            "a manifest of bounded size",
            str(err.problem),
        )
    except yaml.YAMLError as err:
        return _yaml_problem(err, text, display)
    except RecursionError:
        return Problem(
            SourceRef(display, 1),
            None,
            "YAML nested at most a few hundred levels",
            "deeper nesting",
        )
    finally:
        loader.dispose()
    return node, data


def _yaml_problem(err: yaml.YAMLError, text: str, display: str) -> Problem:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is not None:
        line = int(mark.line) + 1
    else:  # a ReaderError knows only the character position
        position = getattr(err, "position", 0)
        line = text.count("\n", 0, position if isinstance(position, int) else 0) + 1
    what = str(getattr(err, "problem", None) or getattr(err, "reason", None) or str(err))
    if "'\\t'" in what:  # PyYAML: "found character '\t' that cannot start any token"
        hint = "indent with spaces: YAML does not allow tabs for indentation"
    else:
        hint = "quote values that contain ': ', '#' or start with {, [, *, &, ! or %"
    return Problem(SourceRef(display, line), None, "valid YAML", got_text(what), hint)
