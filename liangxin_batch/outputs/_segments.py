"""results.csv kept by segments: the end of a run rewrites only what changed.

The manifest order (`idx`) is cut into segments of SEGMENT_JOBS jobs. Each segment's
rows are cached in `DIR/.results/` as a CSV of their own (the header, then the rows, as
the writer makes them). The state keeps a version per segment, raised by a trigger in
the transaction of any change of one of its jobs or their files (migration 008): a
cached segment is current when it was written at the version the state holds now, with
the same header, options and row code. results.csv is then the header followed by each
segment's rows, copied from the cache, written to a temporary file and moved into place
(a crash leaves the old file, or the new one whole).

Rows are made by outputs/_report.py's row builder (`_row_chunks`, one segment's range
of jobs at a time, cells by outputs/_columns.py) and written by outputs/_tables.py's
`write_csv`: this module only decides which segments to make again and joins them, so
the result is byte for byte the file the walk of every job writes (tests/test_segments.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from liangxin_batch.outputs import _columns, _report, _tables
from liangxin_batch.outputs._columns import text_cells
from liangxin_batch.outputs._report import _GUESS, RESULTS_CSV, _Header, _row_chunks
from liangxin_batch.state._migrations import SEGMENT_JOBS
from liangxin_batch.state._store import StateStore

__all__ = ["SEGMENTS_DIR", "write_results_by_segments"]

SEGMENTS_DIR = ".results"
_INDEX = "index.json"


@dataclass(frozen=True, slots=True)
class _Entry:
    """A cached segment: the state's version it was made at, under which key."""

    version: int
    key: str  # the header, options and row code it was made with
    rows: int
    columns: list[str]  # the manifest column names of its jobs (first seen first)

    def name(self, seg: int) -> str:
        # The version in the name: two writers (a run, a `report` beside it) never
        # replace each other's file of another version.
        return f"seg-{seg:06d}-{self.version}-{self.key}.csv"


