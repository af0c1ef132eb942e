"""results.csv from cached segments is the file the walk of every job writes, byte for
byte, and a run that changed a few jobs makes only their segments again."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from liangxin_batch.outputs import _tables
from liangxin_batch.outputs._lost import lost_jobs
from liangxin_batch.outputs._report import RESULTS_CSV, write_results_csv
from liangxin_batch.outputs._segments import SEGMENTS_DIR, write_results_by_segments
from liangxin_batch.state._migrations import SEGMENT_JOBS
from liangxin_batch.state._store import StateStore
from tests.report_state_support import job_rows, move, random_state

STRIDE = SEGMENT_JOBS // 4  # four jobs a segment: 90 jobs span 23 segments


def walked(out: Path, store: StateStore, *, csv_safe: bool, check_files: bool = False) -> bytes:
    """results.csv as the walk of every job writes it (kept apart from the real one)."""
    write_results_csv(out, store, csv_safe=csv_safe, check_files=check_files)
    return (out / RESULTS_CSV).read_bytes()


def segmented(out: Path, store: StateStore, *, csv_safe: bool) -> bytes:
    count = write_results_by_segments(out, store, csv_safe=csv_safe)
    assert count == sum(store.counts(in_manifest=True).values()), "one row per manifest job"
    return (out / RESULTS_CSV).read_bytes()


def cached(out: Path) -> dict[str, int]:
    """The cached segment files, each with its inode (a file made again is a new one)."""
    return {p.name: p.stat().st_ino for p in (out / SEGMENTS_DIR).glob("seg-*.csv")}


def by_segment(files: dict[str, int]) -> dict[str, tuple[str, int]]:
    """Segment number -> (file name, inode); one file a segment."""
    out = {name.split("-")[1]: (name, ino) for name, ino in files.items()}
    assert len(out) == len(files)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_segments_make_the_walks_file_after_random_changes(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    store = random_state(tmp_path, seed, moves=60, stride=STRIDE)
    ids = [j.job_id for j in store.iter_jobs()]
    for round_ in range(6):
        csv_safe = rnd.random() < 0.3
        got = segmented(tmp_path, store, csv_safe=csv_safe)
        assert got == walked(tmp_path, store, csv_safe=csv_safe), f"round {round_}"
        for _ in range(rnd.randrange(1, 15)):
            move(store, tmp_path, rnd.choice(ids), rnd)
    store.close()


def test_a_run_that_changed_k_jobs_makes_only_their_segments(tmp_path: Path) -> None:
    rnd = random.Random(7)
    store = random_state(tmp_path, 7, moves=60, stride=STRIDE)
    write_results_by_segments(tmp_path, store)
    before = cached(tmp_path)
    assert len(before) == 23
    changed = ["j00005", "j00006", "j00050"]  # segments 1 and 12
    for job_id in changed:
        move(store, tmp_path, job_id, rnd)
        move(store, tmp_path, job_id, rnd)
    write_results_by_segments(tmp_path, store)
    after = cached(tmp_path)
    old, new = by_segment(before), by_segment(after)
    assert old.keys() == new.keys()
    assert sorted(seg for seg in new if new[seg] != old[seg]) == ["000001", "000012"]
    assert (tmp_path / RESULTS_CSV).read_bytes() == walked(tmp_path, store, csv_safe=False)
    # Nothing changed: nothing made again.
    write_results_by_segments(tmp_path, store)
    assert cached(tmp_path) == after
    store.close()


def test_the_options_or_the_columns_make_every_segment_again(tmp_path: Path) -> None:
    store = random_state(tmp_path, 3, moves=40, stride=STRIDE)
    write_results_by_segments(tmp_path, store)
    before = cached(tmp_path)
    write_results_by_segments(tmp_path, store, csv_safe=True)
    assert not before.keys() & cached(tmp_path).keys(), "csv_safe: every segment anew"
    assert (tmp_path / RESULTS_CSV).read_bytes() == walked(tmp_path, store, csv_safe=True)
    # A job far down the manifest with a column no other job has: a new header.
    (row,) = job_rows(1, start=95, stride=STRIDE)
    store.upsert_jobs([(*row[:4], json.dumps({"late": "x", "prompt": "p"}), row[5])])
    write_results_by_segments(tmp_path, store)
    got = (tmp_path / RESULTS_CSV).read_bytes()
    assert got.startswith(b"prompt,n,late,") and got == walked(tmp_path, store, csv_safe=False)
    store.close()


def test_report_shows_lost_files_as_the_walk_does(tmp_path: Path) -> None:
    store = random_state(tmp_path, 1, stride=STRIDE)
    write_results_by_segments(tmp_path, store)  # cached unchecked, as a run leaves them
    lost = lost_jobs(store, tmp_path).positions
    assert lost
    write_results_by_segments(tmp_path, store, check=lost)
    got = (tmp_path / RESULTS_CSV).read_bytes()
    assert b"output_missing" in got
    assert got == walked(tmp_path, store, csv_safe=False, check_files=True)
    store.close()


def test_a_read_only_state_is_not_written(tmp_path: Path) -> None:
    """`report` beside a run: the state is only read; what it makes is cached, by the
    version it read, and it removes no file of the run's."""
    store = random_state(tmp_path, 2, moves=40, stride=STRIDE)
    write_results_by_segments(tmp_path, store)
    move(store, tmp_path, "j00010", random.Random(1))
    move(store, tmp_path, "j00010", random.Random(2))
    expected = walked(tmp_path, store, csv_safe=False)
    store.close()
    before = cached(tmp_path)
    state = (tmp_path / "state.db").read_bytes()
    reader = StateStore.in_dir(tmp_path, readonly=True)
    write_results_by_segments(tmp_path, reader)
    reader.close()
    assert (tmp_path / RESULTS_CSV).read_bytes() == expected
    assert (tmp_path / "state.db").read_bytes() == state
    wal = tmp_path / "state.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "nothing written to the state"
    assert cached(tmp_path) == before, "a dirty segment is made for the reader alone"
    assert not list(tmp_path.glob(".*.tmp"))
    # The next run makes the changed segment again and removes the one it replaced.
    writer = StateStore.in_dir(tmp_path)
    write_results_by_segments(tmp_path, writer)
    old, new = by_segment(before), by_segment(cached(tmp_path))
    assert sorted(seg for seg in new if new[seg] != old[seg]) == ["000002"]
    assert len(new) == len(old)
    writer.close()


