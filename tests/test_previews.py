"""Output previews are recorded in the state with their file's pixels: by the downloader
as each file arrives (from the check's decode, or from the file in a worker thread), and
by `ensure_previews` for what a run did not make; a file whose preview is recorded is
never opened again."""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from liangxin_batch.core._states import JobState
from liangxin_batch.outputs._card_inputs import input_thumb_name
from liangxin_batch.outputs._thumbs import (
    OWN_PREVIEW_BYTES,
    THUMB_SIZE,
    THUMBS_DIR,
    ensure_previews,
    thumb_name,
)
from liangxin_batch.run._download import Downloader
from liangxin_batch.run._fetch import DownloadLimits
from liangxin_batch.state._rows import FileRow
from liangxin_batch.state._store import StateStore
from tests.report_state_support import job_rows
from tests.state_support import drive
from tests.test_download import Handler, add_job, scripted, simulated, state_of

VIDEO = (importlib.resources.files("liangxin_batch.simulator") / "placeholder.mp4").read_bytes()


def image(size: tuple[int, int], fmt: str = "PNG", *, seed: int = 0, **save: object) -> bytes:
    """A real image of incompressible noise (a small one stays small, a large one large)."""
    rnd = random.Random(seed)
    img = Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def served(bodies: dict[str, tuple[str, bytes]]) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        kind, body = bodies[request.url.path]
        return httpx.Response(200, content=body, headers={"content-type": kind})

    return handler


def rows_of(store: StateStore, job_id: str) -> list[tuple[str | None, int | None, int | None]]:
    return [(f.thumb, f.width, f.height) for f in store.files_of(job_id)]


# -- the downloader --------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_simulated_image_is_recorded_with_its_pixels_and_thumbnail(
    tmp_path: Path,
) -> None:
    async with simulated(tmp_path) as s:
        s.downloader = Downloader(
            store=s.store, out_dir=tmp_path, client=s.api, http=s.downloader.http, thumbnails=True
        )
        job = await s.succeeded(aspect_ratio="16:9")
        await s.downloader.handle(job)
        assert state_of(s.store, "j1").state is JobState.DONE
        [f] = s.store.files_of("j1")
        with Image.open(tmp_path / (f.path or "")) as out:
            assert (f.width, f.height) == out.size and out.width > out.height > 0
        assert f.thumb == f"{THUMBS_DIR}/{thumb_name('j1', 0)}"
        with Image.open(tmp_path / f.thumb) as thumb:
            assert thumb.format == "JPEG" and thumb.width == THUMB_SIZE


@pytest.mark.anyio
async def test_small_images_are_their_own_preview_and_videos_or_junk_have_none(
    tmp_path: Path,
) -> None:
    small = image((64, 32))  # a browser image, small in pixels and in bytes
    dense = image((300, 300))  # small in pixels, but ~270 KB: a thumbnail is made
    assert len(dense) > OWN_PREVIEW_BYTES
    bodies = {
        "/small.png": ("image/png", small),
        "/dense.png": ("image/png", dense),
        "/clip.mp4": ("video/mp4", VIDEO),
        "/junk.bmp": ("image/bmp", b"BM" + bytes(200)),  # no check for BMP: kept, unreadable
    }
    urls = [f"https://cdn.test{p}" for p in bodies]
    async with scripted(tmp_path, served(bodies), thumbnails=True) as (downloader, store, _):
        await downloader.handle(add_job(store, "j1", urls))
        assert state_of(store, "j1").state is JobState.DONE
        paths = [f.path for f in store.files_of("j1")]
        assert rows_of(store, "j1") == [
            (paths[0], 64, 32),
            (f"{THUMBS_DIR}/{thumb_name('j1', 1)}", 300, 300),
            ("", None, None),
            ("", None, None),
        ]
        made = sorted(p.name for p in (tmp_path / THUMBS_DIR).iterdir())
        assert made == [thumb_name("j1", 1)]  # none for the small one


