"""One segment of report.html's data: a compact index of its jobs (what the grid, the
filters, the search and the compare view read, loaded first) and the heavy rows (what
the lightbox shows, loaded one sub-shard at a time when a job is opened).

The index is column-oriented and dictionary-encoded, so a million jobs stay a few tens
of bytes each: per segment a list of its models, failure reasons and distinct prompts,
and per job small integers into them. A prompt is kept short in the index (`SHORT`
characters); longer ones go to a file of their own the page loads only to search them.
What can be derived is not stored: a job's thumbnail name is usually its id plus a
suffix (`thumb_code`), its heavy row's file follows from its position.

Everything here is data: the page renders it with textContent, never as markup.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from liangxin_batch.core._states import REPORT_LABELS, REPORT_STATUSES
from liangxin_batch.outputs._card_inputs import CardInputs
from liangxin_batch.outputs._columns import generation_seconds
from liangxin_batch.outputs._jobs import as_lost, report_jobs
from liangxin_batch.outputs._thumbs import IMAGE_EXT
from liangxin_batch.state._rows import _loads_all
from liangxin_batch.state._store import ReportFile, ReportJob, StateStore

__all__ = [
    "FACET_MAX",
    "SHORT",
    "SUB_JOBS",
    "SegmentData",
    "build_segment",
    "job_prompt",
]

#: Characters of a prompt the index holds (what a card shows; the rest is searched from
#: the segment's file of long prompts).
SHORT = 120
#: Jobs per heavy sub-shard: opening one job loads this many jobs' rows (~100-300 KB).
SUB_JOBS = 250
#: A manifest column is a filter (a facet) when it has at most this many distinct values.
FACET_MAX = 40
#: Columns never offered as facets or compare keys (shown elsewhere, or unique per job).
_NOT_GROUPS = frozenset({"id", "prompt", "model", "input", "negative_prompt"})
_GROUP_VALUE_CHARS = 200
#: Distinct values of a column kept while a segment is read (half a segment: more than
#: that and its jobs hardly share one).
_GROUP_CAP = 5000
#: Images a browser shows that may stand in for their own thumbnail when small.
_BROWSER_IMAGES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".avif"})
_SMALL_IMAGE = 256 * 1024
_VIDEO_EXT = frozenset({".mp4", ".mov", ".webm", ".mkv"})
_STATUS_CODE = {s: i for i, s in enumerate(REPORT_STATUSES)}
#: Media kinds in the index: 0 no file, 1 image, 2 video, 3 another file.
KIND_NONE, KIND_IMAGE, KIND_VIDEO, KIND_FILE = 0, 1, 2, 3


def job_prompt(columns: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
    """The prompt a job was sent (a multi-shot job's shots joined), else its column."""
    prompt = inputs.get("prompt")
    if isinstance(prompt, str) and prompt:
        return prompt
    shots = inputs.get("multi_prompt")
    if isinstance(shots, list) and shots and isinstance(shots[0], Mapping):
        return " | ".join(str(s.get("prompt", "")) for s in shots if isinstance(s, Mapping))
    return str(columns.get("prompt", ""))


def media_kind(path: str) -> int:
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in IMAGE_EXT:
        return KIND_IMAGE
    return KIND_VIDEO if suffix in _VIDEO_EXT else KIND_FILE


def shown_thumb(f: ReportFile) -> str:
    """What a card shows for an output: its preview; without one (none made yet, or none
    can be made), the image itself when it is small and in a format browsers read;
    else '' (a placeholder)."""
    if f.thumb:
        return f.thumb
    path = f.path or ""
    if (
        PurePosixPath(path).suffix.lower() in _BROWSER_IMAGES
        and f.size is not None
        and f.size <= _SMALL_IMAGE
    ):
        return path
    return ""


def failure_reason(job: ReportJob, status: str) -> str:
    """A short, repeated name for why a job did not succeed (its error code, else the
    start of its message with digits masked): what the failure-reason filter lists."""
    if status in ("succeeded", "downloading", "pending", "submitting", "submitted"):
        return ""
    if job.error_code:
        return str(job.error_code)[:60]
    text = (job.error_message or "").strip()
    if not text:
        return status
    masked = "".join("#" if c.isdigit() else c for c in text[:48])
    return masked + ("…" if len(text) > 48 else "")


class _Dict:
    """Values to small integers, first seen first."""

    def __init__(self) -> None:
        self.codes: dict[Any, int] = {}
        self.values: list[Any] = []

    def code(self, value: Any) -> int:
        found = self.codes.get(value)
        if found is None:
            found = self.codes[value] = len(self.values)
            self.values.append(value)
        return found


@dataclass(slots=True)
class SegmentData:
    """A segment's index (JSON-ready), heavy rows by sub-shard, long prompts, and the
    counts the meta file sums over segments."""

    seg: int
    index: dict[str, Any] = field(default_factory=dict)
    rows: list[list[dict[str, Any]]] = field(default_factory=list)
    long_prompts: dict[int, str] = field(default_factory=dict)
    models: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    #: Per manifest column: its values' counts, or None when it has too many to group.
    groups: dict[str, dict[str, int] | None] = field(default_factory=dict)
    jobs: int = 0


class _Builder:
    """Accumulates a segment's jobs, one at a time, into its columns."""

    def __init__(self, seg: int, local: CardInputs | None) -> None:
        self.data = SegmentData(seg)
        self.local = local
        self.ids: list[str] = []
        self.model = _Dict()
        self.reason = _Dict()
        self.prompt = _Dict()  # full prompt -> code
        self.thumb_dir = _Dict()
        self.thumb_suffix = _Dict()
        self.cols: dict[str, list[Any]] = {
            k: [] for k in ("m", "s", "r", "p", "td", "tx", "a", "st", "g", "c", "k")
        }
        self.group_values: dict[str, _Dict] = {}
        self.group_codes: dict[str, list[int]] = {}
        self.too_many: set[str] = set()
        self.skip = set(_NOT_GROUPS)  # columns not grouped, and those with too many values
        self.submitted: list[float] = []  # submit times, as offsets once all are seen
        self.sub: list[dict[str, Any]] = []

    def add_all(self, chunk: list[tuple[ReportJob, list[ReportFile]]]) -> None:
        """A chunk of jobs, their inputs decoded in one call (a call per job cost as much
        as the decoding)."""
        decoded = _loads_all([job.input_json or "{}" for job, _ in chunk])
        for (job, kept), inputs in zip(chunk, decoded, strict=True):
            self.add(job, kept, inputs)

    def add(self, job: ReportJob, kept: list[ReportFile], inputs: dict[str, Any]) -> None:
        n = len(self.ids)
        status = REPORT_LABELS[job.state]
        data = self.data
        code, message = job.error_code, job.error_message
        error = f"{code}: {message}" if code and message else code or message or ""
        images: list[list[str | None]] = []
        if self.local is not None:  # file tokens shown as the paths written
            shown = self.local.resolve(job.input_json, inputs, error)
            inputs, error = dict(shown.inputs), shown.error
            images = [[i.written, i.thumb] for i in shown.images]
        prompt = job_prompt(job.columns, inputs)
        reason = failure_reason(job, status)  # the counts are made from the codes
        cols = self.cols
        self.ids.append(job.job_id)
        cols["m"].append(self.model.code(job.model))
        cols["s"].append(_STATUS_CODE[status])
        cols["r"].append(self.reason.code(reason) if reason else -1)
        p = self.prompt.code(prompt)
        if p == len(self.prompt.values) - 1 and len(prompt) > SHORT:
            data.long_prompts[p] = prompt
        cols["p"].append(p)
        self._thumb(job.job_id, kept)
        first = kept[0] if kept else None
        aspect = 0
        if first is not None and first.width and first.height:
            aspect = round(100 * first.width / first.height)
        cols["a"].append(aspect)
        self.submitted.append(job.submitted_at or -1.0)
        took = generation_seconds(job)
        cols["g"].append(-1 if took is None else round(took * 10))
        cols["c"].append(-1 if job.credits is None else round(job.credits * 1000))
        kind = media_kind(first.path or "") if first is not None else KIND_NONE
        cols["k"].append(kind | (min(len(kept), 15) << 2))
        self._groups(n, job.columns)
        row = _heavy(job, prompt, inputs, kept, "" if status == "succeeded" else error)
        if images:
            row["inputs"] = images
        self.sub.append(row)
        if len(self.sub) == SUB_JOBS:
            self.data.rows.append(self.sub)
            self.sub = []

    def _submit_offsets(self) -> tuple[float, list[int]]:
        """The segment's submit times as whole seconds after its earliest (-1: never
        submitted): a retried first job may have gone after all the others."""
        known = [at for at in self.submitted if at > 0]
        base = float(int(min(known))) if known else 0.0
        return base, [round(at - base) if at > 0 else -1 for at in self.submitted]

    def _thumb(self, job_id: str, kept: list[ReportFile]) -> None:
        """The card's picture as (directory code, name): a name that is the job id plus
        a common suffix is stored as that suffix's code (a number), else as text."""
        shown = shown_thumb(kept[0]) if kept else ""
        if not shown:
            self.cols["td"].append(-1)
            self.cols["tx"].append(0)
            return
        folder, _, name = shown.rpartition("/")
        self.cols["td"].append(self.thumb_dir.code(folder))
        if name.startswith(job_id) and len(name) - len(job_id) <= 12:
            self.cols["tx"].append(self.thumb_suffix.code(name[len(job_id) :]))
        else:
            self.cols["tx"].append(name)

    def _groups(self, n: int, columns: Mapping[str, Any]) -> None:
        """Manifest columns with repeated values: codes per job (-1: not set), for the
        facets and the compare view; a column with too many values is dropped."""
        group_values, skip = self.group_values, self.skip
        for name, value in columns.items():
            if name in skip:
                continue
            text = value if type(value) is str else json.dumps(value, ensure_ascii=False)
            values = group_values.get(name)
            if values is None:
                values = group_values[name] = _Dict()
                self.group_codes[name] = [-1] * n
            codes = self.group_codes[name]
            code = values.codes.get(text)
            if code is None:
                if len(text) > _GROUP_VALUE_CHARS or len(values.values) >= _GROUP_CAP:
                    self.too_many.add(name)
                    skip.add(name)
                    del group_values[name], self.group_codes[name]
                    continue
                code = values.code(text)
            if len(codes) < n:  # a column the jobs before did not have
                codes.extend([-1] * (n - len(codes)))
            codes.append(code)

    def finish(self) -> SegmentData:
        if self.sub:
            self.data.rows.append(self.sub)
            self.sub = []
        n = len(self.ids)
        data = self.data
        data.jobs = n
        cols = self.cols
        base_time, cols["st"] = self._submit_offsets()
        tallied: tuple[tuple[Counter[str], list[int], Sequence[str]], ...] = (
            (data.models, cols["m"], self.model.values),
            (data.statuses, cols["s"], REPORT_STATUSES),
            (data.reasons, cols["r"], self.reason.values),
        )
        for tally, column, names in tallied:
            tally.update({names[c]: k for c, k in Counter(column).items() if c >= 0})
        groups: dict[str, Any] = {}
        for name, values in list(self.group_values.items()):
            if len(values.values) > max(FACET_MAX, n // 2):  # about one job per value
                self.too_many.add(name)
                continue
            codes = self.group_codes[name]
            codes.extend([-1] * (n - len(codes)))
            counts = Counter(codes)
            groups[name] = {"v": values.values, "c": codes}
            data.groups[name] = (
                {values.values[c]: k for c, k in counts.items() if c >= 0}
                if len(values.values) <= FACET_MAX
                else None
            )
        for name in self.too_many:
            data.groups[name] = None
        prompts = self.prompt.values
        data.index = {
            "n": n,
            "id": self.ids,
            "models": self.model.values,
            "reasons": self.reason.values,
            "P": [p[:SHORT] for p in prompts],
            "PK": [_key(p) for p in prompts],
            "PL": sorted(data.long_prompts),
            "TD": self.thumb_dir.values,
            "TS": self.thumb_suffix.values,
            "t0": base_time,
            "G": groups,
            **self.cols,
        }
        return data


def _key(prompt: str) -> str:
    """Jobs of one prompt share this (the compare view's rows)."""
    return hashlib.sha1(prompt.encode("utf-8"), usedforsecurity=False).hexdigest()[:12]


def _heavy(
    job: ReportJob,
    prompt: str,
    inputs: Mapping[str, Any],
    kept: Sequence[ReportFile],
    error: str,
) -> dict[str, Any]:
    """What the lightbox shows of a job (full prompt, parameters, timings, files)."""
    row: dict[str, Any] = {  # its model and status are in the index
        "id": job.job_id,
        "prompt": prompt,
        "params": {k: v for k, v in inputs.items() if k not in ("prompt", "multi_prompt")},
        "task": job.task_id,
        "sends": job.sends,
        "submitted": job.submitted_at,
        "completed": job.completed_at,
        "seconds": generation_seconds(job),
        "credits": job.credits,
        "files": [[f.path, f.sha256, f.size, f.width, f.height, shown_thumb(f)] for f in kept],
        # The manifest row, less its prompt when that is the prompt shown above.
        "columns": {k: v for k, v in job.columns.items() if k != "prompt" or v != prompt},
    }
    if job.credits is None and job.credits_estimated:
        row["estimated"] = job.credits_estimated
    if error:
        row["error"] = error
    return row


def build_segment(
    store: StateStore,
    out_dir: Path,
    seg: int,
    positions: tuple[int, int],
    *,
    check_files: bool,
    local: CardInputs | None,
    step: int = SUB_JOBS,
) -> Iterator[tuple[SegmentData, bool]]:
    """The segment's data, built `step` jobs at a time: yields (the data so far, False)
    after each step (a caller running beside an event loop hands control back there;
    the heavy rows of `data.rows` may be written meanwhile, and emptied), and (the
    data, True) last. `check_files`: a done job whose file is gone shows as
    download_failed (`as_lost`)."""
    builder = _Builder(seg, local)
    jobs = report_jobs(store, out_dir=out_dir if check_files else None, positions=positions)
    chunk: list[tuple[ReportJob, list[ReportFile]]] = []
    for job, kept, lost in jobs:
        chunk.append((as_lost(job, lost), kept))
        if len(chunk) == step:
            builder.add_all(chunk)
            chunk = []
            yield builder.data, False
    builder.add_all(chunk)
    yield builder.finish(), True
