"""`DIR/report.html`: one page of a whole run, opened from the file system (no server,
no network): a summary band (counts by status, success rate, credits, wall time,
per-model p50/p95 generation time) rendered here from the state's tallies, and the
browsing app (a virtual-scrolled grid, filters, search, sort, a compare view, a
lightbox) that loads its data from `DIR/report/data/*.js` (outputs/_report_data.py).

The page's script is `templates/report_*.js` (APP_PARTS, by role), inlined in order
inside one function whose variables they share; it builds every element
from data with textContent (user text is never markup), and the jinja2 environment
autoescapes the rest. Filters and the open job live in the address
(`report.html#status=failed,unknown&model=x`, `#job=ID`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from liangxin_batch.core._states import BILLED_STATES, FINAL_STATES, REPORT_LABELS, JobState
from liangxin_batch.outputs._atomic import write_atomic
from liangxin_batch.outputs._lost import lost_jobs
from liangxin_batch.outputs._report import RESULTS_CSV, report_status
from liangxin_batch.outputs._report_data import DATA_DIR, ReportData, Step
from liangxin_batch.outputs._segments import write_results_by_segments
from liangxin_batch.outputs._thumbs import MAX_THUMB_PIXELS
from liangxin_batch.state._status import removed_line
from liangxin_batch.state._store import SessionTimes, StateStore

__all__ = [
    "CREDITS_ROUND_UP_KEY",
    "REPORT_HTML",
    "LiveReport",
    "read_summary",
    "write_report_html",
    "write_reports",
]

REPORT_HTML = "report.html"
#: State meta, set by each run: "1" when some model of the batch is billed in whole
#: credits per task, rounded up (the catalog says which).
CREDITS_ROUND_UP_KEY = "credits_round_up"
#: The report's statuses a job ends in (a timed-out task may still be resumed).
_FINISHED = frozenset(REPORT_LABELS[s] for s in FINAL_STATES)
_STATUS_ORDER = ("succeeded", "downloading", "failed", "download_failed", "timed_out", "unknown")
_GENERATED = BILLED_STATES  # the generation succeeded (files fetched or not)


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


@cache  # compiled once per process (a run refreshes the page every --report-every)
def _template() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("liangxin_batch.outputs", "templates"),
        autoescape=True,  # every value is user text until proven otherwise
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2")


def _render(context: Mapping[str, Any]) -> str:
    return str(_template().render(context))


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
            "rate": _percent(counts["succeeded"], total),
            # While the batch runs: of the jobs that finished (÷ all would read low).
            "rate_finished": _percent(counts["succeeded"], sum(counts[s] for s in _FINISHED)),
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


#: The page's script by role, in the order it is inlined: the state, helpers and wiring
#: first; the rest declare functions (and a few variables of their own) in turn.
APP_PARTS = (
    "report_app.js",
    "report_data.js",
    "report_filters.js",
    "report_grid.js",
    "report_compare.js",
    "report_lightbox.js",
)


@cache
def _app_js() -> str:
    """The page's script (inlined: report.html stays one file beside its data): the
    parts in one function, so they share its variables and leave no globals but LX."""
    folder = resources.files("liangxin_batch.outputs").joinpath("templates")
    parts = [folder.joinpath(name).read_text("utf-8") for name in APP_PARTS]
    script = '(function () {\n  "use strict";\n' + "\n".join(parts) + "})();\n"
    assert "</script" not in script.lower()
    return script


def _write_html(
    data: ReportData,
    summary: Mapping[str, Any],
    title: str | None,
    credit_notes: Sequence[str],
    running: bool,
) -> Path:
    import markupsafe

    now = datetime.now(UTC)
    context = {
        **summary,
        "credit_notes": credit_notes,
        "title": title or f"liangxin-batch · {data.out_dir.resolve().name}",
        "generated": now.strftime("%Y-%m-%d %H:%M UTC"),
        # A page written while the batch ran says when: one a kill left behind is not
        # read as live.
        "as_of": now.strftime("%H:%M UTC"),
        "meta_src": f"{DATA_DIR}/{data.meta_name}",
        "running": running,
        "app_js": markupsafe.Markup(_app_js()),
    }
    target = data.out_dir / REPORT_HTML
    write_atomic(target, _render(context).encode("utf-8"))
    return target


def write_report_html(
    out_dir: Path,
    store: StateStore,
    *,
    wall_seconds: float | None = None,
    title: str | None = None,
    max_pixels: int = MAX_THUMB_PIXELS,
    lost: Mapping[str, int] | None = None,
    lost_positions: set[int] | frozenset[int] = frozenset(),
    data: ReportData | None = None,
    running: bool = False,
) -> Path:
    """Write `DIR/report.html` and its data files from the state alone; returns its path.

    The summary comes from the state's tallies and an index (no walk of every job); the
    data files of the segments that changed since the last report are made again
    (`ReportData`; `data`: one kept between refreshes of a run). `lost`: done jobs per
    model whose files were found gone (outputs/_lost.py), counted as download_failed,
    `lost_positions` their places; None: not checked. `running`: the page says the
    batch was running as it was written."""
    if data is None:
        data = ReportData(out_dir, store, lost_positions=lost_positions, max_pixels=max_pixels)
    data.refresh()
    return _finish_html(data, store, wall_seconds, title, lost, running)


@dataclass(frozen=True, slots=True)
class Summary:
    """The summary band and the credits notes, from the state's tallies and indexes."""

    context: Mapping[str, Any]
    credit_notes: Sequence[str]


