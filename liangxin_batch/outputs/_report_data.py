"""report.html's data files: `DIR/report/data/*.js`, kept by segments of the state.

A page opened from the file system may not `fetch` files beside it, but it may load
scripts: each data file is a script that hands its JSON to the page's loader
(`LX.meta(...)`, `LX.index(...)`, `LX.rows(...)`, `LX.long(...)`). There are:

- one meta file (`meta-<digest>.js`): the dictionaries and counts the filters start
  from (models, statuses, failure reasons, manifest columns with few values) and the
  list of the other files; report.html names it;
- per segment of SEGMENT_JOBS jobs (state/_migrations.py): an index (`idx-…`: the
  grid's columns, loaded first), heavy rows in sub-shards of SUB_JOBS jobs (`row-…`:
  loaded when a job is opened) and, if any prompt is longer than the index keeps, its
  long prompts (`txt-…`: loaded by a search). Built by outputs/_report_shards.py.

Caching follows results.csv's (outputs/_segments.py): the state raises a segment's
version in `report_segments` whenever one of its jobs or their files changes (a preview
included); a segment's files are made again only when their version is not the state's
or the code or options that made them changed. Every file name carries its version and
a key, and files are written to a temporary name and renamed: a page never reads a
half-written file, nor one of another version than its meta names. Files no longer
named by the last two metas are removed after the new meta and report.html are in
place (a page opened on the previous one can still open its jobs).

The cache is the run's (or `report`'s under the run lock, cli/_outputs.py). A reader
(`report` beside a running batch, read-only) never writes cache.json nor removes a
file: its page names only files of its own (segments it made, and hard links of the
run's current ones), tagged with its time, which the run's sweep keeps
READER_KEEP_SECONDS; a file the run removed before the reader linked it is made again.

`ReportData.steps()` does the work a few hundred jobs at a time, so a run can refresh
the report beside its event loop (run/_run.py `--report-every`); `refresh()` does it all.
Work that may take seconds (hashing and decoding local input images for their
thumbnails) is not done in a step: it is yielded as an `OffLoop` job, which the run
hands to a worker thread (run/_live_report.py) before it takes the next step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from liangxin_batch.core._local_files import LocalFile
from liangxin_batch.core._states import REPORT_STATUSES
from liangxin_batch.outputs import _card_inputs, _report_shards
from liangxin_batch.outputs._atomic import write_atomic
from liangxin_batch.outputs._card_inputs import CardInputs, make_input_thumbs
from liangxin_batch.outputs._report_shards import FACET_MAX, SUB_JOBS, SegmentData, build_segment
from liangxin_batch.outputs._thumbs import MAX_THUMB_PIXELS
from liangxin_batch.state._migrations import SEGMENT_JOBS
from liangxin_batch.state._store import StateStore

__all__ = ["DATA_DIR", "READER_KEEP_SECONDS", "OffLoop", "ReportData", "SegmentFiles", "Step"]

DATA_DIR = "report/data"
_CACHE = "cache.json"
_READER_TAG = re.compile(r"-r(\d+)-\d+")
#: How long the run keeps the files a reader (`report` beside a running batch) made
#: for its page: a page opened on them opens its jobs that long.
READER_KEEP_SECONDS = 600.0
#: The layout of the data files (the page's loader reads this one).
_FORMAT = 1


@dataclass(slots=True)
class SegmentFiles:
    """A segment's files as cached, and the counts the meta sums."""

    version: int
    key: str
    jobs: int
    index: str
    rows: list[str]
    long: str | None
    models: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    groups: dict[str, dict[str, int] | None] = field(default_factory=dict)
    cached: bool = True  # False: a reader's, for its page only (never in the cache)
    built: int = 0  # when made, in the order of this cache's builds (0: before it counted)

    def names(self) -> list[str]:
        return [self.index, *self.rows, *([self.long] if self.long else [])]


