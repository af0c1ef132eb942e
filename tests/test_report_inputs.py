"""Issue 16 in the report: a card of a job given local files shows their paths as the
manifest wrote them (never the file token, never the temporary upload URL) and small
thumbnails of them beside its output, cached by the file's sha256; results.csv keeps
the manifest's cells as written, the `input` JSON column included."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from liangxin_batch.catalog._catalog import default_catalog
from liangxin_batch.core._local_files import file_token
from liangxin_batch.core._settings import RunSettings
from liangxin_batch.core._states import JobState
from liangxin_batch.outputs._card_inputs import INPUT_THUMB_SIZE, CardInputs, input_thumb_name
from liangxin_batch.outputs._gallery import LiveReport, write_report_html
from liangxin_batch.outputs._report import write_results_csv
from liangxin_batch.outputs._report_data import DATA_DIR
from liangxin_batch.run._manifest_jobs import load_manifest_jobs
from liangxin_batch.simulator import SimConfig, create_app
from liangxin_batch.state._store import StateStore
from liangxin_batch.state._sync import sync_jobs
from tests.report_browser_support import launched, report_page
from tests.sim_support import sim_of
from tests.state_support import drive
from tests.test_gallery import _data, chromium  # noqa: F401  (a fixture)
from tests.uploads_support import run_over_loopback

EDIT = "google/nano-banana-edit"
KEY = "sk-report-inputs-4242"
CATALOG = default_catalog()


def _png(path: Path, colour: str, size: tuple[int, int] = (400, 300)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    path.write_bytes(out.getvalue())
    return hashlib.sha256(out.getvalue()).hexdigest()


def _manifest(folder: Path, rows: Sequence[tuple[str, str]]) -> Path:
    path = folder / "m.csv"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "model", "prompt", "image_urls"])
        for job_id, images in rows:
            out.writerow([job_id, EDIT, f"brighter {job_id}", images])
    return path


def _synced(manifest: Path, out: Path) -> StateStore:
    """The state `run` makes of a manifest before it sends anything."""
    store = StateStore.in_dir(out)
    with load_manifest_jobs(manifest, catalog=CATALOG) as jobs:
        sync_jobs(store, jobs, allow_changed=False)
    return store


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, str]:
    """Three distinct images, one of them under a second name: path as written -> sha."""
    shas = {
        "photos/red.png": _png(tmp_path / "photos/red.png", "red"),
        "photos/blue.png": _png(tmp_path / "photos/blue.png", "blue", (300, 900)),
        "photos/green.png": _png(tmp_path / "photos/green.png", "green"),
    }
    shutil.copy(tmp_path / "photos/red.png", tmp_path / "photos/red-again.png")
    shas["photos/red-again.png"] = shas["photos/red.png"]
    return shas


@pytest.fixture
def three_hundred(tmp_path: Path, photos: dict[str, str]) -> Iterator[StateStore]:
    """300 jobs on one photo, then jobs on the others (one of them two images, one the
    first photo's bytes under another name)."""
    rows = [(f"j{i:03d}", "photos/red.png") for i in range(300)]
    rows += [("blue", "photos/blue.png"), ("two", "photos/green.png|photos/blue.png")]
    rows += [("alias", "photos/red-again.png")]  # red's bytes under another name
    store = _synced(_manifest(tmp_path, rows), tmp_path / "out")
    yield store
    store.close()


def _written(store: StateStore, sha256: str) -> str:
    known = store.local_file(sha256)
    assert known is not None
    return known.written


def _input_thumbs(out: Path) -> dict[str, Path]:
    return {p.name: p for p in (out / "thumbs").glob("input~*.jpg")}


def test_one_thumbnail_per_distinct_file_decoded_once_and_cached(
    tmp_path: Path,
    photos: dict[str, str],
    three_hundred: StateStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    opened: list[str] = []
    real_open = Image.open

    def counting_open(fp: Any, *args: Any, **kw: Any) -> Any:
        opened.append(Path(fp).name if isinstance(fp, str | Path) else "?")
        return real_open(fp, *args, **kw)

    monkeypatch.setattr(Image, "open", counting_open)
    write_report_html(out, three_hundred)
    thumbs = _input_thumbs(out)
    # Three distinct files (red under two names): three thumbnails, named by sha256.
    assert sorted(thumbs) == sorted(input_thumb_name(s) for s in set(photos.values()))
    assert sorted(opened) == ["blue.png", "green.png", "red.png"]  # each decoded once
    for path in thumbs.values():
        with real_open(path) as img:
            assert max(img.size) == INPUT_THUMB_SIZE and img.format == "JPEG"
    stamps = {name: p.stat().st_mtime_ns for name, p in thumbs.items()}
    opened.clear()
    write_report_html(out, three_hundred)
    assert opened == []  # the next report finds them made: nothing decoded again
    assert {n: p.stat().st_mtime_ns for n, p in _input_thumbs(out).items()} == stamps


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    """Each job's heavy row (what the lightbox shows) by its id."""
    return {r["id"]: r for rows in _data(out)["rows"].values() for r in rows}


def _no_tokens(out: Path) -> None:
    for path in (out / DATA_DIR).glob("*.js"):
        text = path.read_text("utf-8")
        assert "file:sha256:" not in text and "/tempfile/" not in text, path.name


def test_cards_show_the_paths_as_written_and_the_input_thumbnails(
    tmp_path: Path, photos: dict[str, str], three_hundred: StateStore
) -> None:
    write_report_html(tmp_path / "out", three_hundred)
    _no_tokens(tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert len(rows) == 303
    two = rows["two"]
    assert two["params"]["image_urls"] == ["photos/green.png", "photos/blue.png"]
    green, blue, red = (photos[f"photos/{c}.png"] for c in ("green", "blue", "red"))
    assert two["inputs"] == [
        ["photos/green.png", f"thumbs/{input_thumb_name(green)}"],
        ["photos/blue.png", f"thumbs/{input_thumb_name(blue)}"],
    ]
    assert rows["j299"]["inputs"] == [["photos/red.png", f"thumbs/{input_thumb_name(red)}"]]
    # The same bytes under two names are one file, shown by the name the state keeps
    # for them (one path per sha256): still a path, with the same thumbnail.
    red_as = _written(three_hundred, red)
    assert red_as in ("photos/red.png", "photos/red-again.png")
    assert rows["alias"]["inputs"] == [[red_as, f"thumbs/{input_thumb_name(red)}"]]


def test_a_missing_or_changed_file_shows_its_path_alone(
    tmp_path: Path, photos: dict[str, str], three_hundred: StateStore
) -> None:
    (tmp_path / "photos/blue.png").unlink()
    _png(tmp_path / "photos/green.png", "yellow")  # other bytes than the job used
    write_report_html(tmp_path / "out", three_hundred)
    rows = _rows(tmp_path / "out")
    assert rows["blue"]["inputs"] == [["photos/blue.png", None]]
    assert rows["two"]["inputs"] == [["photos/green.png", None], ["photos/blue.png", None]]
    assert rows["j000"]["inputs"][0][1] is not None  # the others still shown
    assert sorted(_input_thumbs(tmp_path / "out")) == [input_thumb_name(photos["photos/red.png"])]


def test_an_error_shows_the_path_in_place_of_the_upload_url(
    tmp_path: Path, photos: dict[str, str], three_hundred: StateStore
) -> None:
    blue = photos["photos/blue.png"]
    inputs = {"prompt": "x", "image_urls": [file_token(blue)]}
    error = (
        f"400: Failed to fetch input image: http://127.0.0.1:9/tempfile/liangxin-batch/{blue}.png"
        " (HTTP 403: file expired or not found)"
    )
    shown = CardInputs(three_hundred).resolve(json.dumps(inputs), inputs, error)
    assert shown.error == (
        "400: Failed to fetch input image: photos/blue.png (HTTP 403: file expired or not found)"
    )
    assert shown.inputs == {"prompt": "x", "image_urls": ["photos/blue.png"]}
    assert [i.written for i in shown.images] == ["photos/blue.png"]


def test_a_batch_without_local_files_reads_none(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,model,prompt\na,google/nano-banana,a fox\n")
    store = _synced(manifest, tmp_path / "out")
    try:
        assert CardInputs(store).enabled is False  # no per-card work at all
        write_report_html(tmp_path / "out", store)
        assert not (tmp_path / "out/thumbs").exists()
        assert "inputs" not in _rows(tmp_path / "out")["a"]
    finally:
        store.close()


def test_results_csv_keeps_an_input_json_cell_as_written(
    tmp_path: Path, photos: dict[str, str]
) -> None:
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "model", "prompt", "input"])
        out.writerow(["a", EDIT, "brighter", json.dumps({"image_urls": ["photos/red.png"]})])
    store = _synced(manifest, tmp_path / "out")
    try:
        stored = json.loads(store.db.execute("SELECT input_json FROM jobs").fetchone()[0])
        assert stored["image_urls"] == [file_token(photos["photos/red.png"])]  # a token...
        with write_results_csv(tmp_path / "out", store).open(encoding="utf-8-sig") as fh:
            row = next(csv.DictReader(fh))
        assert json.loads(row["input"]) == {"image_urls": ["photos/red.png"]}  # ...shown as written
    finally:
        store.close()


# -- a whole run, and a real browser ----------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run may install chromium
def test_report_of_a_run_on_local_files_in_headless_chromium(
    chromium: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    shas = {
        "photos/a.png": _png(tmp_path / "photos/a.png", "#d9480f"),
        "photos/b.png": _png(tmp_path / "photos/b.png", "#1c7ed6", (200, 600)),
    }
    rows = [(f"j{i}", "photos/a.png" if i % 2 else "photos/b.png") for i in range(6)]
    rows.append(("both", "photos/a.png|photos/b.png"))
    manifest = _manifest(tmp_path, rows)
    app = create_app(SimConfig(api_key=KEY, latency_scale=0.005))
    settings = RunSettings(poll_scale=0.005)
    out = tmp_path / "out"
    summary, _ = run_over_loopback(app, manifest, out, settings)
    assert summary.counts.get("succeeded") == 7, summary.counts
    assert len(sim_of(app).ledger.upload_counts_by_sha256()) == 2  # the run did upload

    _no_tokens(out)
    with (
        launched(chromium) as browser,
        report_page(browser, out / "report.html", "job=both") as page,
    ):
        page.wait_for_selector("body[data-lightbox=both]")
        info = page.locator("#lb-info")
        assert info.locator(".path").all_text_contents() == ["photos/a.png", "photos/b.png"]
        widths = page.evaluate(
            """() => Promise.all(Array.from(document.querySelectorAll('#lb-info img.input'))
              .map(i => i.decode().then(() => i.naturalWidth, () => 0)))"""
        )
        assert len(widths) == 2 and all(w > 0 for w in widths), widths  # both shown
        text = page.evaluate("document.body.innerText")
        assert "file:sha256:" not in text and "/tempfile/" not in text
    thumbs = sorted(p.name for p in (out / "thumbs").glob("input~*.jpg"))
    assert thumbs == sorted(input_thumb_name(s) for s in shas.values())


def test_a_live_refresh_hands_input_thumbnails_off_its_steps(
    tmp_path: Path, photos: dict[str, str]
) -> None:
    """Hashing and decoding local inputs (seconds for big photos) is never done inside
    a step the run takes on its event loop: `steps()` yields it as a job of its own (the
    run hands it to a worker thread), once per file, and a later refresh hashes nothing."""
    rows = [(f"j{i:02d}", path) for i, path in enumerate(sorted(photos) * 3)]
    store = _synced(_manifest(tmp_path, rows), tmp_path / "out")
    thumbs = tmp_path / "out" / "thumbs"
    live = LiveReport(tmp_path / "out", store)
    jobs = 0
    for step in live.steps():
        if step is None:
            continue
        assert not list(thumbs.glob("input~*")), "decoded inside a step, not in the job"
        jobs += 1
        step()
    assert jobs == 1, jobs
    assert len(list(thumbs.glob("input~*"))) == 3  # three distinct files
    shown = [i for r in _data(tmp_path / "out")["rows"][0] for i in r["inputs"]]
    assert shown and all(thumb for _written, thumb in shown), shown
    drive(store, "j00", JobState.FAILED, task_id="t0", error_code="500", error_message="x")
    assert [s for s in live.steps() if s is not None] == []  # segment 0 again: no job
    assert _data(tmp_path / "out")["rows"][0][0]["error"] == "500: x"
    store.close()
