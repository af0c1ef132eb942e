"""YAML (and JSON) manifests: defaults, vars, matrix, prompt templates, repeat, jobs_from.

```yaml
defaults: {model: seedream/4.5-text-to-image, aspect_ratio: "16:9"}
vars: {style: [watercolor, "35mm film"]}        # list vars expand jobs that use them
matrix: {subject: [a tea bottle, a red bicycle]} # cartesian product
repeat: 1                                         # copies of every job (ids get -r1, -r2, ...)
jobs:
  - {id: hero-shot, model: nano-banana-pro, prompt: "A product photo", resolution: 2K}
  - prompt: "{subject}, {style}"                  # 2 subjects x 2 styles = 4 jobs
jobs_from: prompts.csv                            # rows take the defaults too
```

Rules, chosen so a manifest never does something the author did not write:

- A job's own keys win over `matrix`, which wins over `defaults`. `key: null` in a job
  removes a default.
- A default or matrix key applies to a job only if the job's model takes that field (so one
  `defaults:` serves several models); a key that no job uses at all is a problem.
- A matrix/vars list expands a job only if the job uses it: a `{placeholder}` in one of its
  text values, or (matrix) a field of its model. `{{` and `}}` are literal braces. In `id`
  templates, the values are made file-name-safe.
- Plain scalars are loaded as text (`_yaml12.TextLoader`) and converted by field type later,
  so `16:9`, `00042`, `no` and `2026-01-02` reach the catalog exactly as written.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ._manifest_read import (
    NOTE_PREFIX,
    RESERVED,
    TABULAR_SUFFIXES,
    decode_problem,
    parse_repeat,
    read_tabular,
)
from ._manifest_types import Problem, RawJob, SourceRef, close_match, got_text, value_text
from ._yaml12 import TextLoader

if TYPE_CHECKING:
    from ._catalog import Catalog

__all__ = ["MAX_EXPANSION", "read_yaml"]

TOP_KEYS = ("defaults", "vars", "matrix", "jobs", "jobs_from", "repeat")
MAX_EXPANSION = 10_000_000  # jobs from one manifest entry; more is a typo, not a plan
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

_Located = tuple[Any, SourceRef]


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _pairs(node: Node | None) -> dict[str, tuple[Node, Node]]:
    """Scalar key -> (key node, value node); the last one wins, as in the loaded data."""
    out: dict[str, tuple[Node, Node]] = {}
    if isinstance(node, MappingNode):
        for knode, vnode in node.value:
            if isinstance(knode, ScalarNode):
                out[str(knode.value)] = (knode, vnode)
    return out


def _duplicate_keys(root: Node, display: str) -> Iterator[Problem]:
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
                            SourceRef(display, _line(knode), key),
                            key,
                            "each key once in a mapping",
                            f"{key!r} again (first at line {first[key]})",
                            "remove one; YAML would silently keep only the last",
                        )
                    else:
                        first[key] = _line(knode)
                stack.append(vnode)
        elif isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))


def _slug_id(text: str) -> str:
    return _ID_UNSAFE.sub("-", text).strip("-.")


def _fill(template: str, ctx: Mapping[str, Any], *, for_id: bool) -> str:
    def one(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        text = value_text(ctx[m.group(1)])
        return _slug_id(text) if for_id else text

    return _PLACEHOLDER.sub(one, template)


def _refs(value: Any) -> list[str]:
    if isinstance(value, str) and "{" in value:
        return [m.group(1) for m in _PLACEHOLDER.finditer(value) if m.group(1)]
    return []


class _Reader:
    """One YAML manifest: its parts, where each was written, and what the jobs used."""

    def __init__(
        self, path: Path, display: str, catalog: Catalog, default_model: str | None
    ) -> None:
        self.path = path
        self.display = display
        self.catalog = catalog
        self.default_model = default_model
        self.defaults: dict[str, Any] = {}
        self.default_at: dict[str, SourceRef] = {}
        self.vars: dict[str, list[_Located]] = {}  # every var as a list; scalars have one item
        self.var_lists: set[str] = set()
        self.matrix: dict[str, list[_Located]] = {}
        self.matrix_at: dict[str, SourceRef] = {}
        self.used: set[str] = set()  # defaults and matrix keys some job used
        self.fields_seen: set[str] = set()  # fields of the models jobs used (for suggestions)

    def at(self, node: Node | None, column: str | None = None, fallback: int = 1) -> SourceRef:
        return SourceRef(self.display, _line(node) if node is not None else fallback, column)

    # ---- parts ----------------------------------------------------------------------------

    def job_values(
        self, data: Mapping[Any, Any], node: Node | None, problems: list[Problem]
    ) -> tuple[dict[str, Any], dict[str, SourceRef], dict[str, str]]:
        """A job's (or the defaults') keys, with `input:` flattened; notes kept apart."""
        pairs = _pairs(node)
        values: dict[str, Any] = {}
        where: dict[str, SourceRef] = {}
        notes: dict[str, str] = {}
        nested: Any = None
        for raw_key, value in data.items():
            key = str(raw_key)
            knode = pairs.get(key, (None, None))[0]
            if key == "input":
                nested = value
                continue
            if key.startswith(NOTE_PREFIX):
                notes[key] = value_text(value)
                continue
            values[key] = value
            where[key] = self.at(knode or node, key)
        if nested is not None:
            inode = pairs.get("input", (None, None))[1]
            if not isinstance(nested, dict):
                problems.append(
                    Problem(
                        self.at(inode or node, "input"),
                        "input",
                        "a mapping of input fields",
                        got_text(nested),
                    )
                )
            else:
                ipairs = _pairs(inode)
                for raw_key, value in nested.items():
                    key = str(raw_key)
                    kat = self.at(ipairs.get(key, (inode, None))[0], key)
                    if key in values or key in RESERVED:
                        problems.append(
                            Problem(
                                kat,
                                f"input.{key}",
                                "each field given once"
                                if key in values
                                else "only input fields under input:",
                                f"{key!r} under input:"
                                + (" and beside it" if key in values else ""),
                                "keep one of them"
                                if key in values
                                else f"move {key} out of input:",
                            )
                        )
                        continue
                    values[key] = value
                    where[key] = kat
        return values, where, notes

    def named_lists(
        self, data: Any, node: Node | None, part: str, problems: list[Problem]
    ) -> dict[str, list[_Located]]:
        """`vars:` / `matrix:`: name -> located values."""
        out: dict[str, list[_Located]] = {}
        if data is None:
            return out
        if not isinstance(data, dict):
            problems.append(
                Problem(
                    self.at(node),
                    part,
                    f"a mapping of name -> values under {part}:",
                    got_text(data),
                )
            )
            return out
        pairs = _pairs(node)
        for raw_key, value in data.items():
            key = str(raw_key)
            knode, vnode = pairs.get(key, (node, node))
            if not _NAME.match(key):
                problems.append(
                    Problem(
                        self.at(knode, key),
                        f"{part}.{key}",
                        "a name of letters, digits and _ (not starting with a digit)",
                        got_text(key),
                    )
                )
                continue
            if isinstance(value, list):
                items = list(vnode.value) if isinstance(vnode, SequenceNode) else []
                located = [
                    (v, self.at(items[i] if i < len(items) else vnode, key))
                    for i, v in enumerate(value)
                ]
                if not located:
                    problems.append(
                        Problem(
                            self.at(knode, key),
                            f"{part}.{key}",
                            "at least one value",
                            "an empty list",
                        )
                    )
                    continue
                out[key] = located
                if part == "vars":
                    self.var_lists.add(key)
            else:  # a single value: a constant var, or a one-value matrix dimension
                out[key] = [(value, self.at(vnode, key))]
        return out

    # ---- the document -------------------------------------------------------------------

    def load(self, text: str) -> tuple[Node | None, Any] | Problem:
        """Compose (for line numbers) and construct the one document, or say why not."""
        try:
            loader = TextLoader(text)  # rejects non-printable characters right here
        except yaml.YAMLError as err:
            return self.yaml_problem(err, text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        except yaml.YAMLError as err:
            return self.yaml_problem(err, text)
        except RecursionError:
            return Problem(
                SourceRef(self.display, 1),
                None,
                "YAML nested at most a few hundred levels",
                "deeper nesting",
            )
        finally:
            loader.dispose()
        return node, data

    def yaml_problem(self, err: yaml.YAMLError, text: str) -> Problem:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        if mark is not None:
            line = int(mark.line) + 1
        else:  # a ReaderError knows only the character position
            position = getattr(err, "position", 0)
            line = text.count("\n", 0, position if isinstance(position, int) else 0) + 1
        what = getattr(err, "problem", None) or getattr(err, "reason", None) or str(err)
        return Problem(
            SourceRef(self.display, line),
            None,
            "valid YAML",
            got_text(str(what)),
            "quote values that contain ': ', '#' or start with {, [, *, &, ! or %",
        )

    def read(self) -> Iterator[RawJob | Problem]:
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            yield decode_problem(self.path, self.display, err)
            return
        if self.path.suffix.lower() == ".json":
            # JSON is read as YAML (for line numbers), but YAML refuses the tabs JSON may be
            # indented with. Outside strings a tab is only whitespace, and inside a JSON
            # string it must be escaped (\t), so this keeps the meaning and every position.
            text = text.replace("\t", " ")
        loaded = self.load(text)
        if isinstance(loaded, Problem):
            yield loaded
            return
        node, data = loaded
        if node is not None:
            yield from _duplicate_keys(node, self.display)
        if data is None or node is None:
            yield Problem(
                SourceRef(self.display, 1),
                None,
                "a manifest with jobs",
                "an empty document",
                "see examples/quickstart.yaml",
            )
            return
        if isinstance(data, list):
            yield from self.jobs(data, node)
            return
        if not isinstance(data, dict):
            yield Problem(
                SourceRef(self.display, _line(node)),
                None,
                "a mapping with jobs: (or a list of jobs)",
                got_text(data),
            )
            return
        yield from self.document(data, node)

    def document(self, data: dict[Any, Any], node: Node) -> Iterator[RawJob | Problem]:
        problems: list[Problem] = []
        pairs = _pairs(node)
        for raw_key in data:
            key = str(raw_key)
            if key not in TOP_KEYS:
                guess = close_match(key, TOP_KEYS)
                hint = (
                    f"did you mean {guess!r}?"
                    if guess
                    else ("job fields go under defaults: or in a job under jobs:")
                )
                problems.append(
                    Problem(
                        self.at(pairs.get(key, (node,))[0], key),
                        key,
                        "one of " + ", ".join(TOP_KEYS),
                        f"top-level key {key!r}",
                        hint,
                    )
                )

        def part(name: str) -> tuple[Any, Node | None, Node | None]:
            knode, vnode = pairs.get(name, (None, None))
            return data.get(name), knode, vnode

        defaults, _, dnode = part("defaults")
        if isinstance(defaults, dict):
            self.defaults, self.default_at, _notes = self.job_values(defaults, dnode, problems)
        elif defaults is not None:
            problems.append(
                Problem(
                    self.at(dnode), "defaults", "a mapping of field -> value", got_text(defaults)
                )
            )
        repeat, rknode, rnode = part("repeat")
        if repeat is not None:
            self.defaults["repeat"] = repeat
            self.default_at["repeat"] = self.at(rnode or rknode, "repeat")
        self.vars = self.named_lists(data.get("vars"), part("vars")[2], "vars", problems)
        self.matrix = self.named_lists(data.get("matrix"), part("matrix")[2], "matrix", problems)
        self.matrix_at = {
            k: self.at(_pairs(part("matrix")[2]).get(k, (None,))[0], k) for k in self.matrix
        }
        for name in set(self.vars) & set(self.matrix):
            problems.append(
                Problem(
                    self.matrix_at[name],
                    f"matrix.{name}",
                    "a name used once",
                    f"{name!r} under both vars: and matrix:",
                    "rename one of them",
                )
            )
        yield from problems

        jobs, jknode, jnode = part("jobs")
        sources, sknode, snode = part("jobs_from")
        if jobs is not None:
            if isinstance(jobs, list):
                yield from self.jobs(jobs, jnode)
            else:
                yield Problem(self.at(jnode or jknode), "jobs", "a list of jobs", got_text(jobs))
        if sources is not None:
            yield from self.jobs_from(sources, snode or sknode)
        if jobs is None and sources is None and (self.matrix or self.defaults):
            # defaults x matrix alone describe the jobs: one implicit job to expand.
            anchor = pairs.get("matrix", pairs.get("defaults", (node,)))[0]
            yield from self.expand({}, {}, {}, self.at(anchor), None)
        yield from self.unused()

    def jobs(self, items: list[Any], node: Node | None) -> Iterator[RawJob | Problem]:
        nodes = list(node.value) if isinstance(node, SequenceNode) else []
        for i, item in enumerate(items):
            inode = nodes[i] if i < len(nodes) else node
            at = self.at(inode)
            if isinstance(item, str):  # a bare string is a prompt
                yield from self.expand(
                    {"prompt": item}, {"prompt": self.at(inode, "prompt")}, {}, at, None
                )
            elif isinstance(item, dict):
                problems: list[Problem] = []
                values, where, notes = self.job_values(item, inode, problems)
                yield from self.expand(values, where, notes, at, problems or None)
            else:
                yield Problem(
                    at, None, "a job: a mapping of fields, or a prompt string", got_text(item)
                )

    def jobs_from(self, spec: Any, node: Node | None) -> Iterator[RawJob | Problem]:
        names = spec if isinstance(spec, list) else [spec]
        items = list(node.value) if isinstance(node, SequenceNode) else [node] * len(names)
        for name, nnode in zip(names, items, strict=False):
            at = self.at(nnode, "jobs_from")
            if not isinstance(name, str) or not name.strip():
                yield Problem(at, "jobs_from", "a file name (or a list of them)", got_text(name))
                continue
            target = self.path.parent / name
            display = os.path.join(os.path.dirname(self.display), name)
            if target.suffix.lower() not in TABULAR_SUFFIXES:
                yield Problem(
                    at, "jobs_from", "a " + ", ".join(TABULAR_SUFFIXES) + " file", got_text(name)
                )
                continue
            if not target.is_file():
                yield Problem(
                    at, "jobs_from", "a file next to the manifest", f"{name!r} (not found)"
                )
                continue
            for row in read_tabular(target, display):
                if isinstance(row, Problem):
                    yield row
                    continue
                yield from self.expand(row.values, {}, {}, row.source, row.problems, row=row)

    # ---- expansion ------------------------------------------------------------------------

    def expand(
        self,
        values: dict[str, Any],
        where: dict[str, SourceRef],
        notes: dict[str, str],
        at: SourceRef,
        problems: list[Problem] | None,
        *,
        row: RawJob | None = None,
    ) -> Iterator[RawJob | Problem]:
        """Defaults + this job (+ matrix and list vars it uses) -> one RawJob per combination."""
        explicit = set(values)
        merged: dict[str, Any] = {}
        origin: dict[str, SourceRef] = {}
        for key, value in self.defaults.items():
            if key not in explicit:
                merged[key] = value
                origin[key] = self.default_at[key]
        merged.update(values)
        origin.update(where)
        for key in [k for k, v in merged.items() if v is None]:  # `key: null` unsets a default
            del merged[key]
        refs: dict[str, str] = {}  # placeholder -> the key whose template uses it
        for key, value in merged.items():
            for name in _refs(value):
                refs.setdefault(name, key)
        bad = [name for name in refs if name not in self.vars and name not in self.matrix]
        if bad:
            known = [*self.vars, *self.matrix]
            for name in bad:
                key = refs[name]
                guess = close_match(name, known) if known else None
                hint = (
                    f"did you mean {{{guess}}}?"
                    if guess
                    else (
                        f"define {name} under vars: or matrix:, "
                        f"or write {{{{{name}}}}} for literal braces"
                    )
                )
                yield Problem(
                    origin.get(key, at),
                    key,
                    "a {name} defined under vars: or matrix:",
                    f"{{{name}}}",
                    hint,
                )
            return
        if "model" in self.matrix and "model" not in explicit:
            self.used.add("model")
            models: list[tuple[Any, SourceRef | None]] = list(self.matrix["model"])
        else:
            models = [(merged.get("model"), origin.get("model"))]
        for model, model_at in models:
            yield from self._combinations(
                merged, origin, explicit, refs, model, model_at, notes, at, problems, row
            )

    def _combinations(
        self,
        merged: dict[str, Any],
        origin: dict[str, SourceRef],
        explicit: set[str],
        refs: Mapping[str, str],
        model: Any,
        model_at: SourceRef | None,
        notes: dict[str, str],
        at: SourceRef,
        problems: list[Problem] | None,
        row: RawJob | None,
    ) -> Iterator[RawJob | Problem]:
        name = model if isinstance(model, str) else None
        spec = (
            self.catalog.get(name.strip())
            if name
            else (
                self.catalog.get(self.default_model)
                if self.default_model and model is None
                else None
            )
        )
        known_model = spec is not None
        fields = spec.fields if spec is not None else {}
        self.fields_seen.update(fields)
        base = dict(merged)
        if model_at is not None:
            base["model"] = model
        base_origin = dict(origin)
        if model_at is not None:
            base_origin["model"] = model_at
        # Defaults the model does not take are left out for this job (one defaults: block
        # may serve several models); an unknown model keeps them all (its problem is enough).
        # A default or matrix key counts as used when some job's model takes it, even if
        # that job overrides it: the check is for keys no model takes (typos).
        for key in self.default_at:
            if key in RESERVED or not known_model or key in fields:
                self.used.add(key)
            elif key in base and key not in explicit:
                del base[key]
        dims: list[tuple[str, list[_Located], bool]] = []
        for key, located in self.matrix.items():
            if key == "model":
                continue
            is_field = key in fields or (not known_model and key not in refs)
            if key in refs or is_field:
                self.used.add(key)
                if key not in explicit:
                    dims.append((key, located, is_field))
        ctx: dict[str, Any] = {}
        for key, located in self.vars.items():
            if key in self.var_lists:
                if key in refs:
                    dims.append((key, located, False))
            else:
                ctx[key] = located[0][0]
        for key in self.matrix:
            if key in explicit and key in refs:
                ctx[key] = merged.get(key)  # the job's own value stands in for the matrix
        size = math.prod(len(d[1]) for d in dims)
        if size > MAX_EXPANSION:
            yield Problem(
                at,
                None,
                f"at most {MAX_EXPANSION:,} jobs from one entry",
                f"{size:,} combinations of " + ", ".join(d[0] for d in dims),
            )
            return
        for combo in itertools.product(*(d[1] for d in dims)):
            values = dict(base)
            where = dict(base_origin)
            local = dict(ctx)
            for (key, _located, is_field), (value, vat) in zip(dims, combo, strict=True):
                local[key] = value
                if is_field:
                    values[key] = value
                    where[key] = vat
            for key, value in values.items():
                if isinstance(value, str) and ("{" in value or "}}" in value):
                    values[key] = _fill(value, local, for_id=key == "id")
            repeat = 1
            rep_problems = list(problems or ())
            if "repeat" in values:
                if row is not None and row.repeat != 1:
                    repeat = row.repeat
                else:
                    repeat, rbad = parse_repeat(values["repeat"], where.get("repeat", at))
                    if rbad is not None:
                        rep_problems.append(rbad)
                del values["repeat"]
            elif row is not None:
                repeat = row.repeat
            if row is not None:
                columns = dict(row.columns or {})
            else:
                columns = {k: value_text(v) for k, v in values.items()}
                columns.update(notes)
            yield RawJob(
                at,
                values,
                columns,
                origins=where,
                repeat=repeat,
                header=row.header if row is not None else None,
                keyed=row is not None,
                shared=row is None,
                problems=rep_problems or None,
            )

    def unused(self) -> Iterator[Problem]:
        """Defaults and matrix keys that no job took: almost always a misspelt field."""
        for part, keys, at in (
            ("defaults", self.defaults, self.default_at),
            ("matrix", self.matrix, self.matrix_at),
        ):
            for key in keys:
                if key in self.used or key in RESERVED or key == "prompt":
                    continue
                guess = close_match(key, self.fields_seen)
                hint = (
                    f"did you mean {guess!r}?"
                    if guess
                    else (
                        "no job's model takes it"
                        + ("; nor does any job use {" + key + "}" if part == "matrix" else "")
                    )
                )
                yield Problem(
                    at[key],
                    f"{part}.{key}",
                    "a field of a job's model"
                    + (" or a {placeholder} a job uses" if part == "matrix" else ""),
                    f"{key!r}, which no job uses",
                    hint,
                )


def read_yaml(
    path: Path, display: str, *, catalog: Catalog, default_model: str | None
) -> Iterator[RawJob | Problem]:
    """Stream the jobs of a YAML (or JSON) manifest."""
    return _Reader(path, display, catalog, default_model).read()
