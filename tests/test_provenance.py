"""Provenance sidecars and `--embed-metadata` copies: real runs over the simulator (a CSV
manifest, local input files uploaded to its upload host, files downloaded and verified),
the sidecars read back and checked against the state and the bytes on disk."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from liangxin_batch import RunSettings, RunSummary, run_batch_async
from liangxin_batch.core._local_files import token_sha256
from liangxin_batch.core._provenance import sidecar_path
from liangxin_batch.core._states import Event, JobState
from liangxin_batch.outputs._embed import EMBED_DIR, copy_path
from liangxin_batch.outputs._provenance import record_parameters
from liangxin_batch.simulator import SimConfig, create_app, upload_base_url
from liangxin_batch.state._store import FileRow, JobRow, StateStore
from tests.local_inputs_support import image_png
from tests.virtual_time import run_virtual

KEY = "sk-provenance-4242"
SIM_URL = "http://sim:8000"
MODEL = "nano-banana-2"  # prompts up to 20,000 characters, png or jpg, local inputs

#: Quotes, CJK, emoji, the control characters a manifest may hold, and length.
HOSTILE = [
    'say "hi", it\'s <b>bold</b> & {braces}: a, b',
    "猫が座っている 🐈‍⬛ 😀 mañana\tcafé\nsecond line\r\nthird",
    ("长" * 3000 + "😀" * 3000 + "ab, c: d\n" * 1000)[:20000],
]


def write_manifest(folder: Path) -> Path:
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    (folder / "photos" / "cat.png").write_bytes(image_png("red", 24))
    path = folder / "prompts.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "model", "prompt", "output_format", "image_input", "_subject"])
        out.writerow(["p-quotes", MODEL, HOSTILE[0], "png", "", "quotes"])
        out.writerow(["j-cjk", MODEL, HOSTILE[1], "jpg", "", "cjk"])
        out.writerow(["p-long", MODEL, HOSTILE[2], "png", "", "long"])
        out.writerow(["p-local", MODEL, "the cat, in blue", "png", "photos/cat.png", "local"])
    return path


def run(manifest: Path, out: Path, **settings: Any) -> RunSummary:
    async def main() -> RunSummary:
        loop = asyncio.get_running_loop()
        started = time.time() - loop.time()
        app = create_app(SimConfig(api_key=KEY, seed=4), clock=lambda: started + loop.time())
        transport = httpx.ASGITransport(app=app)
        return await run_batch_async(
            manifest,
            out_dir=out,
            settings=RunSettings(**settings),
            api_key=KEY,
            base_url=SIM_URL,
            transport=transport,
            download_transport=transport,
            upload_base_url=upload_base_url(SIM_URL),
            upload_transport=transport,
        )

    return run_virtual(main)


def state(out: Path) -> tuple[dict[str, JobRow], dict[str, list[FileRow]]]:
    store = StateStore.in_dir(out, readonly=True)
    try:
        jobs = {j.job_id: j for j in store.iter_jobs()}
        return jobs, {j: store.files_of(j) for j in jobs}
    finally:
        store.close()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def line_of(manifest: Path, job_id: str) -> int:
    """The physical line a job's row starts on (a quoted cell may span lines)."""
    text = manifest.read_text(encoding="utf-8")
    return text[: text.index(f"\n{job_id},") + 1].count("\n") + 1