@functools.cache  # the sources do not change under a running process
def _code_digest() -> str:
    """The code that makes a row and writes it: another version of it (a column added,
    a cell formatted anew) makes every cached segment stale."""
    digest = hashlib.sha256()
    for module in (_columns, _report, _tables):
        digest.update(Path(module.__file__ or "").read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def _key(header: list[str], csv_safe: bool, code: str) -> str:
    text = json.dumps([header, csv_safe, SEGMENT_JOBS, code], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _load_index(folder: Path) -> dict[int, _Entry]:
    try:
        raw = json.loads((folder / _INDEX).read_text("utf-8"))
        return {int(seg): _Entry(**entry) for seg, entry in raw.items()}
    except (OSError, ValueError, TypeError):  # none yet, or unreadable: make them all
        return {}


def _save_index(folder: Path, index: dict[int, _Entry]) -> None:
    tmp = folder / f".{_INDEX}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({str(s): asdict(e) for s, e in sorted(index.items())}), "utf-8")
    os.replace(tmp, folder / _INDEX)


def _positions(seg: int) -> tuple[int, int]:
    return seg * SEGMENT_JOBS, (seg + 1) * SEGMENT_JOBS


def write_results_by_segments(
    out_dir: Path,
    store: StateStore,
    *,
    target: Path | None = None,
    csv_safe: bool = False,
    check: Collection[int] = (),
) -> int:
    """Write results.csv (or `target`) from the cached segments, making again only the
    stale ones; returns the number of rows. A writable store marks the segments it makes
    clean first (`clean_result_segments`); a read-only one (`report` beside a run) writes
    nothing to the state, caches only the clean segments it makes, and removes no file.

    `check`: positions (`idx`) of done jobs whose files are gone (outputs/_lost.py): their
    segments are made with the files checked, as `report` shows them, and not cached."""
    folder = out_dir / SEGMENTS_DIR
    folder.mkdir(exist_ok=True)
    index = _load_index(folder)
    code = _code_digest()
    checked = {idx // SEGMENT_JOBS for idx in check}
    found = store.result_segments()
    fresh = {
        seg
        for seg, (version, dirty) in found.items()
        if seg in index
        and not dirty
        and index[seg].version == version
        and (folder / index[seg].name(seg)).exists()
    }
    versions = {seg: version for seg, (version, _) in found.items()}
    dirty = {seg for seg, (_, d) in found.items() if d}
    if not store.readonly and dirty:  # clean before the rows are read (see migration 008)
        versions.update(store.clean_result_segments(sorted(dirty)))
        dirty = set()
    columns = {
        seg: index[seg].columns
        if seg in fresh
        else list(store.column_names(positions=_positions(seg)))
        for seg in versions
    }
    header = _header(store, columns)
    key = _key(header.row, csv_safe, code)
    target = target or out_dir / RESULTS_CSV
    tmp = target.with_name(f".{target.name}.tmp")
    made: list[Path] = []  # temporary segments (not cached), removed at the end
    try:
        head = _header_bytes(tmp, header)
        parts: list[Path] = []
        count = 0
        for seg in sorted(versions):
            entry = index.get(seg)
            if seg in checked or seg not in fresh or entry is None or entry.key != key:
                entry = _Entry(versions[seg], key, 0, columns[seg])
                # A dirty segment seen by a reader may change again at the same version:
                # made for this file only, never cached.
                temporary = seg in checked or seg in dirty
                path, rows = _make(
                    store, out_dir, header, csv_safe, seg, temporary, entry, seg in checked
                )
                if path.parent == folder:
                    index[seg] = _Entry(entry.version, key, rows, columns[seg])
                else:
                    made.append(path)
            else:
                path, rows = folder / entry.name(seg), entry.rows
            parts.append(path)
            count += rows
        _join(tmp, head, parts)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        for path in made:
            path.unlink(missing_ok=True)
    index = {seg: e for seg, e in index.items() if seg in versions}
    _save_index(folder, index)
    if not store.readonly:  # a run's files are its own to remove, not a reader's
        _drop_orphans(folder, {e.name(s) for s, e in index.items()})
    return count


def _header(store: StateStore, columns: dict[int, list[str]]) -> _Header:
    """The header the walk of every job would write: the first jobs' columns, unless some
    job has one they lack (then every job's, in manifest order)."""
    guess = list(store.column_names(_GUESS))
    known = set(guess)
    if all(set(names) <= known for names in columns.values()):
        return _Header(guess, complete=True)
    return _Header(store.column_names(), complete=True)


def _make(
    store: StateStore,
    out_dir: Path,
    header: _Header,
    csv_safe: bool,
    seg: int,
    temporary: bool,
    entry: _Entry,
    check_files: bool,
) -> tuple[Path, int]:
    """One segment's CSV and its rows, by the row builder and the csv writer; cached
    unless `temporary` (then a file whose name starts with a dot, removed after use)."""
    folder = out_dir / SEGMENTS_DIR
    tmp = folder / f".{entry.name(seg)}.{os.getpid()}.tmp"
    if temporary:
        tmp = out_dir / f".results-{seg:06d}.{os.getpid()}.tmp"
    chunks: _tables.Chunks = _row_chunks(
        store,
        header,
        text_cells,
        check=out_dir if check_files else None,
        status=None,
        model=None,
        positions=_positions(seg),
    )
    try:
        rows = _tables.write_csv(tmp, header.row, _tables.defused(chunks) if csv_safe else chunks)
        if temporary:
            return tmp, rows
        path = folder / entry.name(seg)
        os.replace(tmp, path)
        return path, rows
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _header_bytes(tmp: Path, header: _Header) -> bytes:
    """What the csv writer writes before the first row: each cached segment starts with
    it, results.csv starts with it once."""
    _tables.write_csv(tmp, header.row, [])
    return tmp.read_bytes()


def _join(tmp: Path, head: bytes, parts: list[Path]) -> None:
    """The header once, then each segment's rows (its own header skipped), copied file to
    file without decoding."""
    with tmp.open("wb") as out:
        out.write(head)
        for path in parts:
            with path.open("rb") as part:
                if part.read(len(head)) != head:  # not what this header makes: never join it
                    raise OSError(f"{path} does not start with results.csv's header")
                shutil.copyfileobj(part, out, 1 << 20)


def _drop_orphans(folder: Path, wanted: set[str]) -> None:
    for path in _segment_files(folder):
        if path.name not in wanted:
            with contextlib.suppress(OSError):
                path.unlink()


def _segment_files(folder: Path) -> Iterator[Path]:
    with contextlib.suppress(OSError):
        yield from folder.glob("seg-*.csv")
