"""Local input files through a whole run, against the simulator's upload host: uploaded
once by content, given to createTask as upload URLs (never paths or tokens), uploaded
again before they go stale, refreshed and resent once when a task could not fetch them,
and refused up front when no upload host is set. The key stays out of the state."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from liangxin_batch.cli._exit import exit_code_for
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._summary import RunSummary
from liangxin_batch.errors import ConfigError
from liangxin_batch.run._progress import NullObserver
from liangxin_batch.run._run import run_batch_async
from liangxin_batch.simulator import SimConfig, create_app, serve_in_thread
from tests.sim_support import sim_of
from tests.uploads_support import (
    EDIT,
    KEY,
    Batch,
    photo_files,
    photos_manifest,
    run_over_loopback,
)
from tests.virtual_time import run_virtual


def _shas(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in (folder / "photos").iterdir()}


def _image_inputs(creates: Sequence[Any]) -> list[str]:
    return [url for e in creates for url in (e.input or {}).get("image_urls", [])]


def _assert_no_key(out: Path) -> None:
    for name in ("state.db", "state.db-wal", "run.log", "results.csv", "report.html"):
        path = out / name
        if path.exists():
            assert KEY.encode() not in path.read_bytes(), name


# -- over real sockets ------------------------------------------------------------------


@pytest.mark.slow
def test_200_edit_jobs_over_20_files_upload_each_file_once_and_send_only_urls(
    tmp_path: Path,
) -> None:
    paths = photo_files(tmp_path, 20)
    manifest = photos_manifest(tmp_path, 200, paths)
    config = SimConfig(
        api_key=KEY,
        latency_scale=0.005,
        create_limit=400,
        create_window=1.0,
        poll_limit=400,
        poll_window=1.0,
    )
    app = create_app(config)
    sim = sim_of(app)
    settings = RunSettings(
        create_limit=400,
        create_window=1.0,
        poll_limit=400,
        poll_window=1.0,
        max_in_flight=200,
        poll_scale=0.005,
    )
    out = tmp_path / "out"
    summary, base_url = run_over_loopback(app, manifest, out, settings)
    assert summary.counts.get("succeeded") == 200, summary.counts
    # The simulator's ledger: 20 distinct files, each uploaded exactly once (five of
    # them under two names in the manifest).
    counts = sim.ledger.upload_counts_by_sha256()
    assert counts == dict.fromkeys(_shas(tmp_path), 1)
    assert len(counts) == 20
    creates = sim.ledger.creates()
    assert len(creates) == 200
    urls = _image_inputs(creates)
    assert len(urls) == 200 + 67  # one image each, a second for every third job
    assert all(u.startswith(f"{base_url}/tempfile/") for u in urls), urls[:3]
    sent = json.dumps([dict(e.input or {}) for e in creates])
    assert "file:sha256:" not in sent and "photos/" not in sent and str(tmp_path) not in sent
    # The stored inputs keep the tokens; the uploads table holds the URLs, not the key.
    db = sqlite3.connect(out / "state.db")
    stored = [json.loads(r[0]) for r in db.execute("SELECT input_json FROM jobs")]
    assert all(u.startswith("file:sha256:") for s in stored for u in s["image_urls"])
    uploads = db.execute("SELECT url, account FROM uploads").fetchall()
    db.close()
    assert len(uploads) == 20 and all(KEY not in url + account for url, account in uploads)
    _assert_no_key(out)


@pytest.mark.slow
def test_local_files_without_an_upload_host_exit_2_and_send_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIANGXIN_UPLOAD_BASE_URL", raising=False)
    manifest = photos_manifest(tmp_path, 4, photo_files(tmp_path, 2))
    app = create_app(SimConfig(api_key=KEY, latency_scale=0.01))
    sim = sim_of(app)
    with serve_in_thread(app) as base_url, pytest.raises(ConfigError) as caught:
        asyncio.run(
            run_batch_async(manifest, out_dir=tmp_path / "out", api_key=KEY, base_url=base_url)
        )
    message = str(caught.value)
    assert "LIANGXIN_UPLOAD_BASE_URL" in message and "--upload-base-url" in message
    assert "4 job(s)" in message and "nothing was sent" in message
    assert exit_code_for(caught.value) == 2
    assert sim.ledger.events == []  # no request of any kind


# -- in virtual time (the simulator in process, its clock the loop's) ------------------


def _events(out: Path, job_id: str) -> list[tuple[str, str]]:
    db = sqlite3.connect(out / "state.db")
    rows = db.execute(
        "SELECT event, detail FROM events WHERE job_id = ? AND event IS NOT NULL ORDER BY id",
        (job_id,),
    ).fetchall()
    db.close()
    return [(e, d) for e, d in rows]


@pytest.mark.slow
def test_uploads_that_expire_during_a_long_batch_are_uploaded_again_in_time(
    tmp_path: Path,
) -> None:
    """Uploads live 5 (virtual) minutes; the batch submits for about 10. No task fails
    for an expired input, and the ledger shows the files uploaded again."""
    paths = photo_files(tmp_path, 3)[:3]  # p00, copy-of-p00, p01: two distinct files
    manifest = photos_manifest(tmp_path, 60, paths)
    settings = RunSettings(
        create_limit=1,
        create_window=10.0,  # one create per 10 s: 60 jobs over ~10 minutes
        upload_lifetime=300.0,
        upload_margin=60.0,
    )
    out = tmp_path / "out"

    async def main() -> tuple[RunSummary, Batch]:
        # Tasks wait 15 s before they fetch their inputs (a tenth of 150 s), longer
        # than a create comes (10 s): a URL given with less than that left expires
        # before its task fetches it. The margin (60 s) is what keeps them all fetched.
        config = SimConfig(
            api_key=KEY, upload_lifetime_seconds=300.0, latency_range={"*": (150.0, 150.0)}, seed=5
        )
        batch = Batch(config)
        return await batch.run(manifest, out, settings), batch

    summary, batch = run_virtual(main)
    assert summary.counts.get("succeeded") == 60, summary.counts
    assert not summary.counts.get("failed")
    assert not any(e == "input_refresh" for j in range(60) for e, _ in _events(out, f"j{j:03d}"))
    counts = batch.sim.ledger.upload_counts_by_sha256()
    assert len(counts) == 2 and all(n >= 2 for n in counts.values()), counts
    # Every create named a URL still live at the time (the simulator would fail it).
    assert len(batch.sim.ledger.creates()) == 60
    _assert_no_key(out)


class _SubmittedBar(NullObserver):
    """What the bars' "submitted" bar would show: jobs past their createTask."""

    def __init__(self) -> None:
        self.count = 0

    def submitted(self, job_id: str) -> None:
        self.count += 1

    def taken_back(self, job_id: str) -> None:
        self.count -= 1