@pytest.mark.anyio
async def test_pixels_as_shown_and_no_preview_over_the_pixel_cap(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: 800 wide, 1600 high
    bodies = {
        "/turned.jpg": ("image/jpeg", image((1600, 800), "JPEG", exif=exif)),
        "/big.png": ("image/png", image((700, 700))),
        "/anim.gif": ("image/gif", _animated_gif((500, 250))),
    }
    # Over the cap, the JPEG is only verified; its preview decodes it at reduced size
    # (800 x 400 pixels: under the cap). A PNG cannot be: it gets none.
    limits = DownloadLimits(max_image_pixels=400_000)
    urls = [f"https://cdn.test{p}" for p in bodies]
    async with scripted(tmp_path, served(bodies), thumbnails=True, limits=limits) as (
        downloader,
        store,
        _,
    ):
        await downloader.handle(add_job(store, "j1", urls))
        [turned, big, anim] = store.files_of("j1")
        assert (turned.width, turned.height) == (800, 1600)
        with Image.open(tmp_path / (turned.thumb or "")) as thumb:
            assert thumb.size == (160, 320)  # EXIF orientation applied
        assert (big.thumb, big.width, big.height) == ("", 700, 700)
        # An animated GIF is not handed over by the check: made from the file afterwards.
        assert (anim.width, anim.height) == (500, 250)
        assert anim.thumb == f"{THUMBS_DIR}/{thumb_name('j1', 2)}"


def _animated_gif(size: tuple[int, int]) -> bytes:
    frames = [Image.new("RGB", size, colour) for colour in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


# -- ensure_previews -----------------------------------------------------------------


def old_style_state(out: Path, jobs: int = 12) -> StateStore:
    """Done jobs whose files were recorded with no preview (thumb NULL), as a state from
    before previews were recorded leaves them: large and small PNGs, JPEGs, a video,
    junk under an image name."""
    store = StateStore.in_dir(out)
    store.upsert_jobs(job_rows(jobs))
    kinds = [
        (".png", lambda i: image((400, 300), seed=i)),
        (".jpg", lambda i: image((1000, 500), "JPEG", seed=i)),
        (".png", lambda i: image((40, 40), seed=i)),
        (".mp4", lambda i: VIDEO),
        (".png", lambda i: b"\x89PNG\r\n\x1a\n" + bytes(100)),
    ]
    for i in range(jobs):
        job_id = f"j{i:05d}"
        ext, make = kinds[i % len(kinds)]
        url = f"http://x/{job_id}{ext}"
        drive(store, job_id, JobState.SUCCEEDED, task_id=f"t{i}", result_urls=[url])
        path = f"outputs/m/{job_id}{ext}"
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(make(i))
        store.record_file(FileRow(job_id, 0, url, path, "ab" * 32, (out / path).stat().st_size))
        store.finish_download(job_id, 1, result_urls=[url])
    drive(store, "j00000", JobState.PENDING)  # started over: its old file is not current
    return store


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file PIL's Image.open is asked to open (a wrapper on PIL itself)."""
    seen: list[str] = []
    original = Image.open

    def counting(fp: Any, *args: Any, **kw: Any) -> Any:
        seen.append(str(fp))
        return original(fp, *args, **kw)

    monkeypatch.setattr(Image, "open", counting)
    return seen


def _all(store: StateStore) -> list[FileRow]:
    return [f for j in store.iter_jobs() for f in store.files_of(j.job_id)]


def test_ensure_previews_fills_an_old_state_and_a_rebuild_decodes_nothing(
    tmp_path: Path, opened: list[str]
) -> None:
    store = old_style_state(tmp_path)
    store.clean_report_segments(list(store.report_segments()))  # as the report's writer
    counts = ensure_previews(store, tmp_path, workers=3, page=4)  # several pages
    assert len(opened) == 9  # each image once, junk included; no video (the wrapper sees)
    # 11 current files: 5 made (400x300, 1000x500), 2 own (40x40), 2 videos + 2 junk.
    assert (counts.made, counts.own, counts.none, counts.later) == (5, 2, 4, 0)
    rows = {f.job_id: f for f in _all(store)}
    assert rows["j00000"].thumb is None  # not done: left alone
    assert (rows["j00001"].width, rows["j00001"].height) == (1000, 500)
    assert rows["j00001"].thumb == f"{THUMBS_DIR}/{thumb_name('j00001', 0)}"
    assert rows["j00002"].thumb == rows["j00002"].path  # small: its own preview
    assert (rows["j00003"].thumb, rows["j00004"].thumb) == ("", "")  # video, junk
    with Image.open(tmp_path / (rows["j00005"].thumb or "")) as thumb:
        assert thumb.size == (320, 240)
    assert store.report_segments() == {0: (2, True)}  # the report's shards see them
    thumbs = {p.name: p.read_bytes() for p in (tmp_path / THUMBS_DIR).iterdir()}

    # The outputs turn to junk of the same size: a rebuild that opened one would notice.
    for f in rows.values():
        if f.path:
            target = tmp_path / f.path
            target.write_bytes(b"\0" * target.stat().st_size)
    opened.clear()
    again = ensure_previews(store, tmp_path)
    assert again.looked_at == 0 and opened == []
    assert {f.job_id: f for f in _all(store)} == rows
    assert {p.name: p.read_bytes() for p in (tmp_path / THUMBS_DIR).iterdir()} == thumbs
    store.close()


def test_a_deleted_thumbs_folder_is_made_again(tmp_path: Path) -> None:
    import shutil

    store = old_style_state(tmp_path)
    first = ensure_previews(store, tmp_path)
    shutil.rmtree(tmp_path / THUMBS_DIR)
    again = ensure_previews(store, tmp_path)
    assert again.forgotten == first.made == again.made
    assert again.own == 0  # the previews that were not made under thumbs/ are kept
    for f in _all(store):
        if f.thumb and f.thumb.startswith(THUMBS_DIR):
            assert (tmp_path / f.thumb).is_file()
    store.close()


def test_a_thumbnail_that_cannot_be_written_is_tried_again(tmp_path: Path) -> None:
    store = old_style_state(tmp_path, jobs=3)
    (tmp_path / THUMBS_DIR).write_text("a file where the folder should be")
    counts = ensure_previews(store, tmp_path)
    assert counts.later == 1 and counts.own == 1  # j00001's JPEG; j00002 is small
    assert store.files_of("j00001")[0].thumb is None
    (tmp_path / THUMBS_DIR).unlink()
    assert ensure_previews(store, tmp_path).made == 1
    store.close()


def test_the_report_command_makes_the_missing_previews_unless_a_run_holds_the_folder(
    tmp_path: Path,
) -> None:
    import click
    from click.testing import CliRunner

    from liangxin_batch.cli import CliContext
    from liangxin_batch.cli._outputs import report_command
    from liangxin_batch.state._lock import RunLock

    old_style_state(tmp_path, jobs=6).close()
    group = click.Group("main")
    group.add_command(report_command)
    with RunLock(tmp_path):  # a run is going: it makes its own; the report only reads
        result = CliRunner().invoke(group, ["report", str(tmp_path)], obj=CliContext())
        assert result.exit_code == 0, result.output
    store = StateStore.in_dir(tmp_path)
    assert [f.thumb for f in _all(store)] == [None] * 6
    store.close()

    result = CliRunner().invoke(group, ["report", str(tmp_path)], obj=CliContext())
    assert result.exit_code == 0, result.output
    assert "previews: 2 made, 3 recorded as found" in result.output
    store = StateStore.in_dir(tmp_path)
    assert [f.thumb is None for f in _all(store)] == [True] + [False] * 5  # j00000 not done
    store.close()


def test_an_older_folders_thumbnails_are_kept_not_made_again(tmp_path: Path) -> None:
    """A folder from before previews were recorded has its thumbnails under thumbs/
    already (the old downloader made them): the first report after the upgrade reads
    each image's header for its pixels and keeps the thumbnail, no decode, no rewrite
    (at a million jobs, hours of CPU otherwise)."""
    store = old_style_state(tmp_path, jobs=5)
    (tmp_path / THUMBS_DIR).mkdir()
    old = {}
    for f in _all(store):
        if f.path and f.path.endswith((".jpg", ".png")) and f.job_id in ("j00001", "j00002"):
            name = tmp_path / THUMBS_DIR / thumb_name(f.job_id, 0)
            name.write_bytes(image((32, 16), "JPEG"))  # older thumbnails, newer than the files
            old[f.job_id] = name.stat().st_ino, name.read_bytes()
    counts = ensure_previews(store, tmp_path)
    rows = {f.job_id: f for f in _all(store)}
    assert rows["j00001"].thumb == f"{THUMBS_DIR}/{thumb_name('j00001', 0)}"
    assert (rows["j00001"].width, rows["j00001"].height) == (1000, 500)  # from the header
    for job_id, (ino, data) in old.items():
        name = tmp_path / THUMBS_DIR / thumb_name(job_id, 0)
        assert (name.stat().st_ino, name.read_bytes()) == (ino, data), job_id
    assert counts.made == 0, "j00001's kept; j00002 is small: its own preview"
    store.close()


# -- thumbnail names ---------------------------------------------------------------------


def test_thumbnail_names_of_different_files_never_collide() -> None:
    """Not `x`'s second file and job `x_2`'s first (both were `x_2.jpg`), nor ids a slug
    folds together, nor ids apart only by case (a case-blind disk)."""
    ids = ["x", "x_2", "x_3", "X", "x-2", "a b", "a:b", "a-b", "A b", "x@2", "x~2", "é", "e"]
    ids += [f"a-{hashlib.sha256(b'a!').hexdigest()[:8]}", "a!", "con", "." * 3]
    names = [thumb_name(job_id, n).lower() for job_id in ids for n in range(4)]
    assert len(set(names)) == len(names)
    # nor a job's with a local input's (by its sha256), whatever the job's id
    sha = hashlib.sha256(b"an input").hexdigest()
    assert input_thumb_name(sha) not in {thumb_name(f"input-{sha}", n) for n in range(4)}


def two_jobs_of_one_name(out: Path) -> StateStore:
    """Job `x` of two images and job `x_2` of one, downloaded, their previews not
    recorded (as a state from before previews were recorded leaves them)."""
    store = StateStore.in_dir(out)
    rows = job_rows(2)
    store.upsert_jobs([("x", *rows[0][1:]), ("x_2", *rows[1][1:])])
    for job_id, count in (("x", 2), ("x_2", 1)):
        urls = [f"http://x/{job_id}/{n}.png" for n in range(count)]
        drive(store, job_id, JobState.SUCCEEDED, task_id=f"t-{job_id}", result_urls=urls)
        for n, url in enumerate(urls):
            path = f"outputs/{job_id}_{n}.png"
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(image((400, 300), seed=len(job_id) * 10 + n))
            store.record_file(FileRow(job_id, n, url, path, "ab" * 32, 1))
        assert store.finish_download(job_id, count, result_urls=urls)
    return store


def _pixels_of(path: Path) -> bytes:
    with Image.open(path) as img:
        return img.convert("RGB").resize((8, 6)).tobytes()


def test_one_jobs_card_never_shows_another_jobs_thumbnail(tmp_path: Path) -> None:
    """An older version named job `x`'s second thumbnail `x_2.jpg`; job `x_2`'s own first
    file must get its own thumbnail, not that one (kept for its newer date)."""
    store = two_jobs_of_one_name(tmp_path)
    (tmp_path / THUMBS_DIR).mkdir()
    old = tmp_path / THUMBS_DIR / "x_2.jpg"  # the old scheme's name of x's file 1
    Image.open(tmp_path / "outputs/x_1.png").convert("RGB").resize((320, 240)).save(old)
    ensure_previews(store, tmp_path)
    thumbs = {(f.job_id, f.n): f.thumb for f in _all(store)}
    store.close()
    assert len(set(thumbs.values())) == 3, thumbs
    for (job_id, n), thumb in thumbs.items():
        assert thumb is not None and thumb.startswith(f"{THUMBS_DIR}/")
        shown, own = (
            _pixels_of(tmp_path / thumb),
            _pixels_of(tmp_path / f"outputs/{job_id}_{n}.png"),
        )
        assert sum(abs(a - b) for a, b in zip(shown, own, strict=True)) < 8 * len(own), job_id
