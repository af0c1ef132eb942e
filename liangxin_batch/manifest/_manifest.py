"""Manifests: CSV/TSV/YAML/JSON/JSONL (and Excel/Parquet) -> a stream of validated jobs.

`iter_jobs` streams `Job | Problem` in manifest order, holding one row at a time (plus an
8-byte digest per job id for duplicate detection), so a 1,000,000-row CSV validates in
bounded memory. Every problem is located (`file:line [field]`) and says what was expected,
what was given and, where it can, what to do. Problems that stand for many jobs (a column
the model does not take, a bad default shared by every expanded job) are reported once,
with a count, after the jobs.

Job identity: the given `id` (file-name-safe), or `<model-slug>-<12 hex of the content
hash>`, so re-reading the same manifest yields the same ids; `repeat: N` makes copies
`<id>-r1` ... `<id>-rN`. Ids are compared ignoring case, since they name files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liangxin_batch.catalog._catalog import estimate_credits, price_inputs
from liangxin_batch.core._local_files import bytes_text
from liangxin_batch.core._records import Job, Problem, SourceRef, got_text, model_slug
from liangxin_batch.errors import ConfigError, ManifestError
from liangxin_batch.manifest._build import SUFFIXES, JobBuilder
from liangxin_batch.manifest._local_inputs import FileStamp
from liangxin_batch.manifest._read import object_record

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog, ModelSpec

__all__ = [
    "SUFFIXES",
    "Job",
    "Problem",
    "SourceRef",
    "ValidationReport",
    "iter_jobs",
    "jobs_from_records",
    "load_jobs",
    "local_files_text",
    "model_slug",
    "validate_manifest",
]


class JobTally:
    """Jobs, estimated credits and the first job of each model, in first-seen order."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.jobs = 0
        self.per_model: dict[str, int] = {}
        self.credits: dict[str, float] = {}
        self.examples: dict[str, Job] = {}
        # One estimate per model and distinct values of the fields its price reads.
        self._price_fields: dict[str, tuple[str, ...]] = {}
        self._prices: dict[tuple[Any, ...], float] = {}

    def add(self, job: Job) -> None:
        """Count one job; ConfigError if its model is not in the catalog."""
        spec = self.catalog.get(job.model)
        if spec is None:
            raise ConfigError(f"job {job.job_id}: model {job.model!r} is not in the catalog")
        if job.model not in self.per_model:
            self.per_model[job.model] = 0
            self.credits[job.model] = 0.0
            self.examples[job.model] = job
        self.count(spec, job.input)

    def count(self, spec: ModelSpec, data: Mapping[str, Any], times: int = 1) -> None:
        """Count `times` valid inputs (alike in what their price reads) of a model already
        added once."""
        model = spec.id
        self.jobs += times
        self.per_model[model] += times
        names = self._price_fields.get(model)
        if names is None:
            names = self._price_fields[model] = price_inputs(spec)
        key = (model, *[data.get(name) for name in names]) if names else (model,)
        try:
            credits = self._prices.get(key)
        except TypeError:  # a list or object value: no key, no memo
            credits = None
            key = ()
        if credits is None:
            credits = estimate_credits(spec, data)
            if key and len(self._prices) < 10_000:
                self._prices[key] = credits
        self.credits[model] += credits * times


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """The outcome of checking a whole manifest (counts cover valid jobs only)."""

    path: str
    jobs: int
    per_model: Mapping[str, int]
    credits: Mapping[str, float]  # estimated credits per model
    problems: tuple[Problem, ...]  # at most max_problems, collapsed ones first
    total_problems: int
    duplicates: int = 0  # duplicate ids / identical jobs without ids
    repeated: int = 0  # extra copies made by `repeat`
    examples: Mapping[str, Job] = field(default_factory=dict)  # first job of each model
    #: Valid, but probably not meant (an image URL on example.com): the first 50.
    warnings: tuple[Problem, ...] = ()
    total_warnings: int = 0
    #: Distinct local input files (by content) of the valid jobs, and their total bytes:
    #: what a run would upload.
    local_files: int = 0
    local_bytes: int = 0
    #: Every local file read, by absolute path: its `file_stamp` as it was hashed (a
    #: resumed run compares them to know whether the manifest is unchanged).
    local_stats: Mapping[str, FileStamp] = field(default_factory=dict)

    def warning_lines(self) -> list[str]:
        """`warning: FILE:LINE [field] ...` per warning, and how many more there were."""
        lines = [f"warning: {w.format()}" for w in self.warnings]
        if self.total_warnings > len(self.warnings):
            lines.append(f"warning: ... and {self.total_warnings - len(self.warnings)} more")
        return lines

    @property
    def ok(self) -> bool:
        return self.total_problems == 0

    @property
    def total_credits(self) -> float:
        return sum(self.credits.values())

    def summary(self) -> str:
        """'OK: 12 jobs (z-image: 8, nano-banana-pro: 4)'."""
        parts = ", ".join(f"{m}: {n:,}" for m, n in self.per_model.items())
        text = f"OK: {self.jobs:,} jobs ({parts})" if parts else f"OK: {self.jobs:,} jobs"
        if self.repeated:
            text += f"; {self.repeated:,} of them are repeats"
        local = local_files_text(self.local_files, self.local_bytes)
        return f"{text}\n{local}" if local else text

    def raise_for_problems(self) -> None:
        if self.total_problems:
            raise ManifestError(self.problems, total=self.total_problems)


