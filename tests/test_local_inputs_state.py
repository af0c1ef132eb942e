"""Issue 16, the state side of local inputs: the sync records the files a job's tokens
name, a resumed run notices an edited photo, and results.csv shows the paths as written.

Each test takes the steps `run` takes (load_manifest_jobs, the fingerprint, sync_jobs)
on a real state file.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from liangxin_batch.core._local_files import file_token
from liangxin_batch.errors import StateError
from liangxin_batch.manifest._fingerprint import same_manifest
from liangxin_batch.outputs._report import write_results_csv
from liangxin_batch.run._manifest_jobs import load_manifest_jobs
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import FINGERPRINT_KEY, sync_jobs
from tests.local_inputs_support import (
    CATALOG,
    EDIT_MODEL,
    edit_manifest,
    jpeg,
    png,
    run_fingerprint,
    sha,
    sync_as_run,
)


def test_the_sync_records_each_distinct_file_once(tmp_path: Path) -> None:
    a = png(tmp_path / "a.png")
    shutil.copy(a, tmp_path / "same-as-a.png")
    b = jpeg(tmp_path / "b.jpg")
    rows = [("j1", "a.png|b.jpg"), ("j2", "same-as-a.png"), ("j3", "https://cdn.shop.com/x.png")]
    store = StateStore.in_dir(tmp_path / "out")
    try:
        sync_as_run(store, edit_manifest(tmp_path, rows))
        assert store.local_file_count() == 2
        got = store.local_file(sha(a))
        assert got is not None
        assert (got.size, got.media_type, got.path, got.written) == (
            a.stat().st_size,
            "image/png",
            str(a.resolve()),
            "a.png",
        )
        assert store.local_file("0" * 64) is None
        job = store.get("j1")
        assert job is not None
        assert [f.sha256 for f in store.local_files_of(job.input)] == [sha(a), sha(b)]
        assert store.local_files_of({"image_urls": ["https://cdn.shop.com/x.png"]}) == []
        # The file moves: the same job (same bytes), and the row follows the manifest.
        (tmp_path / "moved").mkdir()
        os.rename(a, tmp_path / "moved" / "a.png")
        os.remove(tmp_path / "same-as-a.png")
        report = sync_as_run(store, edit_manifest(tmp_path, [("j1", "moved/a.png|b.jpg")]))
        assert (report.added, report.changed) == (0, [])
        moved = store.local_file(sha(tmp_path / "moved" / "a.png"))
        assert moved is not None and moved.written == "moved/a.png"
    finally:
        store.close()


def test_a_photo_edited_between_runs_makes_its_job_changed(tmp_path: Path) -> None:
    photo = png(tmp_path / "photos" / "shoe.png")
    manifest = edit_manifest(tmp_path, [("shoe", "photos/shoe.png")])
    store = StateStore.in_dir(tmp_path / "out")
    try:
        sync_as_run(store, manifest)
        first = store.get("shoe")
        assert first is not None
        stored = store.get_meta(FINGERPRINT_KEY)
        # Nothing touched: the resume skips validation and sync.
        assert same_manifest(stored, run_fingerprint(manifest, stored))
        # Edited in place, the manifest itself untouched.
        png(photo, b"the same shoe, retouched")
        assert not same_manifest(stored, run_fingerprint(manifest, stored))
        with pytest.raises(StateError, match="different content: shoe"):
            sync_as_run(store, manifest)
        again = store.get("shoe")
        assert again is not None and again.content_hash == first.content_hash  # rolled back
        report = sync_as_run(store, manifest, allow_changed=True)
        assert report.changed == ["shoe"]
        changed = store.get("shoe")
        assert changed is not None and changed.content_hash != first.content_hash
        assert changed.input["image_urls"] == [file_token(sha(photo))]
        assert same_manifest(
            stored := store.get_meta(FINGERPRINT_KEY), run_fingerprint(manifest, stored)
        )
        # A listed file that is gone: read the manifest again (it says what is wrong).
        photo.unlink()
        assert not same_manifest(
            stored := store.get_meta(FINGERPRINT_KEY), run_fingerprint(manifest, stored)
        )
    finally:
        store.close()


def test_a_manifest_without_local_files_keeps_its_plain_fingerprint(tmp_path: Path) -> None:
    manifest = edit_manifest(tmp_path, [("u", "https://cdn.shop.com/x.png")])
    store = StateStore.in_dir(tmp_path / "out")
    try:
        sync_as_run(store, manifest)
        stored = store.get_meta(FINGERPRINT_KEY)
        assert stored is not None and "local_files" not in stored
        assert same_manifest(stored, run_fingerprint(manifest, stored))
    finally:
        store.close()


def _results(out: Path, store: StateStore) -> dict[str, dict[str, str]]:
    path = write_results_csv(out, store)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def test_results_csv_shows_the_paths_as_written(tmp_path: Path) -> None:
    png(tmp_path / "photos" / "a.png")
    jpeg(tmp_path / "photos" / "b.jpg")
    out = tmp_path / "out"
    store = StateStore.in_dir(out)
    try:
        sync_as_run(store, edit_manifest(tmp_path, [("c1", "photos/a.png|photos/b.jpg")]))
        assert _results(out, store)["c1"]["image_urls"] == "photos/a.png|photos/b.jpg"
    finally:
        store.close()
    yaml = tmp_path / "m.yaml"
    yaml.write_text(
        f"jobs:\n  - id: y1\n    model: {EDIT_MODEL}\n"
        "    prompt: brighter\n    aspect_ratio: '1:1'\n"
        "    quality: basic\n    image_urls: [photos/a.png, photos/b.jpg]\n"
    )
    out2 = tmp_path / "out2"
    store = StateStore.in_dir(out2)
    try:
        with load_manifest_jobs(yaml, catalog=CATALOG) as jobs:
            sync_jobs(store, jobs, allow_changed=False)
        shown = _results(out2, store)["y1"]["image_urls"]
        assert "photos/a.png" in shown and "photos/b.jpg" in shown and "sha256" not in shown
    finally:
        store.close()
