"""Issue 16, the manifest side: local paths in image fields become checked file tokens.

Every image-list field with `file_types` takes URLs or local paths (CSV `a|b`, YAML
lists, JSON arrays); `images` maps onto whichever field a model calls its images; each
bad file is a located problem; a good one is hashed once and named by its bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from liangxin_batch.catalog._catalog import Catalog
from liangxin_batch.core._local_files import LocalFile, file_token, sniff_media_type
from liangxin_batch.manifest._local_inputs import LocalInputs
from liangxin_batch.manifest._manifest import Job, Problem, iter_jobs, validate_manifest
from tests.local_inputs_support import jpeg, png, sha, webp
from tests.manifest_support import CATALOG, only_problem, read, write

EDIT = "seedream/4.5-edit"  # image_urls, 14 images of 10 MB
FLUX = "flux-2/pro-image-to-image"  # input_urls, 1-8 images of 10 MB
PRO = "nano-banana-pro"  # image_input, 8 images of 30 MB


def _csv(tmp: Path, rows: list[dict[str, str]], name: str = "m.csv") -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    header = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, header)
        w.writeheader()
        w.writerows(rows)
    return path


def _edit_row(images: str, *, key: str = "image_urls", job_id: str = "j1") -> dict[str, str]:
    return {
        "id": job_id,
        "model": EDIT,
        "prompt": "brighter",
        key: images,
        "aspect_ratio": "1:1",
        "quality": "basic",
    }


def _only_job(path: Path) -> Job:
    jobs, problems = read(path)
    assert not problems, [p.format() for p in problems]
    assert len(jobs) == 1
    return jobs[0]


# ---- the syntaxes -------------------------------------------------------------------------


def test_csv_pipe_syntax_gives_tokens_and_the_files(tmp_path: Path) -> None:
    a = png(tmp_path / "photos" / "shoe.png")
    b = jpeg(tmp_path / "photos" / "shoe-side.jpg")
    m = _csv(
        tmp_path, [_edit_row("photos/shoe.png|photos/shoe-side.jpg|https://cdn.shop.com/x.webp")]
    )
    job = _only_job(m)
    assert job.input["image_urls"] == [
        file_token(sha(a)),
        file_token(sha(b)),
        "https://cdn.shop.com/x.webp",
    ]
    assert [(f.sha256, f.size, f.media_type, f.path, f.written) for f in job.local_files] == [
        (sha(a), a.stat().st_size, "image/png", str(a.resolve()), "photos/shoe.png"),
        (sha(b), b.stat().st_size, "image/jpeg", str(b.resolve()), "photos/shoe-side.jpg"),
    ]


def test_a_json_array_cell_a_yaml_list_and_a_json_manifest(tmp_path: Path) -> None:
    a = png(tmp_path / "a.png")
    w = webp(tmp_path / "w.webp")
    tokens = [file_token(sha(a)), file_token(sha(w))]
    cell = _csv(tmp_path, [_edit_row(json.dumps(["a.png", "w.webp"]))], "cell.csv")
    assert _only_job(cell).input["image_urls"] == tokens
    yaml_path = write(
        tmp_path,
        "m.yaml",
        f"jobs:\n  - model: {EDIT}\n    prompt: brighter\n    aspect_ratio: '1:1'\n"
        "    quality: basic\n    image_urls:\n      - a.png\n      - w.webp\n",
    )
    assert _only_job(yaml_path).input["image_urls"] == tokens
    json_path = write(
        tmp_path,
        "m.json",
        json.dumps(
            {
                "jobs": [
                    {
                        "model": EDIT,
                        "prompt": "brighter",
                        "aspect_ratio": "1:1",
                        "quality": "basic",
                        "image_urls": ["a.png", "w.webp"],
                    }
                ]
            }
        ),
    )
    assert _only_job(json_path).input["image_urls"] == tokens


def test_file_urls_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    a = png(home / "pics" / "a.png")
    monkeypatch.setenv("HOME", str(home))
    m = _csv(tmp_path, [_edit_row(f"~/pics/a.png|file://{a}")])
    job = _only_job(m)
    assert job.input["image_urls"] == [file_token(sha(a))] * 2
    assert len(job.local_files) == 1 and job.local_files[0].written == "~/pics/a.png"


def test_relative_paths_start_at_the_manifest_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = png(tmp_path / "batch" / "photos" / "a.png")
    png(tmp_path / "photos" / "a.png", b"another picture")  # beside the cwd: not this one
    _csv(tmp_path / "batch", [_edit_row("photos/a.png")])
    monkeypatch.chdir(tmp_path)
    for given in (Path("batch/m.csv"), tmp_path / "batch" / "m.csv"):
        job = _only_job(given)
        assert job.local_files[0].path == str(a.resolve())
    # In a YAML manifest's jobs_from CSV, relative to where the CSV is.
    sub = tmp_path / "y" / "rows"
    png(sub / "b.png", b"bee")
    _csv(sub, [_edit_row("b.png")], "rows.csv")
    y = write(tmp_path / "y", "m.yaml", "jobs_from: rows/rows.csv\n")
    assert _only_job(y).local_files[0].path == str((sub / "b.png").resolve())


def test_images_fans_one_list_across_models(tmp_path: Path) -> None:
    a = png(tmp_path / "a.png")
    b = jpeg(tmp_path / "b.jpg")
    rows = [
        {"model": EDIT, "prompt": "brighter", "images": "a.png|b.jpg", "aspect_ratio": "1:1"},
        {"model": FLUX, "prompt": "brighter", "images": "a.png|b.jpg", "aspect_ratio": "1:1"},
        {"model": PRO, "prompt": "brighter", "images": "a.png|b.jpg", "aspect_ratio": "1:1"},
        {"model": "z-image", "prompt": "a cat", "images": "", "aspect_ratio": "1:1"},
    ]
    for r in rows:
        r.update(quality="basic" if r["model"] == EDIT else "", resolution="1K")
    rows[0].pop("resolution")
    rows[0]["resolution"] = ""
    rows[3]["resolution"] = ""
    m = _csv(tmp_path, rows)
    jobs, problems = read(m)
    assert not problems, [p.format() for p in problems]
    tokens = [file_token(sha(a)), file_token(sha(b))]
    by_model = {j.model: j.input for j in jobs}
    assert by_model[EDIT]["image_urls"] == tokens
    assert by_model[FLUX]["input_urls"] == tokens
    assert by_model[PRO]["image_input"] == tokens
    assert "images" not in by_model[EDIT] and "images" not in by_model["z-image"]
    # `images` is only a name: the job is the one its own field would give.
    own = _csv(tmp_path, [_edit_row("a.png|b.jpg", job_id="")], "own.csv")
    alias = _csv(tmp_path, [_edit_row("a.png|b.jpg", key="images", job_id="")], "alias.csv")
    assert _only_job(own).job_id == _only_job(alias).job_id


def test_images_for_a_model_without_images_and_images_twice(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    m = _csv(
        tmp_path,
        [
            {
                "id": "t",
                "model": "z-image",
                "prompt": "a cat",
                "images": "a.png",
                "aspect_ratio": "1:1",
            }
        ],
        "text.csv",
    )
    p = only_problem(read(m)[1])
    assert p.format() == (
        f"{m}:2 [images] expected a model that takes input images; got z-image, which takes "
        "none; leave images empty for this model, or choose an image-editing model"
    )
    both = _edit_row("a.png")
    both["images"] = "a.png"
    m2 = _csv(tmp_path, [both], "both.csv")
    p = only_problem(read(m2)[1])
    assert p.format() == (
        f"{m2}:2 [images] expected the input images in one place: images or image_urls; "
        f"got both; keep one of them ({EDIT} calls its images image_urls)"
    )


# ---- identity -----------------------------------------------------------------------------


def test_the_same_bytes_under_two_names_are_one_file(tmp_path: Path) -> None:
    a = png(tmp_path / "a.png")
    shutil.copy(a, tmp_path / "copy-of-a.png")
    job = _only_job(_csv(tmp_path, [_edit_row("a.png|copy-of-a.png")]))
    assert job.input["image_urls"] == [file_token(sha(a))] * 2
    assert [f.written for f in job.local_files] == ["a.png"]  # the first path seen


def test_a_moved_file_is_the_same_job(tmp_path: Path) -> None:
    png(tmp_path / "photos" / "a.png")
    first = _only_job(_csv(tmp_path, [_edit_row("photos/a.png", job_id="")]))
    (tmp_path / "elsewhere").mkdir()
    os.rename(tmp_path / "photos" / "a.png", tmp_path / "elsewhere" / "renamed.png")
    moved = _only_job(_csv(tmp_path, [_edit_row("elsewhere/renamed.png", job_id="")]))
    assert (moved.job_id, moved.content_hash) == (first.job_id, first.content_hash)
    assert moved.input == first.input
    png(tmp_path / "elsewhere" / "renamed.png", b"edited in place")
    edited = _only_job(_csv(tmp_path, [_edit_row("elsewhere/renamed.png", job_id="")]))
    assert edited.content_hash != first.content_hash and edited.job_id != first.job_id


def test_each_file_is_read_again_when_its_stamp_moves(tmp_path: Path) -> None:
    """Known by (device, inode, size, mtime, ctime): bytes changed with the size and
    the mtime put back (`cp -p`, `rsync -t`) still move the ctime, and are read again;
    so is a new mtime."""
    a = png(tmp_path / "a.png", b"one")
    inputs = LocalInputs()
    types = ("image/png",)
    first = inputs.resolve("a.png", str(tmp_path), types, 10)
    assert isinstance(first, LocalFile) and first.sha256 == sha(a)
    same = inputs.resolve("a.png", str(tmp_path), types, 10)
    assert isinstance(same, LocalFile) and same.sha256 == first.sha256
    info = a.stat()
    with a.open("r+b") as fh:  # same inode, same size
        fh.seek(-3, os.SEEK_END)
        fh.write(b"two")
    os.utime(a, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert a.stat().st_ctime_ns != info.st_ctime_ns
    again = inputs.resolve("a.png", str(tmp_path), types, 10)
    assert isinstance(again, LocalFile) and again.sha256 == sha(a) != first.sha256
    with a.open("r+b") as fh:
        fh.seek(-3, os.SEEK_END)
        fh.write(b"six")
    os.utime(a, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))
    edited = inputs.resolve("a.png", str(tmp_path), types, 10)
    assert isinstance(edited, LocalFile) and edited.sha256 == sha(a) != again.sha256


def test_sniffing_reads_bytes_not_names() -> None:
    assert sniff_media_type(b"\xff\xd8\xff\xdb....") == "image/jpeg"
    assert sniff_media_type(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_media_type(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_media_type(b"RIFF\x10\x00\x00\x00WAVEfmt ") is None
    assert sniff_media_type(b"GIF89a......") == "image/gif"
    assert sniff_media_type(b"hello, world") is None


def test_object_list_items_take_local_files(tmp_path: Path) -> None:
    kling = CATALOG.get("kling-3.0/video")
    assert kling is not None and kling.fields["kling_elements"].item_fields is not None
    items = dict(kling.fields["kling_elements"].item_fields)
    items["element_input_urls"] = dataclasses.replace(
        items["element_input_urls"], file_types=("image/jpeg", "image/png"), max_file_mb=10
    )
    fields = dict(kling.fields)
    fields["kling_elements"] = dataclasses.replace(fields["kling_elements"], item_fields=items)
    catalog = Catalog({**CATALOG.models, kling.id: dataclasses.replace(kling, fields=fields)})
    a = png(tmp_path / "el" / "a.png")
    b = jpeg(tmp_path / "el" / "b.jpg")
    element = {
        "name": "cat",
        "description": "a cat",
        "element_input_urls": ["el/a.png", "el/b.jpg"],
    }
    m = write(
        tmp_path,
        "k.yaml",
        json.dumps(
            {"jobs": [{"model": kling.id, "prompt": "@cat runs", "kling_elements": [element]}]}
        ),
    )
    items_out = list(iter_jobs(m, catalog=catalog))
    assert all(isinstance(i, Job) for i in items_out), [str(i) for i in items_out]
    job = items_out[0]
    assert isinstance(job, Job)
    assert job.input["kling_elements"][0]["element_input_urls"] == [
        file_token(sha(a)),
        file_token(sha(b)),
    ]
    assert [f.written for f in job.local_files] == ["el/a.png", "el/b.jpg"]
    # A missing element file: located at the item.
    element["element_input_urls"] = ["el/gone.png", "el/b.jpg"]
    m.write_text(
        json.dumps({"jobs": [{"model": kling.id, "prompt": "@cat", "kling_elements": [element]}]})
    )
    problems = [i for i in iter_jobs(m, catalog=catalog) if isinstance(i, Problem)]
    assert [p.field for p in problems] == ["kling_elements[0].element_input_urls"]
    assert "got el/gone.png: no such file" in problems[0].format()


def test_a_url_only_field_says_so_for_a_local_path(tmp_path: Path) -> None:
    # Kling's video element is URL-only (file_types None): local videos are not uploaded.
    (tmp_path / "a.mp4").write_bytes(b"not uploaded")
    element = '{"name": "e", "description": "d", "element_input_video_urls": ["./a.mp4"]}'
    m = _csv(
        tmp_path,
        [{"id": "v", "model": "kling-3.0/video", "prompt": "go", "kling_elements": f"[{element}]"}],
    )
    p = only_problem(read(m)[1])
    assert p.format() == (
        f"{m}:2 [kling_elements[0].element_input_video_urls[0]] expected an http(s) URL; "
        "got './a.mp4'; this field takes URLs only: upload the file first and give its URL"
    )


# ---- counts for plan and validate ----------------------------------------------------------


def test_validate_counts_distinct_files_and_their_size(tmp_path: Path) -> None:
    a = png(tmp_path / "a.png", b"x" * 1_000_000)
    shutil.copy(a, tmp_path / "a2.png")
    b = jpeg(tmp_path / "b.jpg", b"y" * 500_000)
    rows = [
        _edit_row(f"a.png|{other}", job_id=f"j{i}")
        for i, other in enumerate(["b.jpg", "a2.png"] * 3)
    ]
    report = validate_manifest(_csv(tmp_path, rows), catalog=CATALOG)
    assert report.ok, [p.format() for p in report.problems]
    assert (report.local_files, report.local_bytes) == (2, a.stat().st_size + b.stat().st_size)
    assert report.summary().splitlines()[1] == "2 local files to upload (1.5 MB)"
    assert set(report.local_stats) == {
        str(a.resolve()),
        str(b.resolve()),
        str((tmp_path / "a2.png").resolve()),
    }
