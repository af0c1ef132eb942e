"""What a run would do: jobs and credits per model, the shortest duration, where files land.

Pure: works from a `ValidationReport` (one streaming pass over the manifest already
counted jobs and credits) or from any iterable of jobs; no network, no files.

The shortest duration is a lower bound from two limits:

- the create rate: N tasks at `limit` per `window` seconds take `(ceil(N/limit) - 1) *
  window` seconds to submit, and the last one still needs the slowest model's typical
  latency;
- concurrency: each task holds one of `max_in_flight` slots for its model's typical
  latency, so the run needs at least `sum(jobs x latency) / max_in_flight`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from liangxin_batch.core._rates import parse_rate
from liangxin_batch.errors import ConfigError, ManifestError
from liangxin_batch.manifest._manifest import (
    Job,
    JobTally,
    Problem,
    ValidationReport,
    local_files_text,
)
from liangxin_batch.outputs._layout import Layout

if TYPE_CHECKING:
    from liangxin_batch.catalog._catalog import Catalog, ModelSpec

__all__ = [
    "ModelPlan",
    "Plan",
    "check_budget",
    "format_duration",
    "format_plan",
    "make_plan",
    "parse_rate",
]


@dataclass(frozen=True, slots=True)
class ModelPlan:
    model: str
    name: str
    kind: str
    jobs: int
    credits: float
    usd: float | None
    typical_seconds: float
    example_output: str  # e.g. "out/outputs/z-image/z-image-1a2b3c4d5e6f.png"


@dataclass(frozen=True, slots=True)
class Plan:
    manifest: str
    jobs: int
    models: tuple[ModelPlan, ...]
    credits: float
    usd: float | None
    create_limit: int
    create_window: float
    max_in_flight: int
    submit_seconds: float  # creating every task at the create rate
    rate_seconds: float  # submit_seconds + the slowest model's typical latency
    concurrency_seconds: float  # sum(jobs x latency) / max_in_flight
    shortest_seconds: float  # a lower bound for the whole run: the larger of the two
    bound: str  # what sets it: "create rate", "latency of MODEL" or "concurrency"
    slowest_model: str | None
    out_dir: str
    round_up: bool = False  # some model's tasks are billed in whole credits, rounded up
    local_files: int = 0  # distinct local input files (by content): what would be uploaded
    local_bytes: int = 0


def _example_ext(spec: ModelSpec, example: Job | None) -> str:
    fmt = str(example.input.get("output_format", "")).lower() if example is not None else ""
    if fmt in ("jpg", "jpeg"):
        return ".jpg"
    if fmt in ("png", "webp"):
        return "." + fmt
    return ".mp4" if spec.kind == "video" else ".png"


def _tally(
    jobs: Iterable[Job | Problem], catalog: Catalog
) -> tuple[dict[str, int], dict[str, float], dict[str, Job], dict[str, int]]:
    tally = JobTally(catalog)
    problems: list[Problem] = []
    total = 0
    files: dict[str, int] = {}  # sha256 -> size
    for item in jobs:
        if isinstance(item, Problem):
            total += 1
            if len(problems) < 50:
                problems.append(item)
        else:
            tally.add(item)
            for f in item.local_files:
                files[f.sha256] = f.size
    if total:
        raise ManifestError(problems, total=total)
    return tally.per_model, tally.credits, tally.examples, files


def _bound(submit: float, slowest: ModelPlan | None, by_rate: float, by_slots: float) -> str:
    """What sets the shortest duration: the cap on tasks in flight, the time it takes to
    submit everything, or (a small batch) the slowest model's own latency."""
    if by_slots > by_rate:
        return "concurrency"
    if slowest is not None and slowest.typical_seconds > submit:
        return f"latency of {slowest.model}"
    return "create rate"


