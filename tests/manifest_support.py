"""Helpers for the manifest tests: write a manifest, read it, find problems."""

from __future__ import annotations

from pathlib import Path

from liangxin_batch.catalog._catalog import Catalog, default_catalog
from liangxin_batch.manifest._manifest import Job, Problem, iter_jobs

CATALOG: Catalog = default_catalog()


def write(tmp: Path, name: str, text: str | bytes) -> Path:
    path = tmp / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        # newline="" keeps the test's own line ends (CRLF tests write "\r\n" themselves).
        with path.open("w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    return path


def read(path: Path, default_model: str | None = None) -> tuple[list[Job], list[Problem]]:
    jobs: list[Job] = []
    problems: list[Problem] = []
    for item in iter_jobs(path, catalog=CATALOG, default_model=default_model):
        if isinstance(item, Job):
            jobs.append(item)
        else:
            problems.append(item)
    return jobs, problems


def only_problem(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [p.format() for p in problems]
    return problems[0]


def where(p: Problem) -> tuple[str, int, str | None]:
    """(file name, line, field) of a problem."""
    return Path(p.source.file).name, p.source.line, p.field
