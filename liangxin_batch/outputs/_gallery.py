"""`DIR/report.html`: a self-contained gallery of a run (inline CSS and JS, no network).

A summary band (counts by status, success rate, credits, wall time, per-model p50/p95
generation time), filters by model and status, and a card per manifest job: thumbnail
(Pillow, cached in `DIR/thumbs/`) or a playable `<video>`, job id, model, prompt,
parameters, and the error of jobs that did not succeed. A job given local input files
shows their paths as the manifest wrote them (never the file token or the temporary
upload URL) and small thumbnails of them beside its output (`_card_inputs`). Prompts
are user text: the jinja2 environment autoescapes everything.

Filters can be preset from the address: `report.html#status=failed,unknown&model=x`.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from liangxin_batch.core._states import BILLED_STATES, JobState
from liangxin_batch.outputs._card_inputs import CardInputs, InputImage
from liangxin_batch.outputs._jobs import as_lost, report_jobs
from liangxin_batch.outputs._lost import lost_jobs
from liangxin_batch.outputs._report import (
    RESULTS_CSV,
    generation_seconds,
    report_status,
)
from liangxin_batch.outputs._segments import write_results_by_segments
from liangxin_batch.outputs._thumbs import (
    IMAGE_EXT,
    MAX_THUMB_PIXELS,
    THUMBS_DIR,
    make_thumbs,
    thumb_name,
)
from liangxin_batch.state._status import removed_line
from liangxin_batch.state._store import ReportFile, ReportJob, SessionTimes, StateStore

__all__ = [
    "CREDITS_ROUND_UP_KEY",
    "REPORT_HTML",
    "write_report_html",
    "write_reports",
]

REPORT_HTML = "report.html"
#: State meta, set by each run: "1" when some model of the batch is billed in whole
#: credits per task, rounded up (the catalog says which).
CREDITS_ROUND_UP_KEY = "credits_round_up"
MAX_CARDS = 2000  # a browser stays quick; results.csv has every row
_VIDEO_EXT = frozenset({".mp4", ".mov", ".webm", ".mkv"})
_STATUS_ORDER = ("succeeded", "downloading", "failed", "download_failed", "timed_out", "unknown")
_PARAM_CHARS = 120
_GENERATED = BILLED_STATES  # the generation succeeded (files fetched or not)


@dataclass(frozen=True, slots=True)
class Media:
    kind: str  # "image" | "video" | "file"
    href: str  # URL relative to report.html
    thumb: str | None  # thumbnail URL, images only (None: no preview could be made)


@dataclass(frozen=True, slots=True)
class Card:
    job_id: str
    model: str
    status: str
    prompt: str
    params: tuple[tuple[str, str], ...]
    error: str
    media: tuple[Media, ...]
    seconds: str
    credits: str
    inputs: tuple[InputImage, ...] = ()  # its local input images (paths as written)


@dataclass(frozen=True, slots=True)
class ModelStats:
    model: str
    jobs: int
    succeeded: int
    p50: str
    p95: str


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _prompt(job: ReportJob, inputs: Mapping[str, Any]) -> str:
    prompt = inputs.get("prompt")
    if isinstance(prompt, str) and prompt:
        return prompt
    shots = inputs.get("multi_prompt")
    if isinstance(shots, list) and shots and isinstance(shots[0], Mapping):
        return " | ".join(str(s.get("prompt", "")) for s in shots if isinstance(s, Mapping))
    return str(job.columns.get("prompt", ""))


def _params(inputs: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in inputs.items():
        if key in ("prompt", "multi_prompt"):
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append((key, text if len(text) <= _PARAM_CHARS else text[: _PARAM_CHARS - 1] + "…"))
    return tuple(out)


def _media(job: ReportJob, kept: Sequence[ReportFile], out_dir: Path) -> list[tuple[Media, Path]]:
    """Media of a card (`kept`: the job's current files), each with the file it shows
    (thumbnails are made afterwards)."""
    out = []
    for f in kept:
        assert f.path is not None
        suffix = PurePosixPath(f.path).suffix.lower()
        kind = "image" if suffix in IMAGE_EXT else "video" if suffix in _VIDEO_EXT else "file"
        thumb = f"{THUMBS_DIR}/{thumb_name(job.job_id, f.n)}" if kind == "image" else None
        out.append((Media(kind, f.path, thumb), out_dir / f.path))
    return out


def _render(context: Mapping[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("liangxin_batch.outputs", "templates"),
        autoescape=True,  # every value is user text until proven otherwise
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(context)


class _Tally:
    """The summary band, from what the state keeps (no walk of the jobs): counts and
    credits from its tallies, p50/p95 from an index of generation times.

    Statuses are the state's, in report terms. A `done` job whose file is gone counts as
    `download_failed` only where files were checked (`lost`: the `report` command); at
    the end of a run the summary counts what the state records (the run verified every
    file it fetched, and the next run checks them again), while the cards always show
    the files as they are."""

    def __init__(self, store: StateStore, lost: Mapping[str, int] | None = None) -> None:
        self.jobs_by: dict[tuple[str, str], int] = {}  # (model, status) -> jobs
        charged = estimated = 0  # millionths, as the tallies keep them
        for model, state, n, credits, guessed in store.report_tallies():
            key = (model, report_status(JobState(state)))
            self.jobs_by[key] = self.jobs_by.get(key, 0) + n
            charged += credits  # every charge recorded, whatever the state
            if JobState(state) in _GENERATED:  # an estimate only for what was generated
                estimated += guessed
        for model, n in (lost or {}).items():  # shown as download_failed, still billed
            done = (model, report_status(JobState.DONE))
            self.jobs_by[done] = self.jobs_by.get(done, 0) - n
            failed = (model, report_status(JobState.DOWNLOAD_FAILED))
            self.jobs_by[failed] = self.jobs_by.get(failed, 0) + n
        self.credits = charged / 1_000_000
        self.credits_estimated = estimated / 1_000_000
        models = {m for m, _ in self.jobs_by}
        self.p50: dict[str, float | None] = {}
        self.p95: dict[str, float | None] = {}
        for m in models:
            self.p50[m], self.p95[m] = store.generation_percentiles(m, (50, 95))
        self._store = store

    def span(self) -> float | None:
        """First submission to last result, when both are known."""
        first, last = self._store.report_span()
        return last - first if first is not None and last is not None and last >= first else None

    def context(
        self, wall_seconds: float | None, sessions: SessionTimes | None = None
    ) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        jobs: Counter[str] = Counter()
        done: Counter[str] = Counter()
        for (model, status), n in self.jobs_by.items():
            counts[status] += n
            jobs[model] += n
            done[model] += n if status == "succeeded" else 0
        total = sum(counts.values())
        wall, label, wall_note = wall_seconds, "wall time", ""
        if sessions is not None and sessions.count:  # the batch's own record of its runs
            wall, label = sessions.total, "batch time"
            wall_note = (
                f"{sessions.count} sessions, last {_duration(sessions.last)}"
                if sessions.count > 1
                else "one session"
            )
        elif wall_seconds is None:  # an old state, without a record of its sessions
            wall, label = self.span(), "first submit → last result"
        return {
            "total": total,
            "succeeded": counts["succeeded"],
            "rate": f"{100 * counts['succeeded'] / total:.1f}%" if total else "–",
            "credits": f"{self.credits + self.credits_estimated:,.1f}",
            "credits_estimated": f"{self.credits_estimated:,.1f}" if self.credits_estimated else "",
            "wall": _duration(wall),
            "wall_label": label,
            "wall_note": wall_note,
            "statuses": [(s, counts[s]) for s in sorted(counts, key=_rank)],
            "models": [
                ModelStats(
                    model=m,
                    jobs=jobs[m],
                    succeeded=done[m],
                    p50=_duration(self.p50[m]),
                    p95=_duration(self.p95[m]),
                )
                for m in sorted(jobs)
            ],
        }


def _card(
    job: ReportJob,
    status: str,
    seconds: float | None,
    media: Sequence[Media],
    local: CardInputs | None = None,
) -> Card:
    error = ": ".join(x for x in (job.error_code, job.error_message) if x)
    inputs = json.loads(job.input_json)  # only here: the cards are capped, the jobs not
    images: tuple[InputImage, ...] = ()
    if local is not None:  # file tokens shown as the paths written in the manifest
        shown = local.resolve(job.input_json, inputs, error)
        inputs, images, error = shown.inputs, shown.images, shown.error
    return Card(
        job_id=job.job_id,
        model=job.model,
        status=status,
        prompt=_prompt(job, inputs),
        params=_params(inputs),
        error="" if status == "succeeded" else error,
        media=tuple(media),
        seconds=_duration(seconds) if seconds is not None else "",
        credits=f"{job.credits:.10g}" if job.credits else "",
        inputs=images,
    )


class _Gallery:
    """report.html: the summary from the state's tallies, the cards of the first jobs."""

    def __init__(self, out_dir: Path, max_cards: int) -> None:
        self.out_dir = out_dir
        self.max_cards = max_cards
        self.cards: list[Card] = []
        self.thumbs: dict[str, Path] = {}  # thumbnail path relative to DIR -> its image
        self.local: CardInputs | None = None  # the cards' local inputs, if the state has any

    def add(self, job: ReportJob, kept: list[ReportFile]) -> None:
        """One job as the report shows it (`as_lost`) with its current files."""
        status = report_status(job.state)
        media = _media(job, kept, self.out_dir)
        self.thumbs.update((m.thumb, src) for m, src in media if m.thumb)
        shown = [m for m, _ in media]
        self.cards.append(_card(job, status, generation_seconds(job), shown, self.local))

    def add_cards(self, store: StateStore) -> None:
        """The first `max_cards` jobs in manifest order, their files checked: a walk of
        those jobs only."""
        local = CardInputs(store)
        self.local = local if local.enabled else None
        jobs = report_jobs(store, out_dir=self.out_dir)  # its folder descriptor is closed
        for job, kept, lost in itertools.islice(jobs, self.max_cards):  # when it is dropped
            self.add(as_lost(job, lost), kept)

    def write(
        self,
        tally: _Tally,
        wall_seconds: float | None,
        title: str | None,
        max_pixels: int,
        sessions: SessionTimes | None = None,
        credit_notes: Sequence[str] = (),
    ) -> Path:
        out_dir = self.out_dir
        made = make_thumbs(self.thumbs, out_dir, max_pixels)
        if self.local is not None:
            made |= self.local.make_thumbs(out_dir, max_pixels)
        summary = tally.context(wall_seconds, sessions)
        context = {
            **summary,
            "credit_notes": credit_notes,
            "title": title or f"liangxin-batch · {out_dir.resolve().name}",
            "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cards": [_with_thumbs(c, made) for c in self.cards],
            "capped": summary["total"] > len(self.cards),
        }
        target = out_dir / REPORT_HTML
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(_render(context), encoding="utf-8")
        os.replace(tmp, target)
        return target


def write_report_html(
    out_dir: Path,
    store: StateStore,
    *,
    wall_seconds: float | None = None,
    max_cards: int = MAX_CARDS,
    title: str | None = None,
    max_pixels: int = MAX_THUMB_PIXELS,
    lost: Mapping[str, int] | None = None,
) -> Path:
    """Write `DIR/report.html` (and thumbnails) from the state alone; returns its path.

    No walk of every job: the summary comes from the state's tallies and an index, the
    cards from the first `max_cards` jobs. `lost`: done jobs per model whose files were
    found gone (outputs/_lost.py), counted as download_failed; None: not checked."""
    gallery = _Gallery(out_dir, max_cards)
    gallery.add_cards(store)
    return gallery.write(
        _Tally(store, lost),
        wall_seconds,
        title,
        max_pixels,
        store.session_times(),
        credit_notes(store),
    )


def write_reports(
    out_dir: Path,
    store: StateStore,
    *,
    check_files: bool = False,
    csv_safe: bool = False,
    wall_seconds: float | None = None,
    max_cards: int = MAX_CARDS,
    title: str | None = None,
    max_pixels: int = MAX_THUMB_PIXELS,
) -> tuple[Path, Path]:
    """results.csv (as `write_results_csv` writes it, from its cached segments: only
    those changed are made again) and `write_report_html`; returns both paths.
    `check_files`: a done job whose file is gone is download_failed in both (the summary
    included)."""
    lost = lost_jobs(store, out_dir) if check_files else None
    check = () if lost is None else lost.positions
    write_results_by_segments(out_dir, store, csv_safe=csv_safe, check=check)
    html = write_report_html(
        out_dir,
        store,
        wall_seconds=wall_seconds,
        max_cards=max_cards,
        title=title,
        max_pixels=max_pixels,
        lost=None if lost is None else lost.by_model,
    )
    return out_dir / RESULTS_CSV, html


def credit_notes(store: StateStore) -> list[str]:
    """What the credits tile must say to be read right: how the service bills, and the
    jobs that left the manifest (their credits kept apart, as everywhere)."""
    notes = []
    if store.get_meta(CREDITS_ROUND_UP_KEY) == "1":
        notes.append("each task rounded up to whole credits, as the service bills")
    removed = store.removed_count()
    if removed:
        spent = store.credits(in_manifest=False)
        notes.append(removed_line(removed, spent.total))
    return notes


def _rank(status: str) -> tuple[int, str]:
    order = _STATUS_ORDER.index(status) if status in _STATUS_ORDER else len(_STATUS_ORDER)
    return order, status


def _with_thumbs(card: Card, made: set[str]) -> Card:
    """Links made relative to report.html; an unreadable image shows a placeholder."""
    media = tuple(
        Media(m.kind, quote(m.href), quote(m.thumb) if m.thumb in made else None)
        for m in card.media
    )
    inputs = tuple(
        InputImage(i.written, quote(i.thumb) if i.thumb in made else None) for i in card.inputs
    )
    return replace(card, media=media, inputs=inputs)