def _two_runs(
    tmp_path: Path, bar: _SubmittedBar | None = None
) -> tuple[Path, Batch, RunSummary, RunSummary]:
    """A first batch uploads a file; 10 virtual minutes later a second batch uses the
    same file, whose upload the client still takes as fresh (it plans for 24 h) while
    the simulator dropped it after 5 minutes."""
    paths = photo_files(tmp_path, 1)[:1]
    first = photos_manifest(tmp_path, 1, paths, name="first.csv")
    out = tmp_path / "out"
    settings = RunSettings()

    async def main() -> tuple[Batch, RunSummary, RunSummary]:
        batch = Batch(SimConfig(api_key=KEY, upload_lifetime_seconds=300.0, seed=2))
        one = await batch.run(first, out, settings)
        await asyncio.sleep(600)
        second = tmp_path / "second.csv"
        second.write_text(
            first.read_text() + f"late,{EDIT},a later edit,{paths[0]}\n", encoding="utf-8"
        )
        two = await batch.run(second, out, settings, bar)
        return batch, one, two

    batch, one, two = run_virtual(main)
    return out, batch, one, two


@pytest.mark.slow
def test_a_task_that_could_not_fetch_its_input_is_refreshed_and_resent_once(
    tmp_path: Path,
) -> None:
    bar = _SubmittedBar()
    out, batch, one, two = _two_runs(tmp_path, bar)
    assert one.counts.get("succeeded") == 1
    assert two.counts.get("succeeded") == 2, two.counts
    assert bar.count == 1  # the late job, once: its refresh took it back before resending
    (sha,) = _shas(tmp_path)
    assert batch.sim.ledger.upload_counts_by_sha256() == {sha: 2}  # the refresh's upload
    late = [e for e in batch.sim.ledger.creates() if e.input and "later" in e.input["prompt"]]
    assert len(late) == 2  # the failed task and its one resend
    events = [e for e, _ in _events(out, "late")]
    assert events.count("input_refresh") == 1
    assert events == [
        "submit",
        "created",
        "task_failed",
        "input_refresh",
        "submit",
        "created",
        "task_succeeded",
    ]
    refresh = dict(_events(out, "late"))["input_refresh"]
    assert "Failed to fetch input image" in refresh and "sent again once" in refresh


@pytest.mark.slow
def test_the_refresh_happens_once_only(tmp_path: Path) -> None:
    """Uploads the service can never fetch (the upload host's URLs are on a host it does
    not reach): the task fails to fetch, the job is refreshed and resent once, the
    resent task fails alike, and the job then stays failed (no third task)."""
    paths = photo_files(tmp_path, 1)[:1]
    manifest = photos_manifest(tmp_path, 1, paths)
    out = tmp_path / "out"

    async def main() -> tuple[Batch, RunSummary]:
        config = SimConfig(api_key=KEY, seed=2, foreign_inputs="fail")
        batch = Batch(config, upload_host="http://elsewhere:9000")
        return batch, await batch.run(manifest, out, RunSettings())

    batch, summary = run_virtual(main)
    assert summary.counts == {"failed": 1}
    creates = batch.sim.ledger.creates()
    assert len(creates) == 2
    events = _events(out, "j000")
    assert [e for e, _ in events] == [
        "submit",
        "created",
        "task_failed",
        "input_refresh",
        "submit",
        "created",
        "task_failed",
    ]
    assert "host not reachable" in events[-1][1]
    (sha,) = _shas(tmp_path)
    assert batch.sim.ledger.upload_counts_by_sha256() == {sha: 2}  # the one refresh
