"""report.html: its summary, its data files (content, caching by segment versions, the
files check), and the `chromium` fixture the browser tests share
(tests/test_report_browser.py drives the page)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from liangxin_batch.cli import main
from liangxin_batch.core._states import JobState
from liangxin_batch.outputs._gallery import LiveReport, write_report_html, write_reports
from liangxin_batch.outputs._report_data import DATA_DIR, READER_KEEP_SECONDS, ReportData
from liangxin_batch.outputs._report_shards import SHORT
from liangxin_batch.state._migrations import SEGMENT_JOBS
from liangxin_batch.state._store import FileRow, StateStore
from tests.apt_support import apt_install_or_skip
from tests.report_bulk_support import build_big_state
from tests.report_state_support import job_rows, percentile
from tests.state_support import drive

T0 = 1_750_000_000.0
XSS = (
    "<script>document.body.setAttribute('data-pwned','1')</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"> a fox & a hound"
)


def png(path: Path, size: tuple[int, int], colour: str) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "PNG")
    return path.read_bytes()


def add(
    store: StateStore,
    out: Path,
    i: int,
    state: JobState,
    *,
    model: str = "google/nano-banana",
    prompt: str = "a lighthouse at dusk",
    files: tuple[str, ...] = (),
    error: str | None = None,
) -> None:
    job_id = f"job-{i}"
    store.upsert_jobs(
        [(job_id, i, model, json.dumps({"prompt": prompt, "aspect_ratio": "16:9"}),
          json.dumps({"prompt": prompt}), f"h{i}")]
    )  # fmt: skip
    urls = [f"https://cdn.test/{job_id}/{n}" for n in range(max(1, len(files)))]
    drive(
        store,
        job_id,
        state,
        task_id=f"t{i}",
        submitted_at=T0 + i,
        completed_at=T0 + i + 10 + i,
        cost_time=(10.0 + i) * 1000,
        credits=4.0 if error is None else 0.0,
        result_urls=urls,
        error_code="500" if error else None,
        error_message=error,
    )
    for n, rel in enumerate(files):
        store.record_file(FileRow(job_id, n, urls[n], rel, "sha", (out / rel).stat().st_size))


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[tuple[Path, StateStore]]:
    out = tmp_path / "run"
    store = StateStore.in_dir(out)
    png(out / "outputs/nano/job-0.png", (1600, 900), "#d9480f")
    png(out / "outputs/z/job-1.png", (600, 800), "#1c7ed6")
    png(out / "outputs/z/job-1_2.png", (600, 800), "#37b24d")
    (out / "outputs/k/job-2.mp4").parent.mkdir(parents=True)
    (out / "outputs/k/job-2.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (out / "outputs/nano/job-6.png").write_bytes(b"not a png")
    add(store, out, 0, JobState.DONE, prompt=XSS, files=("outputs/nano/job-0.png",))
    add(store, out, 1, JobState.DONE, model="z-image",
        files=("outputs/z/job-1.png", "outputs/z/job-1_2.png"))  # fmt: skip
    add(store, out, 2, JobState.DONE, model="kling-3.0/video", files=("outputs/k/job-2.mp4",))
    add(store, out, 3, JobState.FAILED, error="Internal error during generation")
    add(store, out, 4, JobState.UNKNOWN, error="the reply to createTask was lost")
    add(store, out, 5, JobState.SUCCEEDED)
    add(store, out, 6, JobState.DONE, files=("outputs/nano/job-6.png",))
    yield out, store
    store.close()


def _data(out: Path) -> dict[str, Any]:
    """The report's data files, decoded: meta, index and rows by segment, long prompts."""
    folder = out / DATA_DIR
    html = (out / "report.html").read_text("utf-8")
    found = re.search(r'<script src="report/data/(meta-[0-9a-fr-]+\.js)"', html)
    assert found, "report.html names its meta file"
    meta = _call(folder / found.group(1), "meta")[0]
    index = {s["seg"]: _call(folder / s["index"], "index")[1] for s in meta["segs"]}
    rows = {
        s["seg"]: [r for name in s["rows"] for r in _call(folder / name, "rows")[2]]
        for s in meta["segs"]
    }
    return {"meta": meta, "index": index, "rows": rows}


