"""report.html: content, escaping, thumbnails, and a real headless Chromium rendering it."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from liangxin_batch.core._states import JobState
from liangxin_batch.outputs._gallery import write_report_html
from liangxin_batch.outputs._thumbs import THUMB_SIZE
from liangxin_batch.state._store import FileRow, StateStore
from tests.report_state_support import percentile
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


def test_report_content(run_dir: tuple[Path, StateStore]) -> None:
    out, store = run_dir
    html = write_report_html(out, store, wall_seconds=75).read_text("utf-8")
    assert html.count('<article class="card') == 7
    # User text is escaped, never markup.
    assert "&lt;script&gt;document.body.setAttribute(&#39;data-pwned&#39;" in html
    assert "<script>document" not in html and "<img src=x" not in html
    assert "a fox &amp; a hound" in html
    # Self-contained: every link and source is relative to the report.
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(not re.match(r"[a-z]+:|/", r) for r in refs), refs
    assert "<link" not in html and "@import" not in html
    assert '<video controls muted preload="metadata" src="outputs/k/job-2.mp4">' in html
    assert 'src="thumbs/job-1_2.jpg"' in html
    # Summary band: 4 of 7 done and verified, wall time, p50/p95 per model.
    assert re.search(r"Succeeded</div><div class=\"v\">4 <small>/ 7", html)
    assert "57.1%" in html and "1m 15s" in html
    assert re.search(r"<td>google/nano-banana</td><td class=\"num\">5</td>", html)
    assert "Internal error during generation" in html
    assert "the reply to createTask was lost" in html
    assert "no files yet" in html  # generated, not downloaded yet
    assert 'value="kling-3.0/video"' in html and 'value="download_failed"' not in html


def test_thumbnails_are_small_cached_and_optional(run_dir: tuple[Path, StateStore]) -> None:
    out, store = run_dir
    write_report_html(out, store)
    thumb = out / "thumbs" / "job-0.jpg"
    with Image.open(thumb) as img:
        assert max(img.size) == THUMB_SIZE and img.format == "JPEG"
    assert (out / "thumbs" / "job-1_2.jpg").is_file()
    assert not (out / "thumbs" / "job-6.jpg").exists()  # unreadable image: no thumbnail
    stamp = thumb.stat().st_mtime_ns
    html = write_report_html(out, store).read_text("utf-8")
    assert thumb.stat().st_mtime_ns == stamp  # up to date: not made again
    assert '<a class="none" href="outputs/nano/job-6.png">open file</a>' in html


def test_cards_are_capped_but_the_summary_counts_all(run_dir: tuple[Path, StateStore]) -> None:
    out, store = run_dir
    html = write_report_html(out, store, max_cards=2).read_text("utf-8")
    assert html.count('<article class="card') == 2
    assert "Showing the first 2 of 7 jobs" in html
    assert re.search(r"Succeeded</div><div class=\"v\">4 <small>/ 7", html)


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
    """Debian's chromium, installed once per machine (a lock file serialises sessions)."""
    found = _which_chromium()
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip(
            "chromium is not installed; installing it needs root (apt-get install chromium)"
        )
    lock = Path(tempfile.gettempdir()) / "liangxin-batch-chromium.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if not _which_chromium():
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
                try:
                    done = subprocess.run(
                        cmd, env=env, capture_output=True, text=True, timeout=1200, check=False
                    )
                except subprocess.TimeoutExpired:
                    pytest.skip(f"{' '.join(cmd)} took more than 20 minutes")
                if done.returncode != 0:
                    pytest.skip(f"{' '.join(cmd)} failed: {done.stderr.strip()[-400:]}")
    found = _which_chromium()
    if not found:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return found


def browse(chromium: str, tmp: Path, url: str, *mode: str) -> str:
    profile = tempfile.mkdtemp(dir=tmp)
    args = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--window-size=1400,1000", *mode, url,
    ]  # fmt: skip
    env = {**os.environ, "HOME": profile}
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _Dom(HTMLParser):
    """Tags with their attributes, and the text of elements that have an id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open.append(dict(attrs).get("id"))

    def handle_data(self, data: str) -> None:
        for ident in self._open[-1:]:
            if ident:
                self.text[ident] = self.text.get(ident, "") + data

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()


def parse(html: str) -> _Dom:
    dom = _Dom()
    dom.feed(html)
    return dom


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run may install chromium
def test_gallery_in_headless_chromium(
    chromium: str, run_dir: tuple[Path, StateStore], tmp_path: Path
) -> None:
    out, store = run_dir
    url = write_report_html(out, store).resolve().as_uri()

    shot = tmp_path / "report.png"
    browse(chromium, tmp_path, url, f"--screenshot={shot}")
    with Image.open(shot) as img:
        assert img.size == (1400, 1000)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 50  # rendered content, not a blank page

    raw = browse(chromium, tmp_path, url, "--dump-dom")
    dom = parse(raw)
    body = next(attrs for tag, attrs in dom.tags if tag == "body")
    assert body.get("data-ready") == "1"  # our script ran ...
    assert "data-pwned" not in body  # ... and the prompt's did not
    cards = [a for tag, a in dom.tags if tag == "article"]
    assert len(cards) == 7 and not any("hidden" in (a.get("class") or "") for a in cards)
    assert dom.text["shown"] == "7"
    assert any(tag == "video" for tag, _ in dom.tags)
    assert "&lt;script&gt;document.body.setAttribute" in raw  # shown as text
    options = [a.get("value") for tag, a in dom.tags if tag == "option"]
    assert options == ["", "google/nano-banana", "kling-3.0/video", "z-image"]

    # Filters preset from the address hide every other card.
    dom = parse(browse(chromium, tmp_path, url + "#status=failed,unknown", "--dump-dom"))
    cards = [a for tag, a in dom.tags if tag == "article"]
    visible = [a["data-status"] for a in cards if "hidden" not in (a.get("class") or "")]
    assert visible == ["failed", "unknown"]
    assert dom.text["shown"] == "2"
    dom = parse(browse(chromium, tmp_path, url + "#model=z-image", "--dump-dom"))
    assert dom.text["shown"] == "1"
