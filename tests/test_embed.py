"""`--embed-metadata`'s container edits, read back with Pillow: hostile prompts (quotes,
CJK, emoji, control characters, 100 KB) through PNG text chunks, JPEG and WebP EXIF; the
pixels untouched; the A1111 `parameters` text; sidecar names."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from liangxin_batch.core._provenance import (
    legacy_sidecar_path,
    parameters_text,
    sidecar_path,
    stem_key,
)
from liangxin_batch.outputs._embed import (
    NotEmbeddable,
    copy_path,
    embeddable,
    embedded,
    jpeg_with_comment,
    png_with_text,
)
from liangxin_batch.outputs._provenance import record_parameters

HOSTILE = [
    'a "quoted", prompt: with <html> & \\ backslash',
    "猫 🐈‍⬛ 😀 e\u0301 \u202e rtl",
    "bell\x07 escape\x1b[31m tab\t newline\n cr\r del\x7f",
    "x" * 100_000,
    ("长😀, : \n" * 20_000)[:100_000],
]


def image_bytes(fmt: str, *, exif: bytes | None = None, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    mode = mode or ("RGB" if fmt == "JPEG" else "RGBA")
    image = Image.new(mode, (13, 7), (10, 200, 30))
    image.putpixel((3, 3), (250, 1, 2) if mode == "RGB" else (250, 1, 2, 128))
    kwargs = {"exif": exif} if exif else {}
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def record(prompt: str) -> dict[str, object]:
    return {
        "job_id": "j-1",
        "task_id": "t-1",
        "model": "nano-banana-2",
        "input": {"prompt": prompt, "aspect_ratio": "16:9", "image_input": ["a,b.png"]},
        "files": [{"n": 1, "path": "outputs/m/j-1.png"}],
    }


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.tobytes()


@pytest.mark.parametrize("prompt", HOSTILE, ids=["quotes", "cjk", "control", "100k", "mixed"])
def test_png_parameters_and_record_round_trip(prompt: str) -> None:
    original = image_bytes("PNG")
    rec = record(prompt)
    copy = embedded(original, ".png", rec)
    with Image.open(io.BytesIO(copy)) as image:
        assert image.text["parameters"] == record_parameters(rec)  # type: ignore[attr-defined]
        assert image.text["parameters"].startswith(prompt)  # type: ignore[attr-defined]
        assert json.loads(image.text["liangxin-batch"]) == rec  # type: ignore[attr-defined]
    assert pixels(copy) == pixels(original)


@pytest.mark.parametrize("prompt", HOSTILE[:3], ids=["quotes", "cjk", "control"])
@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_exif_user_comment_round_trips(prompt: str, fmt: str) -> None:
    original = image_bytes(fmt)
    rec = record(prompt)
    copy = embedded(original, ".jpg" if fmt == "JPEG" else ".webp", rec)
    with Image.open(io.BytesIO(copy)) as image:
        comment = image.getexif().get_ifd(0x8769)[0x9286]
    assert comment[:8] == b"UNICODE\x00"
    assert comment[8:].decode("utf-16-be") == record_parameters(rec)
    assert pixels(copy) == pixels(original)  # the compressed data was copied, not re-encoded
    # The image data itself is there byte for byte (WebP: every chunk after VP8X).
    assert copy.count(original[30:] if fmt == "WEBP" else original[-200:]) == 1


def test_a_simple_webp_gains_a_vp8x_header_and_has_no_64k_limit() -> None:
    original = image_bytes("WEBP", mode="RGB")
    assert original[12:16] in (b"VP8 ", b"VP8L")  # the simple format: no VP8X yet
    copy = embedded(original, ".webp", record(HOSTILE[4]))
    assert copy[12:16] == b"VP8X"
    with Image.open(io.BytesIO(copy)) as image:
        comment = image.getexif().get_ifd(0x8769)[0x9286]
        assert image.size == (13, 7)
    assert comment[8:].decode("utf-16-be").startswith(HOSTILE[4])
    assert pixels(copy) == pixels(original)


def test_a_jpeg_text_beyond_one_segment_gets_no_copy() -> None:
    with pytest.raises(NotEmbeddable, match="JPEG segment holds"):
        embedded(image_bytes("JPEG"), ".jpg", record(HOSTILE[3]))


def test_a_jpeg_keeps_its_other_exif_tags_and_replaces_its_old_comment() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Maker Inc."  # Make
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00old comment"
    original = image_bytes("JPEG", exif=exif.tobytes())
    copy = jpeg_with_comment(original, "new, 猫")
    with Image.open(io.BytesIO(copy)) as image:
        read = image.getexif()
    assert read[0x010F] == "Maker Inc."
    assert read.get_ifd(0x8769)[0x9286] == b"UNICODE\x00" + "new, 猫".encode("utf-16-be")
    assert copy.count(b"Exif\x00\x00") == 1


def test_a_png_keeps_its_chunks_and_replaces_an_old_parameters_chunk() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "stale")
    info.add_text("Software", "generator 1.0")
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "PNG", pnginfo=info)
    copy = png_with_text(out.getvalue(), {"parameters": "fresh 猫"})
    with Image.open(io.BytesIO(copy)) as image:
        assert image.text == {"parameters": "fresh 猫", "Software": "generator 1.0"}  # type: ignore[attr-defined]


def test_what_gets_no_copy() -> None:
    assert not embeddable("outputs/m/a.mp4") and not embeddable("outputs/m/a.gif")
    assert embeddable("outputs/m/A.PNG") and embeddable("outputs/m/a.jpg")
    with pytest.raises(NotEmbeddable):
        embedded(b"\x00\x00\x00\x18ftypmp42", ".mp4", record("p"))
    with pytest.raises(NotEmbeddable):
        embedded(b"not a png at all", ".png", record("p"))
    assert copy_path("outputs/m/x/a.png") == "with-metadata/m/x/a.png"


def test_parameters_text_follows_the_a1111_convention() -> None:
    text = parameters_text(
        "flux",
        {"prompt": "a cat\non a mat", "negative_prompt": "dogs", "seed": 7, "ratio": "16:9"},
        {"Job id": "j1"},
    )
    assert text == (
        'a cat\non a mat\nNegative prompt: dogs\nSeed: 7, Ratio: "16:9", Model: flux, Job id: j1'
    )


def test_sidecar_names() -> None:
    assert sidecar_path("outputs/m/a.b.png") == "outputs/m/a.b.json"
    assert legacy_sidecar_path("outputs/m/a.png") == "outputs/m/a~png.json"
    assert legacy_sidecar_path("outputs/m/a.b.png") != sidecar_path("outputs/m/a.b.png.mp4")
    assert stem_key("outputs/M/A.PNG") == stem_key("outputs/m/a.mp4") == "outputs/m/a"
    assert stem_key("outputs/m.d/x") == "outputs/m.d/x"  # a dot in a folder is no suffix