def _call(path: Path, name: str) -> list[Any]:
    """The arguments of a data file's `LX.<name>(...)` call (JSON, as the page reads it)."""
    text = path.read_text("utf-8")
    head, tail = f"LX.{name}(", ");\n"
    assert text.startswith(head) and text.endswith(tail), text[:80]
    return list(json.loads(f"[{text[len(head) : -len(tail)]}]"))


def test_report_summary_and_its_data(run_dir: tuple[Path, StateStore]) -> None:
    out, store = run_dir
    html = write_report_html(out, store, wall_seconds=75).read_text("utf-8")
    # Summary band: 4 of 7 done and verified, wall time, p50/p95 per model.
    assert re.search(r"Succeeded</div><div class=\"v\">4 <small>/ 7", html)
    assert "57.1%" in html and "1m 15s" in html
    assert re.search(r"<td>google/nano-banana</td><td class=\"num\">5</td>", html)
    # Self-contained: every link and source is relative to the report; no user text
    # in the page itself (it is data, rendered by the script as text).
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(not re.match(r"[a-z]+:|/", r) for r in refs), refs
    assert "<link" not in html and "@import" not in html and "data-pwned" not in html
    data = _data(out)
    meta, [index], [rows] = data["meta"], data["index"].values(), data["rows"].values()
    assert meta["models"] == ["google/nano-banana", "kling-3.0/video", "z-image"]
    assert meta["counts"]["statuses"] == {
        "succeeded": 4,
        "failed": 1,
        "unknown": 1,
        "downloading": 1,
    }
    assert index["id"] == [f"job-{i}" for i in range(7)]
    assert [meta["statuses"][s] for s in index["s"]] == [
        "succeeded", "succeeded", "succeeded", "failed", "unknown", "downloading", "succeeded"
    ]  # fmt: skip
    # The prompt whole in the heavy rows, its start in the index, as data.
    assert rows[0]["prompt"] == XSS
    assert index["P"][index["p"][0]] == XSS[:SHORT] and index["PL"] == [index["p"][0]]
    assert rows[3]["error"] == "500: Internal error during generation"
    assert rows[4]["error"] == "500: the reply to createTask was lost"
    assert [f[0] for f in rows[1]["files"]] == ["outputs/z/job-1.png", "outputs/z/job-1_2.png"]
    assert rows[2]["files"][0][0] == "outputs/k/job-2.mp4" and rows[5]["files"] == []
    assert meta["reasons"] == ["500"] and rows[0]["task"] == "t0"


def test_thumbnails_come_from_the_state(run_dir: tuple[Path, StateStore]) -> None:
    """A card shows the preview the state records; without one, a small image itself;
    else a placeholder. The report opens no image (previews are made beforehand)."""
    out, store = run_dir
    store.set_preview("job-1", 0, thumb="thumbs/job-1.jpg", width=600, height=800)
    write_report_html(out, store)
    index = next(iter(_data(out)["index"].values()))

    def thumb(i: int) -> str:
        if index["td"][i] < 0:
            return ""
        x = index["tx"][i]
        name = index["id"][i] + index["TS"][x] if isinstance(x, int) else x
        return f"{index['TD'][index['td'][i]]}/{name}"

    assert thumb(1) == "thumbs/job-1.jpg" and index["a"][1] == 75
    assert thumb(0) == "outputs/nano/job-0.png"  # small: shown itself
    assert thumb(2) == "" and thumb(3) == ""  # a video, no file
    assert not (out / "thumbs").exists()


def _files(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / DATA_DIR).iterdir()}


