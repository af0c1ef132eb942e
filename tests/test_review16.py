"""Review of issue 16: regression tests for the defects the review found (each failed
before its fix). Each test's docstring says what it guards against: the defect it once
caught."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.manifest._fingerprint import same_manifest
from liangxin_batch.manifest._manifest import validate_manifest
from liangxin_batch.run._upload_client import UploadClient
from liangxin_batch.simulator import SimConfig
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import FINGERPRINT_KEY
from tests.local_inputs_support import edit_manifest as state_manifest
from tests.local_inputs_support import png, run_fingerprint, sync_as_run
from tests.uploads_support import KEY, Batch, photo_files, photos_manifest
from tests.virtual_time import run_virtual


@pytest.mark.slow
def test_an_answer_expiry_inside_the_margin_does_not_upload_forever(tmp_path: Path) -> None:
    """Guards against uploading one file forever when the host's own expiresAt (5
    minutes here; e.g. 24 h against a user's 30 h margin for a 3 d lifetime) is closer
    than the margin: a fresh upload was never `fresh`, so _upload_then_submit uploaded,
    took a turn, found it stale, gave the turn back and uploaded again, without end. It
    must end (use it, or refuse with a message)."""
    manifest = photos_manifest(tmp_path, 1, photo_files(tmp_path, 1)[:1])
    out = tmp_path / "out"

    async def main() -> Batch:
        config = SimConfig(
            api_key=KEY, upload_lifetime_seconds=300.0, upload_answer="file_url", seed=3
        )
        batch = Batch(config)
        try:
            async with asyncio.timeout(3600):  # one virtual hour
                await batch.run(manifest, out, RunSettings())
        except TimeoutError:
            pass
        return batch

    batch = run_virtual(main)
    uploads = sum(batch.sim.ledger.upload_counts_by_sha256().values())
    assert uploads <= 2, f"{uploads} uploads of one file in one virtual hour"


def _stored_fingerprint(tmp_path: Path, manifest: Path) -> str | None:
    """Sync once as `run` does: the fingerprint it stores."""
    store = StateStore.in_dir(tmp_path / "out")
    try:
        sync_as_run(store, manifest)
        return store.get_meta(FINGERPRINT_KEY)
    finally:
        store.close()


def test_a_symlinked_folder_pointed_at_other_photos_is_read_again(tmp_path: Path) -> None:
    """Guards against a fingerprint that listed each file by its *resolved* path:
    `photos -> shoot-1` then `photos -> shoot-2` (other bytes under the same names)
    still statted shoot-1, so the resume skipped validation and sent the old photos."""
    png(tmp_path / "shoot-1" / "shoe.png")
    png(tmp_path / "shoot-2" / "shoe.png", b"a different shoot of the shoe, longer")
    os.symlink("shoot-1", tmp_path / "photos")
    manifest = state_manifest(tmp_path, [("shoe", "photos/shoe.png")])
    stored = _stored_fingerprint(tmp_path, manifest)
    os.remove(tmp_path / "photos")
    os.symlink("shoot-2", tmp_path / "photos")
    assert not same_manifest(stored, run_fingerprint(manifest, stored))


def test_an_edit_that_keeps_size_and_mtime_is_read_again(tmp_path: Path) -> None:
    """Guards against an edit the fingerprint did not see: same size, mtime put back
    (cp -p, rsync -t, touch -r), the fingerprint's (size, mtime_ns) matched, validation
    was skipped, and the upload then refused the file as changed ("run again so the
    manifest is read anew") on every run: stuck."""
    photo = png(tmp_path / "photos" / "shoe.png", b"version one of the shoe")
    manifest = state_manifest(tmp_path, [("shoe", "photos/shoe.png")])
    stored = _stored_fingerprint(tmp_path, manifest)
    before = os.stat(photo)
    png(photo, b"version two of the shoe")  # same length
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(photo).st_size == before.st_size
    assert not same_manifest(stored, run_fingerprint(manifest, stored))


@pytest.mark.slow
def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    """Guards against checking the size limit only after hashing the whole file: an
    8 GiB (sparse) file for a 10 MB field took ~20 s to refuse (a 100 GB disk image:
    minutes). st_size says it at once."""
    big = tmp_path / "big.png"
    with big.open("wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.truncate(8 << 30)
    manifest = state_manifest(tmp_path, [("big", "big.png")])
    started = time.monotonic()
    report = validate_manifest(manifest, catalog=default_catalog())
    took = time.monotonic() - started
    assert report.total_problems and "MB" in str(report.problems[0])
    assert took < 2.0, f"{took:.1f}s to refuse a file by its size"


@pytest.mark.slow
def test_uploads_that_go_stale_at_every_turn_leave_the_job_pending_not_looping(
    tmp_path: Path,
) -> None:
    """Guards against a job that uploaded without end: uploads live 5 minutes and the
    rate lets one createTask through every 10, so each time the second job's turn comes
    its upload is stale, the turn goes back unused and the file is uploaded again.
    However that comes about, the uploads a job makes for one createTask are bounded:
    the job is left pending with a message, the run ends."""
    paths = photo_files(tmp_path, 2)
    manifest = photos_manifest(tmp_path, 2, [paths[0], paths[2]])  # p00, p01: distinct
    out = tmp_path / "out"
    settings = RunSettings(
        create_limit=1, create_window=600.0, upload_lifetime=300.0, upload_margin=60.0
    )

    async def main() -> tuple[Batch, RunSummary | None]:
        batch = Batch(SimConfig(api_key=KEY, upload_lifetime_seconds=300.0, seed=4))
        try:
            async with asyncio.timeout(6 * 3600):  # six virtual hours
                return batch, await batch.run(manifest, out, settings)
        except TimeoutError:
            return batch, None

    batch, summary = run_virtual(main)
    uploads = batch.sim.ledger.upload_counts_by_sha256()
    assert summary is not None, f"still uploading after six virtual hours: {uploads}"
    assert max(uploads.values()) <= 3, uploads
    assert summary.counts.get("pending") == 1, summary.counts


def test_a_file_found_changed_at_upload_makes_the_next_run_read_the_manifest(
    tmp_path: Path,
) -> None:
    """Guards against a stored fingerprint that outlived a refused upload: the sync
    stored a fingerprint; the photo changes before its upload (the upload refuses it:
    "run again so the manifest is read anew"). The stored fingerprint must go, or the
    next run skips reading the manifest and is refused again."""
    photo = png(tmp_path / "photos" / "shoe.png", b"version one of the shoe")
    manifest = state_manifest(tmp_path, [("shoe", "photos/shoe.png")])
    out = tmp_path / "out"

    async def main() -> tuple[RunSummary, str | None]:
        batch = Batch(SimConfig(api_key=KEY, seed=6))
        store = StateStore.in_dir(out, wall_clock=batch.wall)
        try:
            sync_as_run(store, manifest)
            assert store.get_meta(FINGERPRINT_KEY) is not None
            png(photo, b"version two of the shoe, edited after the sync")
            summary = await batch.run_store(store, RunSettings())
            return summary, store.get_meta(FINGERPRINT_KEY)
        finally:
            store.close()

    summary, fingerprint = run_virtual(main)
    assert summary.counts.get("pending") == 1, summary.counts
    assert fingerprint is None


@pytest.mark.slow
def test_the_simulator_fetches_inputs_as_a_task_leaves_waiting_not_at_create(
    tmp_path: Path,
) -> None:
    """Guards against a simulator that fetched inputs at createTask: the service
    fetches a task's inputs when it starts (after it waited). Without a margin, URLs
    given in the last seconds of their life expire before their tasks fetch them: the
    simulator must fail those tasks (with the margin,
    test_uploads_that_expire_during_a_long_batch_are_uploaded_again_in_time, none)."""
    paths = photo_files(tmp_path, 3)[:3]
    manifest = photos_manifest(tmp_path, 60, paths)
    settings = RunSettings(
        create_limit=1, create_window=10.0, upload_lifetime=300.0, upload_margin=0.0
    )
    out = tmp_path / "out"

    async def main() -> RunSummary:
        config = SimConfig(
            api_key=KEY, upload_lifetime_seconds=300.0, latency_range={"*": (150.0, 150.0)}, seed=5
        )
        return await Batch(config).run(manifest, out, settings)

    run_virtual(main)
    db = sqlite3.connect(out / "state.db")
    try:
        (refreshed,) = db.execute(
            "SELECT COUNT(*) FROM events WHERE event = 'input_refresh'"
        ).fetchone()
    finally:
        db.close()
    assert refreshed > 0


def test_counting_a_jobs_input_refreshes_walks_only_its_refresh_events(tmp_path: Path) -> None:
    """Guards against a count that walked every `pending` event: asked for every failed
    task of a batch with local files, it must look at that job's refresh events only
    (a partial index)."""
    store = StateStore.in_dir(tmp_path)
    try:
        seen: list[str] = []
        store.sqlite.set_trace_callback(seen.append)
        assert store.input_refreshes("j00001") == 0
        store.sqlite.set_trace_callback(None)
        (sql,) = [s for s in seen if "events" in s]
        plan = "\n".join(r[3] for r in store.db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "events_input_refresh" in plan, plan
    finally:
        store.close()


@pytest.mark.slow
def test_a_refresh_and_the_forgetting_of_its_uploads_commit_together(tmp_path: Path) -> None:
    """Guards against a refresh committed apart from the forgetting of its upload: a
    task could not fetch its input; the refresh (the job's one) and the dropping of the
    upload it was given must commit as one. A write that fails at the drop (standing
    in for a kill there: a trigger in the state refuses it) must not leave the refresh
    spent and the old upload kept, which the resend would reuse."""
    paths = photo_files(tmp_path, 1)[:1]
    first = photos_manifest(tmp_path, 1, paths, name="first.csv")
    second = tmp_path / "second.csv"
    second.write_text(
        first.read_text() + f"late,google/nano-banana-edit,a later edit,{paths[0]}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"

    async def main() -> BaseException | None:
        batch = Batch(SimConfig(api_key=KEY, upload_lifetime_seconds=300.0, seed=2))
        await batch.run(first, out, RunSettings())
        await asyncio.sleep(600)  # the simulator dropped the upload; the state keeps it
        db = sqlite3.connect(out / "state.db")
        db.execute(
            "CREATE TRIGGER no_forget BEFORE DELETE ON uploads"
            " BEGIN SELECT RAISE(ABORT, 'killed while forgetting'); END"
        )
        db.commit()
        db.close()
        try:
            await batch.run(second, out, RunSettings())
        except Exception as err:  # the refused write ends the run
            return err
        return None

    err = run_virtual(main)
    assert err is not None and "killed while forgetting" in str(err)
    db = sqlite3.connect(out / "state.db")
    try:
        refreshes = db.execute(
            "SELECT COUNT(*) FROM events WHERE job_id = 'late' AND event = 'input_refresh'"
        ).fetchone()[0]
        kept = db.execute("SELECT COUNT(*) FROM uploads").fetchone()[0]
    finally:
        db.close()
    assert (refreshes, kept) == (0, 1), "the refresh was spent and the old upload kept"


def _hostile_upload_host(answer: dict[str, object]) -> httpx.MockTransport:
    """An upload host (not ours: a stand-in for a misbehaving one) that answers every
    upload with `answer` as its data."""

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": True, "code": 200, "msg": "ok", "data": answer})

    return httpx.MockTransport(handle)


def _run_with_upload_host(tmp_path: Path, jobs: int, upload: httpx.MockTransport) -> RunSummary:
    """A run of `jobs` edit jobs over one local file, uploads going to `upload`."""
    manifest = photos_manifest(tmp_path, jobs, photo_files(tmp_path, 1)[:1])
    out = tmp_path / "out"

    async def main() -> RunSummary:
        batch = Batch(SimConfig(api_key=KEY, seed=7))
        store = StateStore.in_dir(out, wall_clock=batch.wall)
        sync_as_run(store, manifest)
        try:
            async with asyncio.timeout(3600):
                return await batch.run_store(
                    store,
                    RunSettings(),
                    upload_base="http://uploads.example",
                    upload_transport=upload,
                )
        finally:
            store.close()

    return run_virtual(main)


def test_an_upload_url_holding_the_key_stops_submitting_with_a_clear_reason(
    tmp_path: Path,
) -> None:
    """Guards against a run that ended on "unexpected ConfigError" (or left a wait
    unresolved) when the host answers a URL with the API key in it: the upload is
    refused (the URL neither stored nor sent), the run stops submitting and says why,
    every job waiting for that upload is told, and nothing is created."""
    host = _hostile_upload_host({"downloadUrl": f"https://files.example/x.png?key={KEY}"})
    summary = _run_with_upload_host(tmp_path, 3, host)
    assert summary.counts == {"pending": 3}, summary.counts
    assert summary.stopped_reason is not None
    assert "holds the API key" in summary.stopped_reason
    assert KEY not in summary.stopped_reason


class _Answer(httpx.AsyncByteStream):
    """An upload host's answer body: `pieces` of `piece`, `pause` (virtual) seconds
    apart; counts what it gave."""

    def __init__(self, head: bytes, piece: bytes, pieces: int, tail: bytes, pause: float) -> None:
        self.head, self.piece, self.pieces, self.tail, self.pause = head, piece, pieces, tail, pause
        self.given = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in (self.head, *([self.piece] * self.pieces), self.tail):
            if self.pause:
                await asyncio.sleep(self.pause)
            self.given += len(part)
            yield part


def _upload_against(tmp_path: Path, answer: _Answer) -> tuple[BaseException | None, float]:
    """One upload of a small PNG to a host answering `answer`: its error, and how long
    it took (virtual seconds)."""
    from liangxin_batch.core._local_files import LocalFile

    data = png(tmp_path / "shoe.png").read_bytes()
    file = LocalFile(
        hashlib.sha256(data).hexdigest(), len(data), "image/png", str(tmp_path / "shoe.png"), "x"
    )

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "application/json"}, stream=answer)

    async def main() -> tuple[BaseException | None, float]:
        client = UploadClient(
            upload_base_url="http://uploads.example",
            api_key=KEY,
            settings=RunSettings(upload_retries=1),
            transport=httpx.MockTransport(handle),
        )
        started = asyncio.get_running_loop().time()
        try:
            await client.upload(file)
        except Exception as err:
            return err, asyncio.get_running_loop().time() - started
        finally:
            await client.aclose()
        return None, asyncio.get_running_loop().time() - started

    return run_virtual(main)


_OK_HEAD = b'{"success": true, "code": 200, "msg": "ok", "data": {"downloadUrl": '
_OK_HEAD += b'"https://files.example/x.png", "pad": "'


def test_an_upload_answer_is_read_up_to_a_mebibyte_only(tmp_path: Path) -> None:
    """Guards against taking an upload answer into memory whole: a host answering
    64 MiB is refused after at most a couple of MiB read."""
    answer = _Answer(_OK_HEAD, b"x" * (1 << 20), 64, b'"}}', 0.0)
    err, _ = _upload_against(tmp_path, answer)
    assert err is not None and "MiB" in str(err), err
    assert answer.given <= 3 << 20, answer.given


def test_an_upload_answer_dripped_slowly_is_given_up_on(tmp_path: Path) -> None:
    """Guards against waiting hours on a dripped answer: a host giving its answer a
    byte every 30 s (each read within the read timeout) is given up on by the attempt's
    own deadline."""
    answer = _Answer(_OK_HEAD, b"x", 2000, b'"}}', 30.0)
    err, took = _upload_against(tmp_path, answer)
    assert err is not None and took < 900, (err, took)