def test_a_reader_caches_a_clean_segment_it_had_to_make(tmp_path: Path) -> None:
    store = random_state(tmp_path, 5, moves=40, stride=STRIDE)
    write_results_by_segments(tmp_path, store)
    expected = (tmp_path / RESULTS_CSV).read_bytes()
    store.close()
    first = sorted((tmp_path / SEGMENTS_DIR).glob("seg-000003-*.csv"))
    first[0].unlink()  # lost (a user tidying up): the reader makes it and keeps it
    reader = StateStore.in_dir(tmp_path, readonly=True)
    write_results_by_segments(tmp_path, reader)
    reader.close()
    assert (tmp_path / RESULTS_CSV).read_bytes() == expected
    assert sorted((tmp_path / SEGMENTS_DIR).glob("seg-000003-*.csv")) == first


def test_a_segment_is_written_to_the_state_once_until_it_is_read(tmp_path: Path) -> None:
    """Triggers make a clean segment dirty; while it is dirty, changes leave its row as it
    is (no page of the WAL per transaction of a run)."""
    store = random_state(tmp_path, 6, moves=20, stride=STRIDE)
    write_results_by_segments(tmp_path, store)
    assert not any(dirty for _, dirty in store.result_segments().values())
    version, _ = store.result_segments()[2]
    rnd = random.Random(0)
    for _ in range(5):
        move(store, tmp_path, "j00008", rnd)
    assert store.result_segments()[2] == (version + 1, True)
    write_results_by_segments(tmp_path, store)
    assert store.result_segments()[2] == (version + 1, False)


def test_a_failure_while_making_a_segment_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = random_state(tmp_path, 4, moves=40, stride=STRIDE)
    write_results_by_segments(tmp_path, store)
    old = (tmp_path / RESULTS_CSV).read_bytes()
    move(store, tmp_path, "j00040", random.Random(3))
    move(store, tmp_path, "j00040", random.Random(4))
    real = _tables.write_csv

    def full_disk(tmp: Path, header: list[str], chunks: _tables.Chunks) -> int:
        real(tmp, header, chunks)
        if tmp.name.startswith(".seg-"):  # a segment's rows, not the header alone
            raise OSError(28, "No space left on device")
        return 0

    monkeypatch.setattr(_tables, "write_csv", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_results_by_segments(tmp_path, store)
    assert (tmp_path / RESULTS_CSV).read_bytes() == old
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / SEGMENTS_DIR).glob(".*"))
    monkeypatch.undo()
    write_results_by_segments(tmp_path, store)
    assert (tmp_path / RESULTS_CSV).read_bytes() == walked(tmp_path, store, csv_safe=False)
    store.close()


def test_the_report_segments_are_versioned_apart_and_a_preview_bumps_only_them(
    tmp_path: Path,
) -> None:
    """Migration 010: the report's shards keep their own versions (a run refreshes the
    report without writing results.csv), bumped by the same changes and by a preview."""
    rnd = random.Random(5)
    store = random_state(tmp_path, 5, moves=60, stride=STRIDE)
    results = store.clean_result_segments(store.result_segments())
    report = store.clean_report_segments(store.report_segments())
    assert results.keys() == report.keys() and len(report) == 23
    move(store, tmp_path, "j00005", rnd)  # segment 1
    assert store.report_segments()[1] == (report[1] + 1, True)
    assert store.result_segments()[1] == (results[1] + 1, True)
    store.clean_report_segments([1])
    store.clean_result_segments([1])
    done = next(f for f in store.all_files() if f.path is not None)
    seg = next(j.idx for j in store.iter_jobs() if j.job_id == done.job_id) // SEGMENT_JOBS
    before_results, before_report = store.result_segments(), store.report_segments()
    store.set_preview(done.job_id, done.n, thumb="thumbs/x.jpg", width=640, height=480)
    assert store.report_segments()[seg] == (before_report[seg][0] + 1, True)
    assert store.result_segments() == before_results, "results.csv does not show previews"
    (again,) = [f for f in store.files_of(done.job_id) if f.n == done.n]
    assert (again.thumb, again.width, again.height) == ("thumbs/x.jpg", 640, 480)
    store.close()