def make_plan(
    jobs_or_report: ValidationReport | Iterable[Job | Problem],
    catalog: Catalog,
    *,
    create_limit: int = 20,
    create_window: float = 10.0,
    max_in_flight: int = 100,
    out_dir: Path | str = "out",
    layout: str | None = None,
    manifest: str | None = None,
) -> Plan:
    """The plan for a valid manifest; ManifestError if the report or stream has problems."""
    if create_limit < 1 or create_window <= 0:
        raise ConfigError("the create rate must be at least 1 per a positive window")
    if max_in_flight < 1:
        raise ConfigError("--max-in-flight must be at least 1")
    if isinstance(jobs_or_report, ValidationReport):
        report = jobs_or_report
        report.raise_for_problems()
        counts: Mapping[str, int] = report.per_model
        credits: Mapping[str, float] = report.credits
        examples: Mapping[str, Job] = report.examples
        manifest = manifest or report.path
        local_files, local_bytes = report.local_files, report.local_bytes
    else:
        counts, credits, examples, files = _tally(jobs_or_report, catalog)
        local_files, local_bytes = len(files), sum(files.values())
    template = Layout.parse(layout)
    out = str(out_dir)
    usd_rate = catalog.credit_usd
    models: list[ModelPlan] = []
    round_up = False  # some model's tasks are billed in whole credits
    for model_id, n in counts.items():
        spec = catalog.get(model_id)
        if spec is None:
            raise ConfigError(f"model {model_id!r} is not in the catalog")
        round_up = round_up or bool(spec.price.round_up)
        example = examples.get(model_id)
        rel = template.relative_path(
            job_id=example.job_id if example is not None else "<job_id>",
            model=model_id,
            task_id=None,
            index=1,
            ext=_example_ext(spec, example),
            completed_at=0.0,
            columns=dict(example.columns) if example is not None else {},
        )
        c = credits.get(model_id, 0.0)
        models.append(
            ModelPlan(
                model=model_id,
                name=spec.name,
                kind=spec.kind,
                jobs=n,
                credits=c,
                usd=c * usd_rate if usd_rate else None,
                typical_seconds=spec.typical_seconds,
                example_output=f"{out.rstrip('/')}/{rel}",
            )
        )
    total_jobs = sum(counts.values())
    total_credits = sum(m.credits for m in models)
    submit = (math.ceil(total_jobs / create_limit) - 1) * create_window if total_jobs else 0.0
    slowest = max(models, key=lambda m: m.typical_seconds, default=None)
    by_rate = submit + (slowest.typical_seconds if slowest is not None else 0.0)
    by_slots = sum(m.jobs * m.typical_seconds for m in models) / max_in_flight
    return Plan(
        manifest=manifest or "",
        jobs=total_jobs,
        models=tuple(models),
        credits=total_credits,
        usd=total_credits * usd_rate if usd_rate else None,
        create_limit=create_limit,
        create_window=create_window,
        max_in_flight=max_in_flight,
        submit_seconds=submit,
        rate_seconds=by_rate,
        concurrency_seconds=by_slots,
        shortest_seconds=max(by_rate, by_slots),
        bound=_bound(submit, slowest, by_rate, by_slots),
        round_up=round_up,
        slowest_model=slowest.model if slowest is not None else None,
        out_dir=out,
        local_files=local_files,
        local_bytes=local_bytes,
    )


def check_budget(plan: Plan, max_credits: float | None) -> None:
    """ConfigError (exit 2) when the estimate exceeds `--max-credits`."""
    if max_credits is not None and plan.credits > max_credits:
        raise ConfigError(
            f"the estimate is {plan.credits:,.1f} credits, more than --max-credits "
            f"{max_credits:,.1f}; nothing was sent. Raise the cap or run a smaller manifest."
        )


def format_duration(seconds: float) -> str:
    """'2h 05m', '3m 20s', '45s'."""
    s = math.ceil(seconds)
    if s >= 86_400:
        return f"{s // 86_400}d {s % 86_400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def _money(usd: float | None) -> str:
    return f"  (~${usd:,.2f})" if usd is not None else ""


def format_plan(plan: Plan) -> str:
    """The plan as text for a terminal."""
    lines = [
        f"Plan for {plan.manifest}: {plan.jobs:,} jobs"
        if plan.manifest
        else f"Plan: {plan.jobs:,} jobs"
    ]
    width = max([len(m.model) for m in plan.models] + [5])
    lines.append("")
    lines.append(f"  {'model':<{width}}  {'jobs':>9}  {'credits':>12}")
    for m in plan.models:
        lines.append(f"  {m.model:<{width}}  {m.jobs:>9,}  {m.credits:>12,.1f}{_money(m.usd)}")
    lines.append(f"  {'total':<{width}}  {plan.jobs:>9,}  {plan.credits:>12,.1f}{_money(plan.usd)}")
    local = local_files_text(plan.local_files, plan.local_bytes)
    if local:
        lines += ["", local]
    rate = f"{plan.create_limit}/{plan.create_window:g}s"
    slowest = next((m for m in plan.models if m.model == plan.slowest_model), None)
    latency = (
        f", then {slowest.model} typically needs {format_duration(slowest.typical_seconds)}"
        if slowest is not None
        else ""
    )
    lines += [
        "",
        "Credits are estimated from the catalog's price rules"
        + (", each task rounded up to whole credits as the service bills" if plan.round_up else "")
        + "; the service's bill is final.",
        "",
        f"Shortest possible duration: {format_duration(plan.shortest_seconds)} "
        f"(set by the {plan.bound})",
        f"  create rate {rate}: submitting takes {format_duration(plan.submit_seconds)}"
        f"{latency} -> {format_duration(plan.rate_seconds)}",
        f"  at most {plan.max_in_flight} tasks in flight at the catalog's typical latencies"
        f" -> {format_duration(plan.concurrency_seconds)}",
        "",
        f"Outputs land in {plan.out_dir}/outputs/, e.g.:",
    ]
    lines += [f"  {m.example_output}" for m in plan.models]
    return "\n".join(lines)
