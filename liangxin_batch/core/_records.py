"""The manifest's value types (re-exported by `_manifest`), plus the readers' raw record.

Kept apart so the format readers and the job builder can share them without import cycles.
"""

from __future__ import annotations

import difflib
import json
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._local_files import LocalFile

__all__ = [
    "GOT_MAX",
    "Job",
    "Problem",
    "RawJob",
    "SourceRef",
    "close_match",
    "got_text",
    "model_slug",
    "slug_id",
    "value_text",
]

GOT_MAX = 60
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def slug_id(text: str) -> str:
    """Text made safe for an id or a file name: runs of other characters become '-'."""
    return _SLUG.sub("-", text).strip("-.")


def model_slug(model: str) -> str:
    """A file-name-safe form of a model id: 'seedream/4.5-edit' -> 'seedream-4.5-edit'.

    The same text the output layout uses for the model's folder, so a derived job id
    starts like the folder it lands in.
    """
    return slug_id(model) or "model"


def got_text(value: Any) -> str:
    """What a problem says it got: repr, shortened."""
    # Cut before repr: a value can be megabytes (or an alias-shared list of thousands).
    if isinstance(value, str):
        text = repr(str(value[: GOT_MAX * 2]))
    elif isinstance(value, list | tuple | dict | set):
        text = reprlib.repr(value)
    else:
        text = repr(value)
    return text if len(text) <= GOT_MAX else text[: GOT_MAX - 3] + "..."


def value_text(value: Any) -> str:
    """A value as a person would write it in a cell (results.csv, templates)."""
    if isinstance(value, str):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def close_match(name: str, choices: Iterable[str]) -> str | None:
    """The choice a misspelt name most likely meant (ignoring case)."""
    by_lower = {c.lower(): c for c in choices}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    hits = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[hits[0]] if hits else None


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where something was written: file, physical line (CSV: the row's first line), column."""

    file: str
    line: int
    column: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Job:
    """One task to create: a validated, typed input for one model."""

    job_id: str  # the given id, or derived from content; file-name-safe
    model: str  # catalog id (aliases resolved)
    input: Mapping[str, Any]  # typed and validated: createTask.input
    columns: Mapping[str, str]  # the row as written (for results.csv)
    index: int  # 0-based order in the manifest
    content_hash: str  # sha256 over model + canonical input: detects changed jobs on resume
    source: SourceRef
    # Local input files, named in `input` by file tokens (core/_local_files.py).
    local_files: tuple[LocalFile, ...] = ()


@dataclass(frozen=True, slots=True)
class Problem:
    """One located manifest problem.

    `count` > 1 when one problem stands for many jobs (a column the model does not take in
    every row, a bad default shared by every expanded job); `source` is the first place.
    """

    source: SourceRef
    field: str | None
    expected: str
    got: str
    suggestion: str | None = None
    count: int = 1

    def format(self) -> str:
        """`prompts.csv:48213 [aspect_ratio] expected one of 1:1, 16:9; got '16-9'; ...`."""
        text = f"{self.source}"
        if self.field:
            # A header cell may hold anything; keep one problem on one line.
            shown = self.field if self.field.isprintable() else repr(self.field)
            if len(shown) > GOT_MAX:  # a header cell can be any length
                shown = shown[: GOT_MAX - 3] + "..."
            text += f" [{shown}]"
        text += f" expected {self.expected}; got {self.got}"
        if self.suggestion:
            text += f"; {self.suggestion}"
        if self.count > 1:
            text += f" (affects {self.count:,} jobs; the first is shown)"
        return text

    def __str__(self) -> str:
        return self.format()


@dataclass(slots=True)
class RawJob:
    """A job as a reader saw it, before conversion and validation (internal).

    `values` holds reserved keys (id, model) and input fields: text (CSV cells, YAML plain
    scalars) to be converted by field type, or typed values (JSON, quoted YAML, lists).
    """

    source: SourceRef
    values: dict[str, Any]
    columns: dict[str, str] | None = None  # None: derived from values
    origins: Mapping[str, SourceRef] | None = None  # where each value was written (YAML)
    header: frozenset[str] | None = None  # CSV-like files: a missing column is one problem
    keyed: bool = False  # one job per row/line: an unknown key is one problem per key
    repeat: int = 1
    shared: bool = False  # YAML expansions share lines: identical problems collapse
    problems: list[Problem] | None = None