class OffLoop:
    """Work of a refresh to run off the event loop (file work only: no state), before
    the next step is taken; run where it stands if the caller did not."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            self._work()
            self.done = True


#: What `ReportData.steps()` yields: None (a step is done: hand control back), or work
#: to run off the event loop before the next step.
Step = OffLoop | None


@functools.cache  # the sources do not change under a running process
def _code_digest() -> str:
    """The code that makes a segment's files: another version of it makes them stale."""
    digest = hashlib.sha256()
    for module in (_report_shards, _card_inputs):
        digest.update(Path(module.__file__ or "").read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def _script(call: str, *args: Any) -> bytes:
    """A data file: `LX.<call>(<args as JSON>);` (JSON is JavaScript; loaded by a
    script tag, so no `</script>` can end it early)."""
    body = ",".join(json.dumps(a, ensure_ascii=False, separators=(",", ":")) for a in args)
    return f"LX.{call}({body});\n".encode()


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` holding `source`'s bytes: a hard link, a copy where none can be made;
    FileNotFoundError when `source` is gone."""
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise
    except OSError:  # a file system without hard links
        write_atomic(target, source.read_bytes())  # FileNotFoundError: gone, as above


def _reader_born(name: str) -> int | None:
    """When a reader made the file `name` (its `-r<time>-` tag); None: the run's."""
    found = _READER_TAG.search(name)
    return int(found.group(1)) if found else None


class ReportData:
    """The data files of one report of `store`, in `out_dir/report/data/`."""

    def __init__(
        self,
        out_dir: Path,
        store: StateStore,
        *,
        lost_positions: set[int] | frozenset[int] = frozenset(),
        max_pixels: int = MAX_THUMB_PIXELS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.out_dir = out_dir
        self.clock = clock
        self.store = store
        self.folder = out_dir / DATA_DIR
        #: Positions (`idx`) of done jobs whose files are gone (`report`'s check): their
        #: segments are made with the files checked, and keyed by them.
        self.lost = {idx // SEGMENT_JOBS: set[int]() for idx in lost_positions}
        for idx in lost_positions:
            self.lost[idx // SEGMENT_JOBS].add(idx)
        self.max_pixels = max_pixels
        self.local: CardInputs | None = None
        self.cache: dict[int, SegmentFiles] = {}
        self.metas: list[list[str]] = []  # files named by the last metas, newest first
        self.meta_name = ""
        self._made = 0  # a reader's files so far (their names kept apart)
        self._saved = b""  # the cache file as last read or written
        self._thumbs_tried: set[str] = set()  # input thumbnails asked for, and made
        self._thumbs_made: set[str] = set()

    # -- the cache ------------------------------------------------------------------

    def _key(self, seg: int) -> str:
        lost = sorted(self.lost.get(seg, ()))
        local = self.local is not None
        text = json.dumps([_FORMAT, SEGMENT_JOBS, SUB_JOBS, lost, local, _code_digest()])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def _load(self) -> None:
        try:
            self._saved = (self.folder / _CACHE).read_bytes()
            raw = json.loads(self._saved)
            self.cache = {int(s): SegmentFiles(**e) for s, e in raw["segments"].items()}
            self.metas = [list(m) for m in raw.get("metas", [])][:2]
        except (OSError, ValueError, TypeError, KeyError):  # none yet, or unreadable
            self.cache, self.metas = {}, []

    def _save(self) -> None:
        """The cache file, the run's alone: a reader never writes it (its files are
        not cached, and a save of a cache read earlier would undo the run's)."""
        if self.store.readonly:
            return
        kept = {str(s): asdict(e) for s, e in sorted(self.cache.items()) if e.cached}
        data = json.dumps({"segments": kept, "metas": self.metas}).encode()
        if data != self._saved:  # nothing changed: nothing written
            write_atomic(self.folder / _CACHE, data)
            self._saved = data

    def _fresh(self, seg: int, version: int, dirty: bool) -> bool:
        entry = self.cache.get(seg)
        return (
            entry is not None
            and entry.cached
            and not dirty
            and entry.version == version
            and entry.key == self._key(seg)
            # Its first and last files, not each (a stat per file cost 4,000 at 1M jobs):
            # files are removed together, never one by one.
            and all(
                (self.folder / name).exists() for name in entry.names()[:: len(entry.rows) or 1]
            )
        )

    # -- the work -------------------------------------------------------------------

    def steps(self, *, max_segments: int | None = None) -> Iterator[Step]:
        """Bring the data files up to date, a sub-shard of jobs per step (a None is
        yielded between steps, an `OffLoop` for work to run off the event loop first);
        then write the meta file (`self.meta_name`).

        `max_segments`: make at most this many stale segments now (a refresh during a
        run); the others keep their previous files, or are left out until made."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._load()
        self.local = CardInputs(self.store)
        if not self.local.enabled:
            self.local = None
        found = self.store.report_segments()
        reader = self.store.readonly
        stale = [s for s, (v, d) in sorted(found.items()) if not self._fresh(s, v, d)]
        if max_segments is not None:  # fair: never built first, then built longest ago
            stale = sorted(stale, key=self._age)[:max_segments]
        if reader:  # the run's current files, linked under the reader's own names
            for seg in sorted(set(found) - set(stale)):
                linked = self._link_for_reader(self.cache[seg])
                if linked is None:  # the run removed them meanwhile: made here
                    stale.append(seg)
                else:
                    self.cache[seg] = linked
        versions = {s: v for s, (v, _) in found.items()}
        dirty = [s for s in stale if found[s][1]]
        if dirty and not reader:  # clean before reading (migration 010)
            versions.update(self.store.clean_report_segments(sorted(dirty)))
        for seg in stale:
            # A reader's files serve its page only: never cached (a dirty segment may
            # change again at the same version, and the cache is the run's alone).
            files = self._files_of(seg, versions[seg], cached=not reader)
            for data, finished in build_segment(
                self.store,
                self.out_dir,
                seg,
                (seg * SEGMENT_JOBS, (seg + 1) * SEGMENT_JOBS),
                check_files=seg in self.lost,
                local=self.local,
            ):
                yield from self._write_rows(data, files)  # a few at a time
                if not finished:
                    yield None
            yield None
            self.cache[seg] = self._write_index(data, files)
            yield None
        self.cache = {s: e for s, e in self.cache.items() if s in found}
        self._write_meta()

    def refresh(self) -> None:
        """`steps` run to the end (every stale segment made), in place."""
        for step in self.steps():
            if step is not None:
                step()

    def _age(self, seg: int) -> tuple[int, int]:
        """Sort key of a stale segment: those never made, then those made longest ago
        (segments that change at every refresh must not starve the others)."""
        entry = self.cache.get(seg)
        return (0, seg) if entry is None or not entry.cached else (1, entry.built)

    def _files_of(self, seg: int, version: int, *, cached: bool) -> SegmentFiles:
        """The names of a segment's files about to be made (rows added as written)."""
        key = self._key(seg)
        tag = f"{seg:05d}-{version}-{key}"
        if not cached:
            tag += self._reader_tag()
        return SegmentFiles(version, key, 0, f"idx-{tag}.js", [], None, cached=cached)

    def _reader_tag(self) -> str:
        """What sets a reader's file names apart: its time (the run's sweep keeps them
        READER_KEEP_SECONDS from it), its process and a count."""
        self._made += 1
        return f"-r{int(self.clock())}-{os.getpid()}-{self._made}"

    def _link_for_reader(self, entry: SegmentFiles) -> SegmentFiles | None:
        """A cached segment's files under a reader's names (hard links: no copy; a
        copy where links cannot be made), so the run's sweep of its own old files
        never takes them from the reader's page; None if the run removed them first."""
        old = entry.index[len("idx-") : -len(".js")]
        new = old + self._reader_tag()
        named = {name: name.replace(old, new, 1) for name in entry.names()}
        made: list[Path] = []
        try:
            for source, target in named.items():
                _link_or_copy(self.folder / source, self.folder / target)
                made.append(self.folder / target)
        except OSError:
            for path in made:
                path.unlink(missing_ok=True)
            return None
        return dataclasses.replace(
            entry,
            index=named[entry.index],
            rows=[named[r] for r in entry.rows],
            long=named[entry.long] if entry.long else None,
            cached=False,
        )

    def _write_rows(self, data: SegmentData, files: SegmentFiles) -> Iterator[Step]:
        """The heavy sub-shards completed since the last call (`data.rows` holds complete
        ones, and the last once the segment is finished), each written and then let go:
        a segment's rows are never all in memory."""
        tag = files.index[len("idx-") : -len(".js")]
        for sub in range(len(files.rows), len(data.rows)):
            part = data.rows[sub]
            if self.local is not None:
                yield from self._input_thumbs(part)
            name = f"row-{tag}-{sub}.js"
            write_atomic(self.folder / name, _script("rows", data.seg, sub, part))
            files.rows.append(name)
            data.rows[sub] = []

    def _write_index(self, data: SegmentData, files: SegmentFiles) -> SegmentFiles:
        seg = data.seg
        tag = files.index[len("idx-") : -len(".js")]
        if data.long_prompts:
            files.long = f"txt-{tag}.js"
            texts = {str(k): v for k, v in data.long_prompts.items()}
            write_atomic(self.folder / files.long, _script("long", seg, texts))
        write_atomic(self.folder / files.index, _script("index", seg, data.index))
        files.jobs = data.jobs
        files.models = dict(data.models)
        files.statuses = dict(data.statuses)
        files.reasons = dict(data.reasons)
        files.groups = data.groups
        files.built = 1 + max((e.built for e in self.cache.values()), default=0)
        return files

    def _input_thumbs(self, part: list[dict[str, Any]]) -> Iterator[Step]:
        """Thumbnails of a sub-shard's local input images (each distinct file decoded
        once, ever: named by its bytes), made by an `OffLoop` job (hashing and decoding
        big photos takes seconds); an input without one shows its path alone."""
        assert self.local is not None
        todo = {k: v for k, v in self.local.wanted.items() if k not in self._thumbs_tried}
        self.local.wanted = {}
        if todo:
            job = OffLoop(functools.partial(self._make_input_thumbs, todo))
            yield job
            job()  # a no-op once the caller ran it
            self._thumbs_tried.update(todo)
        for row in part:
            for image in row.get("inputs", ()):
                if image[1] not in self._thumbs_made:
                    image[1] = None

    def _make_input_thumbs(self, todo: dict[str, LocalFile]) -> None:
        self._thumbs_made |= make_input_thumbs(todo, self.out_dir, self.max_pixels)

    # -- the meta file -----------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """What the page starts from: dictionaries with counts, and the files to load."""
        models: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        groups: dict[str, Counter[str] | None] = {}
        segs = []
        for seg, entry in sorted(self.cache.items()):
            models.update(entry.models)
            statuses.update(entry.statuses)
            reasons.update(entry.reasons)
            for name, counts in entry.groups.items():
                have = groups.get(name, Counter())
                if counts is None or have is None:
                    groups[name] = None
                    continue
                have.update(counts)
                groups[name] = have if len(have) <= FACET_MAX else None
            segs.append(
                {
                    "seg": seg,
                    "n": entry.jobs,
                    "index": entry.index,
                    "rows": entry.rows,
                    "long": entry.long,
                }
            )
        facets = [
            {"name": name, "values": sorted(counts, key=lambda v: (-counts[v], v))}
            for name, counts in groups.items()
            if counts is not None and len(counts) > 1
        ]
        return {
            "format": _FORMAT,
            "sub": SUB_JOBS,
            "segs": segs,
            "statuses": list(REPORT_STATUSES),
            "models": sorted(models),
            "reasons": sorted(reasons, key=lambda r: (-reasons[r], r)),
            "facets": facets,
            # Columns the compare view may group by: every segment kept its values.
            "groupable": sorted(
                n for n in groups if all(n in e.groups for e in self.cache.values())
            ),
            "counts": {
                "models": dict(models),
                "statuses": dict(statuses),
                "reasons": dict(reasons),
            },
        }

    def _write_meta(self) -> None:
        body = _script("meta", self.meta())
        digest = hashlib.sha256(body).hexdigest()[:16]
        tag = f"-r{int(self.clock())}-{os.getpid()}" if self.store.readonly else ""
        self.meta_name = f"meta-{digest}{tag}.js"
        path = self.folder / self.meta_name
        if not path.exists():
            write_atomic(path, body)
        named = [self.meta_name, *(n for e in self.cache.values() for n in e.names())]
        self.metas = [named, *(m for m in self.metas if m and m[0] != self.meta_name)][:2]
        self._save()

    def sweep(self) -> None:
        """Remove the files no longer named by the last two metas (call once the new
        report.html is in place), but a reader's younger than READER_KEEP_SECONDS (a
        page may be open on them: every file a reader's meta names is its own, made or
        linked). A reader (`report` beside a run) removes nothing."""
        if self.store.readonly:
            return
        wanted = {name for names in self.metas for name in names} | {_CACHE}
        now = self.clock()
        with contextlib.suppress(OSError):
            for path in self.folder.iterdir():
                name = path.name
                if name in wanted or name.startswith("."):
                    continue
                born = _reader_born(name)
                if born is not None and now - born < READER_KEEP_SECONDS:
                    continue
                with contextlib.suppress(OSError):
                    path.unlink()