def test_a_rebuild_writes_only_the_changed_segments(tmp_path: Path) -> None:
    store = StateStore.in_dir(tmp_path)
    store.upsert_jobs(job_rows(6, stride=SEGMENT_JOBS // 2))  # three segments of two
    write_report_html(tmp_path, store)
    first = _files(tmp_path)
    meta = _data(tmp_path)["meta"]
    assert [s["seg"] for s in meta["segs"]] == [0, 1, 2]
    write_report_html(tmp_path, store)
    assert _files(tmp_path) == first, "nothing changed: nothing written"
    drive(store, "j00003", JobState.FAILED, task_id="t3", error_code="422", error_message="no")
    write_report_html(tmp_path, store)
    second = _files(tmp_path)
    made = sorted(set(second) - set(first))
    assert [n.split("-")[0:2] for n in made if not n.startswith("meta")] == [
        ["idx", "00001"], ["row", "00001"]
    ]  # fmt: skip
    assert set(first) <= set(second), "the previous meta's files stay for a page open on it"
    assert _data(tmp_path)["rows"][1][1]["error"] == "422: no"
    drive(store, "j00000", JobState.FAILED, task_id="t0", error_code="500", error_message="x")
    write_report_html(tmp_path, store)
    third = set(_files(tmp_path))
    gone = set(first) - third
    assert {n.split("-")[1] for n in gone if not n.startswith("meta")} == {"00001"}
    assert set(made) <= third, "the files of the meta before stay, those of the one before go"
    assert any(n.startswith("idx-00000-") for n in third - set(made) - {"cache.json"})
    store.close()


def test_a_live_refresh_takes_the_segments_built_longest_ago_first(tmp_path: Path) -> None:
    """Two segments per refresh: early segments that change every time must not starve
    the later ones (never built, or built longest ago, go first)."""
    store = StateStore.in_dir(tmp_path)
    store.upsert_jobs(job_rows(4, stride=SEGMENT_JOBS))  # one job in each of 4 segments

    def change(*segs: int, why: str) -> None:
        for seg in segs:
            drive(store, f"j{seg:05d}", JobState.FAILED, task_id=f"t{seg}",
                  error_code="500", error_message=why)  # fmt: skip

    def refresh() -> list[str]:
        before = set(_files(tmp_path)) if (tmp_path / DATA_DIR).exists() else set()
        for _ in LiveReport(tmp_path, store, max_segments=2).steps():
            pass
        return sorted(n.split("-")[1] for n in set(_files(tmp_path)) - before if n[:4] == "idx-")

    assert refresh() == ["00000", "00001"]  # none built yet: in order
    assert refresh() == ["00002", "00003"]
    change(0, 1, 2, 3, why="first")
    assert refresh() == ["00000", "00001"]  # all stale: 0 and 1 were built longest ago
    change(0, 1, why="second")
    assert refresh() == ["00002", "00003"]  # stale since before 0 and 1 changed again
    assert refresh() == ["00000", "00001"]
    store.close()


def test_a_lost_file_shows_as_download_failed(run_dir: tuple[Path, StateStore]) -> None:
    out, store = run_dir
    (out / "outputs/nano/job-0.png").unlink()
    write_reports(out, store, check_files=True)
    index = next(iter(_data(out)["index"].values()))
    meta = _data(out)["meta"]
    assert meta["statuses"][index["s"][0]] == "download_failed"
    assert "output_missing" in meta["reasons"]
    write_reports(out, store)  # not checked (a run's end): as the state says
    index = next(iter(_data(out)["index"].values()))
    assert _data(out)["meta"]["statuses"][index["s"][0]] == "succeeded"


def test_a_reader_beside_a_run_keeps_its_own_files_and_never_the_cache(tmp_path: Path) -> None:
    """`report` beside a running batch (read-only): its files carry its own names (its
    segments made, or the run's current ones linked), it writes no cache.json and
    removes nothing; the run's sweep keeps them READER_KEEP_SECONDS, then removes them."""
    store = StateStore.in_dir(tmp_path)
    store.upsert_jobs(job_rows(4, stride=SEGMENT_JOBS))
    write_report_html(tmp_path, store)  # the run's: segments 0-3 cached
    drive(store, "j00001", JobState.FAILED, task_id="t1", error_code="500", error_message="x")
    cache = (tmp_path / DATA_DIR / "cache.json").read_bytes()
    reader = StateStore.in_dir(tmp_path, readonly=True)
    now = [T0]
    write_report_html(tmp_path, reader, data=ReportData(tmp_path, reader, clock=lambda: now[0]))
    page = _data(tmp_path)  # the reader's page: every job, segment 1 as it changed
    assert page["rows"][1][0]["error"] == "500: x"
    named = [n for s in page["meta"]["segs"] for n in (s["index"], *s["rows"])]
    assert all("-r" in n for n in named), named
    assert (tmp_path / DATA_DIR / "cache.json").read_bytes() == cache, "a reader never saves"
    for i in (0, 1, 2):  # the run rebuilds every segment twice: its old files go
        for j in range(4):
            drive(store, f"j{j:05d}", JobState.FAILED, task_id=f"t{j}", error_code="500",
                  error_message=f"again {i}")  # fmt: skip
        write_report_html(tmp_path, store, data=ReportData(tmp_path, store, clock=lambda: now[0]))
    left = set(_files(tmp_path))
    assert set(named) <= left, "a page opened on the reader's still opens its jobs"
    now[0] += READER_KEEP_SECONDS + 1
    write_report_html(tmp_path, store, data=ReportData(tmp_path, store, clock=lambda: now[0]))
    assert not any("-r" in n for n in _files(tmp_path)), "then they are swept"
    assert {s: d for s, (_v, d) in store.report_segments().items()} == dict.fromkeys(
        range(4), False
    )
    reader.close()
    store.close()


def test_report_on_a_folder_no_run_holds_caches_and_sweeps(tmp_path: Path) -> None:
    """`report DIR` with no run beside it holds the run lock and works as a run does:
    dirty segments cleaned and cached, old files swept; three calls, one set of files."""
    build_big_state(tmp_path, 300)
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE files SET thumb = NULL")  # previews a run left unmade: all dirty
    db.commit()
    db.close()
    counts = []
    for _ in range(3):
        result = CliRunner().invoke(main, ["report", str(tmp_path)])
        assert result.exit_code == 0, result.output
        counts.append(sorted(_files(tmp_path)))
    assert counts[1] == counts[2], "nothing changed: the same files"
    assert not any("-r" in n for n in counts[2]), counts[2]
    store = StateStore.in_dir(tmp_path, readonly=True)
    assert not any(d for _v, d in store.report_segments().values())
    store.close()


def test_the_index_is_compact(tmp_path: Path) -> None:
    """Bytes per job of what the page loads first (the index) and on demand (rows)."""
    build_big_state(tmp_path, 20_000)
    store = StateStore.in_dir(tmp_path)
    write_report_html(tmp_path, store)
    store.close()
    folder = tmp_path / DATA_DIR
    index = sum(p.stat().st_size for p in folder.glob("idx-*"))
    rows = [p.stat().st_size for p in folder.glob("row-*")]
    assert index / 20_000 < 80, index / 20_000  # ~69 bytes a job
    assert max(rows) < 150_000, max(rows)  # opening one job loads ~100 KB
    meta = _data(tmp_path)["meta"]
    assert [f["name"] for f in meta["facets"]] == ["_subject", "style"]
    assert meta["groupable"] == ["_subject", "style"]


def test_submit_times_keep_their_order_when_the_first_job_went_late(tmp_path: Path) -> None:
    """The index's submit times are offsets from the segment's earliest, not its first
    job's in manifest order (a retried first job was submitted after the others)."""
    store = StateStore.in_dir(tmp_path)
    for i in range(3):
        add(store, tmp_path, i, JobState.FAILED, error="x")
    drive(store, "job-0", JobState.FAILED, task_id="t0b", submitted_at=T0 + 86400,
          error_code="500", error_message="x")  # fmt: skip
    write_report_html(tmp_path, store)
    store.close()
    index = _data(tmp_path)["index"][0]
    times = [index["t0"] + s for s in index["st"]]
    assert times == [T0 + 86400, T0 + 1, T0 + 2], (index["t0"], index["st"])


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(x) for x in range(1, 101)], 95) == 95.0
    assert percentile([5.0], 95) == 5.0


# -- a real browser -------------------------------------------------------------------


def _which_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed once per machine where it can be (tests/apt_support.py)."""
    return apt_install_or_skip("chromium", _which_chromium)
