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

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yaml.nodes import Node, SequenceNode

from liangxin_batch.core._records import (
    Problem,
    RawJob,
    SourceRef,
    close_match,
    got_text,
    value_text,
)
from liangxin_batch.manifest._expand import Expander, Located
from liangxin_batch.manifest._guards import has_name_control
from liangxin_batch.manifest._read import (
    NOTE_PREFIX,
    RESERVED,
    TABULAR_SUFFIXES,
    CellRow,
    decode_problem,
    read_tabular,
)
from liangxin_batch.manifest._yaml_doc import duplicate_keys, line_of, load_document, pairs_of

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog

__all__ = ["read_yaml"]

TOP_KEYS = ("defaults", "vars", "matrix", "jobs", "jobs_from", "repeat")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Reader(Expander):
    """One YAML manifest: its parts, where each was written, and what the jobs used."""

    def __init__(
        self,
        path: Path,
        display: str,
        catalog: Catalog,
        default_model: str | None,
        *,
        allow_outside: bool = False,
    ) -> None:
        super().__init__(catalog, default_model)
        self.path = path
        self.display = display
        self.allow_outside = allow_outside

    def at(self, node: Node | None, column: str | None = None, fallback: int = 1) -> SourceRef:
        return SourceRef(self.display, line_of(node) if node is not None else fallback, column)

    # ---- parts ----------------------------------------------------------------------------

    def job_values(
        self, data: Mapping[Any, Any], node: Node | None, problems: list[Problem]
    ) -> tuple[dict[str, Any], dict[str, SourceRef], dict[str, str]]:
        """A job's (or the defaults') keys, with `input:` flattened; notes kept apart."""
        pairs = pairs_of(node)
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
                ipairs = pairs_of(inode)
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
    ) -> dict[str, list[Located]]:
        """`vars:` / `matrix:`: name -> located values."""
        out: dict[str, list[Located]] = {}
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
        pairs = pairs_of(node)
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
        loaded = load_document(text, self.display, one_line_ok=self.path.suffix.lower() == ".json")
        if isinstance(loaded, Problem):
            yield loaded
            return
        node, data = loaded
        if node is not None:
            yield from duplicate_keys(node, self.display)
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
                SourceRef(self.display, line_of(node)),
                None,
                "a mapping with jobs: (or a list of jobs)",
                got_text(data),
            )
            return
        yield from self.document(data, node)

    def document(self, data: dict[Any, Any], node: Node) -> Iterator[RawJob | Problem]:
        problems: list[Problem] = []
        pairs = pairs_of(node)
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
        matrix_pairs = pairs_of(part("matrix")[2])
        self.matrix_at = {k: self.at(matrix_pairs.get(k, (None,))[0], k) for k in self.matrix}
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
            if has_name_control(name):
                yield Problem(
                    at, "jobs_from", "a file name without control characters", got_text(name)
                )
                continue
            target = self.path.parent / name
            display = os.path.join(os.path.dirname(self.display), name)
            if not self.allow_outside and not _inside(target, self.path.parent):
                # `../`, an absolute path or a symlink out of the folder: a manifest from
                # elsewhere must not make us read (and echo) any file on the machine.
                yield Problem(
                    at,
                    "jobs_from",
                    "a file in the manifest's folder or below",
                    got_text(name),
                    "move the file next to the manifest, or pass --allow-outside if you mean it",
                )
                continue
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
            for item in read_tabular(target, display):
                if isinstance(item, Problem):
                    yield item
                    continue
                row = item.raw() if isinstance(item, CellRow) else item
                yield from self.expand(row.values, {}, {}, row.source, row.problems, row=row)


def read_yaml(
    path: Path,
    display: str,
    *,
    catalog: Catalog,
    default_model: str | None,
    allow_outside: bool = False,
) -> Iterator[RawJob | Problem]:
    """Stream the jobs of a YAML (or JSON) manifest. `jobs_from` files must lie in the
    manifest's folder or below (symlinks resolved) unless `allow_outside`."""
    return _Reader(path, display, catalog, default_model, allow_outside=allow_outside).read()


def _inside(target: Path, folder: Path) -> bool:
    try:
        return target.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False