def test_every_output_has_a_sidecar_true_to_the_state_and_the_bytes(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    out = tmp_path / "out"
    summary = run(manifest, out)
    assert summary.counts == {"succeeded": 4}, summary.counts
    jobs, files = state(out)
    seen = 0
    for job_id, job in jobs.items():
        assert job.state is JobState.DONE
        assert files[job_id]
        for f in files[job_id]:
            assert f.path is not None
            side = out / sidecar_path(f.path)
            record = json.loads(side.read_text(encoding="utf-8"))
            seen += 1
            assert record["job_id"] == job_id and record["model"] == MODEL
            assert record["task_id"] == job.task_id and record["attempt"] == job.attempt
            assert record["file"] == {"n": f.n + 1, "path": f.path}
            assert [
                (x["path"], x["sha256"], x["size"]) for x in record["files"]
            ] == [(g.path, sha256_file(out / (g.path or "")), (out / (g.path or "")).stat().st_size)
                  for g in files[job_id]]  # fmt: skip
            assert [x["sha256"] for x in record["files"]] == [g.sha256 for g in files[job_id]]
            assert record["manifest"]["file"] == str(manifest.resolve())
            assert record["manifest"]["line"] == line_of(manifest, job_id)
            assert record["manifest"]["index"] == job.idx
            assert record["manifest"]["columns"]["_subject"] == job.columns["_subject"]
            timings = record["timings"]
            assert timings["submitted_at"].endswith("Z") and timings["completed_at"]
            assert timings["cost_time_ms"] == job.cost_time
            assert timings["generation_seconds"] == job.generation_seconds
            charged = job.credits is not None
            assert record["credits"] == {
                "amount": job.credits if charged else job.credits_estimated,
                "basis": "charged" if charged else "estimated",
            }
            assert record["credits"]["amount"] is not None
            sent = {k: v for k, v in job.input.items() if k != "image_input"}
            assert {k: v for k, v in record["input"].items() if k != "image_input"} == sent
    assert seen == 4
    # The hostile prompts come back exactly, through JSON.
    prompts = {}
    for job_id in jobs:
        (f,) = files[job_id]
        prompts[job_id] = json.loads((out / sidecar_path(f.path or "")).read_text())
    assert [prompts[j]["input"]["prompt"] for j in ("p-quotes", "j-cjk", "p-long")] == HOSTILE
    # A local input: the path as the manifest wrote it, and its sha256; never the
    # temporary upload URL, nor the key anywhere.
    local = prompts["p-local"]
    token = jobs["p-local"].input["image_input"][0]
    sha = token_sha256(token)
    assert local["input"]["image_input"] == ["photos/cat.png"]
    assert local["local_inputs"] == [
        {
            "sha256": sha,
            "path": "photos/cat.png",
            "size": (tmp_path / "photos/cat.png").stat().st_size,
            "media_type": "image/png",
        }
    ]
    assert sha256_file(tmp_path / "photos/cat.png") == sha
    for side in out.rglob("*.json"):
        text = side.read_text(encoding="utf-8")
        assert KEY not in text and "/upload" not in text, side
    # Off by default: no copies.
    assert not (out / EMBED_DIR).exists()
    assert not list(out.rglob("*.part"))


def test_a_run_killed_between_its_files_and_their_sidecar_writes_it_on_resume(
    tmp_path: Path,
) -> None:
    manifest = write_manifest(tmp_path)
    out = tmp_path / "out"
    run(manifest, out)
    _, files = state(out)
    (killed,) = files["p-quotes"]
    (deleted,) = files["j-cjk"]
    # What a kill between the file and its sidecar leaves: the job `succeeded`, its file
    # recorded and on disk, no sidecar (done comes only after the sidecars).
    store = StateStore.in_dir(out)
    assert store.transition("p-quotes", Event.OUTPUT_MISSING, message="test: the kill")
    store.close()
    os.unlink(out / sidecar_path(killed.path or ""))
    # A done job's sidecar deleted by hand (or made by a version before sidecars).
    os.unlink(out / sidecar_path(deleted.path or ""))
    untouched = out / sidecar_path(files["p-long"][0].path or "")
    before = untouched.stat().st_mtime_ns
    output = out / (killed.path or "")
    output_stat = output.stat()

    summary = run(manifest, out)

    assert summary.exit_code == 0
    jobs, _ = state(out)
    assert all(j.state is JobState.DONE for j in jobs.values())
    for f in (killed, deleted):
        record = json.loads((out / sidecar_path(f.path or "")).read_text(encoding="utf-8"))
        assert record["files"][0]["sha256"] == f.sha256 == sha256_file(out / (f.path or ""))
    # The file was verified, not fetched again; an existing sidecar was not rewritten.
    assert output.stat().st_mtime_ns == output_stat.st_mtime_ns
    assert untouched.stat().st_mtime_ns == before


def test_embed_metadata_writes_copies_and_never_touches_the_originals(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    out = tmp_path / "out"
    summary = run(manifest, out, embed_metadata=True)
    assert summary.counts == {"succeeded": 4}
    jobs, files = state(out)
    for job_id in jobs:
        (f,) = files[job_id]
        path = f.path or ""
        original = out / path
        # The original: the bytes and mtime the download recorded.
        assert sha256_file(original) == f.sha256
        assert original.stat().st_mtime_ns == f.mtime_ns
        record = json.loads((out / sidecar_path(path)).read_text(encoding="utf-8"))
        want = record_parameters(record)
        assert record["input"]["prompt"] in want
        copy = out / copy_path(path)
        assert copy.relative_to(out).parts[0] == EMBED_DIR
        assert copy.relative_to(out / EMBED_DIR) == original.relative_to(out / "outputs")
        with Image.open(copy) as image, Image.open(original) as plain:
            assert image.size == plain.size
            if path.endswith(".png"):
                assert image.text["parameters"] == want  # type: ignore[attr-defined]
                whole = json.loads(image.text["liangxin-batch"])  # type: ignore[attr-defined]
                assert whole["job_id"] == job_id and whole["files"] == record["files"]
            else:
                comment = image.getexif().get_ifd(0x8769)[0x9286]
                assert comment[:8] == b"UNICODE\x00"
                assert comment[8:].decode("utf-16-be") == want
            image.load()
            plain.load()
            assert image.tobytes() == plain.tobytes()  # the same pixels: not re-encoded
    assert "p-long" in jobs and "j-cjk" in jobs


def test_an_embed_copy_deleted_is_made_again_by_the_next_run(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    out = tmp_path / "out"
    run(manifest, out, embed_metadata=True)
    _, files = state(out)
    copy = out / copy_path(files["p-quotes"][0].path or "")
    copy.unlink()
    run(manifest, out, embed_metadata=True)
    with Image.open(copy) as image:
        assert image.text["parameters"].startswith(HOSTILE[0])  # type: ignore[attr-defined]


def test_sidecars_are_written_off_the_event_loop(tmp_path: Path) -> None:
    """The write happens in a worker thread: the loop's thread never opens a sidecar."""
    manifest = write_manifest(tmp_path)
    out = tmp_path / "out"
    opened: list[tuple[str, bool]] = []
    original_open = Path.open

    def watching(self: Path, *args: Any, **kwargs: Any) -> Any:
        # A sidecar's temp (report/data's cache.json is written the same way: not one).
        if self.name.endswith(".part") and ".json." in self.name and "report" not in self.parts:
            try:
                asyncio.get_running_loop()
                on_loop = True
            except RuntimeError:
                on_loop = False
            opened.append((self.name, on_loop))
        return original_open(self, *args, **kwargs)

    Path.open = watching  # type: ignore[method-assign]
    try:
        run(manifest, out)
    finally:
        Path.open = original_open  # type: ignore[method-assign]
    assert len(opened) == 4
    assert not any(on_loop for _, on_loop in opened), opened


def test_the_state_answers_for_a_stem_under_any_extension(tmp_path: Path) -> None:
    store = StateStore.in_dir(tmp_path)
    try:
        store.upsert_jobs([(j, i, MODEL, "{}", "{}", "h") for i, j in enumerate("abc")])
        store.record_file(FileRow("a", 0, "http://x/a", "outputs/m/X.png", "0", 1, 1))
        store.record_file(FileRow("b", 0, "http://x/b", "outputs/m/x.b.png", "0", 1, 1))
        store.record_file(FileRow("c", 0, "http://x/c", "outputs/m/x/y.png", "0", 1, 1))
        assert store.path_holders("outputs/m/x.mp4") == [("a", 0)]
        assert store.path_holders("outputs/M/X.PNG") == [("a", 0)]
        assert store.path_holders("outputs/m/x.b.webp") == [("b", 0)]
        # "x/y.png" is inside a folder x: not a holder of the stem x.
        assert store.path_holders("outputs/m/x.json") == [("a", 0)]
    finally:
        store.close()


def test_outputs_an_earlier_version_named_alike_get_a_sidecar_each(tmp_path: Path) -> None:
    """Recorded before claims covered stems, x.png (job a) and x.mp4 (job b) would
    share x.json: each gets its name with its extension (x~png.json) instead."""
    from liangxin_batch.outputs._sidecars import read_job, write_sidecars

    store = StateStore.in_dir(tmp_path)
    try:
        store.upsert_jobs([(j, i, MODEL, '{"prompt": "p"}', "{}", "h") for i, j in enumerate("ab")])
        for job_id, ext in (("a", ".png"), ("b", ".mp4")):
            rel = f"outputs/m/x{ext}"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(job_id.encode())
            store.update(job_id, result_urls=json.dumps([f"http://x/{job_id}"]))
            sha = hashlib.sha256(job_id.encode()).hexdigest()
            store.record_file(FileRow(job_id, 0, f"http://x/{job_id}", rel, sha, 1, 1))
        for job_id in "ab":
            job = read_job(store, job_id)
            assert job is not None
            write_sidecars(tmp_path, job)
    finally:
        store.close()
    assert not (tmp_path / "outputs/m/x.json").exists()
    png = json.loads((tmp_path / "outputs/m/x~png.json").read_text())
    mp4 = json.loads((tmp_path / "outputs/m/x~mp4.json").read_text())
    assert (png["job_id"], mp4["job_id"]) == ("a", "b")


def test_a_sidecar_that_cannot_be_written_fails_its_job_like_a_file(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    out = tmp_path / "out"
    StateStore.in_dir(out).close()
    # Something the user left where p-quotes's sidecar goes: a folder.
    (out / "outputs" / MODEL / "p-quotes.json").mkdir(parents=True)
    summary = run(manifest, out)
    jobs, files = state(out)
    assert jobs["p-quotes"].state is JobState.DOWNLOAD_FAILED
    message = jobs["p-quotes"].error_message or ""
    assert "provenance sidecar" in message and "p-quotes.json" in message, message
    assert files["p-quotes"]  # its file is fine and kept
    assert all(jobs[j].state is JobState.DONE for j in ("j-cjk", "p-long", "p-local"))
    assert summary.exit_code != 0
    assert not list(out.rglob("*.part"))


def test_a_changed_job_sets_its_sidecar_aside_with_its_file(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    out = tmp_path / "out"
    run(manifest, out, embed_metadata=True)
    _, files = state(out)
    rel = files["p-quotes"][0].path or ""
    manifest.write_text(
        manifest.read_text(encoding="utf-8").replace("{braces}", "{new braces}"), encoding="utf-8"
    )
    summary = run(manifest, out, allow_changed=True)
    assert summary.exit_code == 0
    kept = out / "superseded" / "p-quotes" / "attempt-1"
    old = json.loads((kept / Path(sidecar_path(rel)).name).read_text(encoding="utf-8"))
    assert old["input"]["prompt"] == HOSTILE[0]
    assert (kept / EMBED_DIR / Path(rel).name).is_file()
    _, files = state(out)
    new = json.loads((out / sidecar_path(files["p-quotes"][0].path or "")).read_text("utf-8"))
    assert new["input"]["prompt"] == HOSTILE[0].replace("{braces}", "{new braces}")
    assert (old["attempt"], new["attempt"]) == (1, 2)


def test_a_state_from_before_migration_012_reads_its_manifest_once_more(tmp_path: Path) -> None:
    """Its jobs have no manifest line yet: the fingerprint is forgotten, so the next run
    syncs the manifest again and records where each job came from."""
    import sqlite3

    manifest = write_manifest(tmp_path)
    out = tmp_path / "out"
    run(manifest, out)
    db = sqlite3.connect(out / "state.db")
    with db:  # the state as version 011 left it
        db.execute("ALTER TABLE jobs DROP COLUMN source_id")
        db.execute("ALTER TABLE jobs DROP COLUMN source_line")
        db.execute("DROP TABLE manifest_sources")
        db.execute("DELETE FROM _migrations WHERE name = '012_manifest_sources'")
    assert db.execute("SELECT 1 FROM meta WHERE key = 'manifest_fingerprint'").fetchone()
    db.close()

    store = StateStore.in_dir(out)
    try:
        assert store.get_meta("manifest_fingerprint") is None
        assert store.job_source("p-quotes") is None
    finally:
        store.close()
    run(manifest, out)
    store = StateStore.in_dir(out, readonly=True)
    try:
        assert store.job_source("p-quotes") == (str(manifest.resolve()), 2)
        assert store.get_meta("manifest_fingerprint") is not None
    finally:
        store.close()


def _recorded(store: StateStore, out: Path, files: dict[str, list[str | None]]) -> None:
    """Jobs whose files are on disk and recorded at the given paths (None: a file of
    the task recorded without a path)."""
    store.upsert_jobs([(j, i, MODEL, '{"prompt": "p"}', "{}", "h") for i, j in enumerate(files)])
    for job_id, paths in files.items():
        urls = [f"http://x/{job_id}/{n}" for n in range(len(paths))]
        store.update(job_id, result_urls=json.dumps(urls))
        for n, rel in enumerate(paths):
            if rel is None:
                store.record_file(FileRow(job_id, n, urls[n], None, None, None))
                continue
            data = f"{job_id} {n}".encode()
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            store.record_file(FileRow(job_id, n, urls[n], rel, sha, len(data), 1))


def _sidecars_by_job(out: Path) -> dict[str, list[str]]:
    """job id -> the sidecars (relative to `out`) that say they are of its files."""
    found: dict[str, list[str]] = {}
    for side in sorted(out.rglob("*.json")):
        record = json.loads(side.read_text(encoding="utf-8"))
        found.setdefault(record["job_id"], []).append(str(side.relative_to(out)))
    return found


def test_a_shared_stems_sidecar_is_never_another_outputs(tmp_path: Path) -> None:
    """x.png and x.mp4 (recorded by an earlier version) have a sidecar of their own each,
    and neither is the sidecar x.png.json of the output x.png.mp4."""
    from liangxin_batch.outputs._sidecars import read_job, write_sidecars

    store = StateStore.in_dir(tmp_path)
    try:
        paths = {"a": "outputs/m/x.png", "b": "outputs/m/x.mp4", "c": "outputs/m/x.png.mp4"}
        _recorded(store, tmp_path, {job_id: [rel] for job_id, rel in paths.items()})
        for job_id in paths:
            job = read_job(store, job_id)
            assert job is not None
            write_sidecars(tmp_path, job)
    finally:
        store.close()
    sides = _sidecars_by_job(tmp_path)
    assert sorted(sides) == ["a", "b", "c"], sides
    assert sides["c"] == [sidecar_path(paths["c"])]
    assert all(len(names) == 1 for names in sides.values()), sides


def test_the_resume_repairs_a_missing_sidecar_another_outputs_name_does_not_hide(
    tmp_path: Path,
) -> None:
    """a.png's sidecar is a.json; a.png.json is the sidecar of the output a.png.mp4, and
    must not count as a.png's when a.json is gone."""
    from liangxin_batch.outputs._sidecars import read_job, write_sidecars
    from liangxin_batch.run._provenance import Provenance

    store = StateStore.in_dir(tmp_path)
    try:
        _recorded(store, tmp_path, {"a": ["outputs/m/a.png"], "c": ["outputs/m/a.png.mp4"]})
        for job_id in "ac":
            job = read_job(store, job_id)
            assert job is not None
            write_sidecars(tmp_path, job)
        (tmp_path / "outputs/m/a.json").unlink()
        records = [f for j in "ac" for f in store.files_of(j)]
        repaired = asyncio.run(Provenance(store=store, out_dir=tmp_path).repair(records))
    finally:
        store.close()
    assert repaired == 1
    assert _sidecars_by_job(tmp_path) == {
        "a": ["outputs/m/a.json"],
        "c": ["outputs/m/a.png.json"],
    }


def test_a_sidecar_names_its_files_own_number(tmp_path: Path) -> None:
    """A file of the task recorded without a path has no sidecar; the next file's says
    its own number (2), not its place among those written (1)."""
    from liangxin_batch.outputs._sidecars import read_job, write_sidecars

    store = StateStore.in_dir(tmp_path)
    try:
        _recorded(store, tmp_path, {"a": [None, "outputs/m/a_2.png"]})
        job = read_job(store, "a")
        assert job is not None
        write_sidecars(tmp_path, job)
    finally:
        store.close()
    record = json.loads((tmp_path / "outputs/m/a_2.json").read_text(encoding="utf-8"))
    assert record["file"] == {"n": 2, "path": "outputs/m/a_2.png"}
    assert [f["n"] for f in record["files"]] == [2]


def test_a_missing_sidecar_of_a_file_whose_mtime_changed_is_written_by_the_next_run(
    tmp_path: Path,
) -> None:
    """A folder copied without its times (or restored from a backup): the walk hashes the
    files whose mtime changed, finds them the same, and must write their missing
    sidecars then, not one run later (a tester's find: it took two runs)."""
    manifest = write_manifest(tmp_path)
    out = tmp_path / "out"
    run(manifest, out)
    _, files = state(out)
    (f,) = files["p-quotes"]
    os.unlink(out / sidecar_path(f.path or ""))
    for recs in files.values():
        for rec in recs:
            os.utime(out / (rec.path or ""), ns=(1, 1_000_000_000))  # the bytes stay

    assert run(manifest, out).exit_code == 0

    record = json.loads((out / sidecar_path(f.path or "")).read_text(encoding="utf-8"))
    assert record["files"][0]["sha256"] == f.sha256