def read_summary(
    store: StateStore, wall_seconds: float | None = None, lost: Mapping[str, int] | None = None
) -> Summary:
    """What the summary band shows (a few index searches per model: a run reads it on a
    connection of its own in a worker thread, run/_live_report.py)."""
    context = _Tally(store, lost).context(wall_seconds, store.session_times())
    return Summary(context, credit_notes(store))


def _finish_html(
    data: ReportData,
    store: StateStore,
    wall_seconds: float | None,
    title: str | None,
    lost: Mapping[str, int] | None,
    running: bool,
    summary: Summary | None = None,
) -> Path:
    summary = summary or read_summary(store, wall_seconds, lost)
    html = _write_html(data, summary.context, title, summary.credit_notes, running)
    data.sweep()
    return html


class LiveReport:
    """report.html kept up to date while a run goes on: each `steps()` makes at most
    `max_segments` changed segments' data files, a few hundred jobs per step (the run
    hands control back to its event loop between steps), then the page itself."""

    def __init__(
        self,
        out_dir: Path,
        store: StateStore,
        *,
        max_pixels: int = MAX_THUMB_PIXELS,
        max_segments: int = 2,
    ) -> None:
        self.data = ReportData(out_dir, store, max_pixels=max_pixels)
        self.store = store
        self.max_segments = max_segments

    def steps(self, summary: Summary | None = None) -> Iterator[Step]:
        """`summary`: the band as read beforehand (None: read here)."""
        yield from self.data.steps(max_segments=self.max_segments)
        yield None
        _finish_html(self.data, self.store, None, None, None, True, summary)
        self.wrote = True

    wrote = False  # a refresh wrote report.html (saying the batch runs)

    def settle(self) -> None:
        """The run is over and its end wrote no report (a Ctrl-C on a big batch, nothing
        changed since the last one, an error): the last refreshed page, from its data
        files as they are, no longer says the batch runs (a summary and a page: no data
        files made)."""
        if self.wrote:
            _finish_html(self.data, self.store, None, None, None, False)


def write_reports(
    out_dir: Path,
    store: StateStore,
    *,
    check_files: bool = False,
    csv_safe: bool = False,
    wall_seconds: float | None = None,
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
        title=title,
        max_pixels=max_pixels,
        lost=None if lost is None else lost.by_model,
        lost_positions=frozenset(check),
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


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _rank(status: str) -> tuple[int, str]:
    order = _STATUS_ORDER.index(status) if status in _STATUS_ORDER else len(_STATUS_ORDER)
    return order, status