def local_files_text(files: int, size: int) -> str | None:
    """'20 local files to upload (31.4 MB)', or None when there are none."""
    if not files:
        return None
    noun = "local file" if files == 1 else "local files"
    return f"{files:,} {noun} to upload ({bytes_text(size)})"


def iter_jobs(
    path: Path,
    *,
    catalog: Catalog,
    default_model: str | None = None,
    allow_outside: bool = False,
) -> Iterator[Job | Problem]:
    """Stream the manifest's jobs and problems in order (collapsed problems come last).

    Raises ConfigError when the file is missing or its format unknown; everything wrong
    inside the file is a `Problem`.
    """
    return JobBuilder(catalog, default_model, allow_outside=allow_outside).run(Path(path))


def validate_manifest(
    path: Path | str,
    *,
    catalog: Catalog | None = None,
    default_model: str | None = None,
    max_problems: int = 50,
    allow_outside: bool = False,
    keep: Callable[[Job], None] | None = None,
) -> ValidationReport:
    """Check every job; count jobs and credits per model; keep up to `max_problems` problems.

    `allow_outside`: `jobs_from` may name files outside the manifest's folder. `keep` is
    given every valid job as it is built (a run spools them: the manifest is read once).
    Without a `catalog`, the built-in one."""
    if catalog is None:
        from liangxin_batch.catalog._catalog import default_catalog

        catalog = default_catalog()
    tally = JobTally(catalog)
    builder = JobBuilder(
        catalog,
        default_model,
        allow_outside=allow_outside,
        counter=tally if keep is None else None,  # nobody keeps the jobs: count them
    )
    regular: list[Problem] = []
    collapsed: list[Problem] = []
    for item in builder.run(Path(path)):
        if isinstance(item, Job):
            tally.add(item)
            if keep is not None:
                keep(item)
        elif item.count > 1:
            if len(collapsed) < max_problems:
                collapsed.append(item)
        elif len(regular) < max_problems:
            regular.append(item)
    shown = (collapsed + regular)[:max_problems]
    order = {name: i for i, name in enumerate(dict.fromkeys(p.source.file for p in shown))}
    shown.sort(key=lambda p: (order[p.source.file], p.source.line))
    return ValidationReport(
        path=str(path),
        jobs=tally.jobs,
        per_model=tally.per_model,
        credits=tally.credits,
        problems=tuple(shown),
        total_problems=builder.problems,
        duplicates=builder.duplicates,
        warnings=tuple(builder.warnings),
        total_warnings=builder.warning_count,
        repeated=builder.repeated,
        examples=tally.examples,
        local_files=len(builder.local_sizes),
        local_bytes=sum(builder.local_sizes.values()),
        local_stats=dict(builder.local.stats),
    )


def load_jobs(
    path: Path, *, catalog: Catalog, default_model: str | None = None, max_problems: int = 50
) -> list[Job]:
    """All jobs of a valid manifest; ManifestError listing the problems otherwise."""
    return _collect(iter_jobs(path, catalog=catalog, default_model=default_model), max_problems)


def jobs_from_records(
    records: Iterable[Mapping[str, Any]],
    *,
    catalog: Catalog,
    default_model: str | None = None,
    name: str = "records",
    max_problems: int = 50,
) -> list[Job]:
    """Jobs from in-memory rows (dicts with the keys of a CSV row; e.g. DataFrame records).

    Problems are located as `records:N` (N = 1-based row); ManifestError lists them.
    """
    raw = (
        object_record(dict(row), SourceRef(name, i))
        if isinstance(row, Mapping)
        else Problem(SourceRef(name, i), None, "a mapping of column -> value", got_text(row))
        for i, row in enumerate(records, start=1)
    )
    return _collect(JobBuilder(catalog, default_model).run_records(raw, name), max_problems)


def _collect(items: Iterable[Job | Problem], max_problems: int) -> list[Job]:
    """The jobs; ManifestError with the first `max_problems` problems if there are any."""
    jobs: list[Job] = []
    problems: list[Problem] = []
    total = 0
    for item in items:
        if isinstance(item, Job):
            jobs.append(item)
        else:
            total += 1
            if len(problems) < max_problems:
                problems.append(item)
    if total:
        raise ManifestError(problems, total=total)
    return jobs
