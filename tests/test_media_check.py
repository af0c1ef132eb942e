"""check_media: complete files pass; truncated, mislabelled and damaged ones get a reason."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from liangxin_batch.run._media_check import check_media

RNG_SEED = 20240611


def _noise(size: tuple[int, int] = (64, 48), seed: int = RNG_SEED) -> Image.Image:
    """Random pixels: they do not compress, so every file is comfortably over 1000 bytes."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def _encode(fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    if options.pop("animated", False):
        frames = [_noise(seed=RNG_SEED + i) for i in range(4)]
        frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], **options)
    else:
        _noise().save(buffer, fmt, **options)
    return buffer.getvalue()


IMAGES: dict[str, tuple[str, bytes]] = {
    "png": (".png", _encode("PNG")),
    "jpeg": (".jpg", _encode("JPEG", quality=90)),
    "jpeg-progressive": (".jpeg", _encode("JPEG", progressive=True)),
    "webp-lossy": (".webp", _encode("WEBP")),
    "webp-lossless": (".webp", _encode("WEBP", lossless=True)),
    "webp-animated": (".webp", _encode("WEBP", animated=True)),
    "gif-animated": (".gif", _encode("GIF", animated=True)),
}


def _box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _mp4(*boxes: bytes) -> bytes:
    return b"".join(boxes)


FTYP = _box(b"ftyp", b"isom\x00\x00\x02\x00isomiso2mp41")
MOOV = _box(b"moov", _box(b"mvhd", bytes(100)))
MDAT = _box(b"mdat", random.Random(RNG_SEED).randbytes(4000))
MP4 = _mp4(FTYP, MOOV, MDAT)


def _write(tmp_path: Path, data: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _cuts(data: bytes) -> list[int]:
    """New lengths: one byte short, half, 1000 bytes short."""
    assert len(data) > 2000
    return [len(data) - 1, len(data) // 2, len(data) - 1000]


@pytest.mark.parametrize("name", IMAGES)
def test_complete_images_pass(tmp_path: Path, name: str) -> None:
    ext, data = IMAGES[name]
    assert check_media(_write(tmp_path, data, "f" + ext), ext=ext) is None


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("cut", [0, 1, 2])
def test_truncated_images_fail(tmp_path: Path, name: str, cut: int) -> None:
    ext, data = IMAGES[name]
    path = _write(tmp_path, data[: _cuts(data)[cut]], "f" + ext)
    reason = check_media(path, ext=ext)
    assert reason is not None
    assert reason.startswith(("truncated ", "corrupt ")), reason


def test_reasons_read_well(tmp_path: Path) -> None:
    data = IMAGES["png"][1]
    assert check_media(_write(tmp_path, data[:-1], "a.png"), ext=".png") == (
        "truncated PNG: 'IEND' chunk runs past the end of the file"
    )
    half = check_media(_write(tmp_path, data[: len(data) // 2], "b.png"), ext=".png")
    assert half == "truncated PNG: image file is truncated"
    gif = IMAGES["gif-animated"][1]
    assert check_media(_write(tmp_path, gif[:-1], "c.gif"), ext=".gif") == (
        "truncated GIF: no trailer byte at the end"
    )
    webp = IMAGES["webp-lossy"][1]
    reason = check_media(_write(tmp_path, webp[:-1000], "d.webp"), ext=".webp")
    riff, left = len(webp), len(webp) - 1000
    assert reason == f"truncated WEBP: the RIFF header says {riff} bytes, the file has {left}"


def test_any_image_format_under_any_image_extension(tmp_path: Path) -> None:
    # Services mislabel png/jpeg: what matters is a complete image.
    assert check_media(_write(tmp_path, IMAGES["png"][1], "x.jpg"), ext=".jpg") is None
    assert check_media(_write(tmp_path, IMAGES["jpeg"][1], "x.png"), ext=".png") is None
    assert check_media(_write(tmp_path, IMAGES["gif-animated"][1], "x.webp"), ext="webp") is None


def test_image_under_a_video_extension_fails(tmp_path: Path) -> None:
    png = _write(tmp_path, IMAGES["png"][1], "x.mp4")
    assert check_media(png, ext=".mp4") == "expected a video, got a PNG image"
    jpeg = _write(tmp_path, IMAGES["jpeg"][1], "x.webm")
    assert check_media(jpeg, ext=".webm") == "expected a video, got a JPEG image"


def test_video_under_an_image_extension_fails(tmp_path: Path) -> None:
    assert check_media(_write(tmp_path, MP4, "x.png"), ext=".png") == (
        "expected an image, got a video"
    )


def test_random_bytes_fail(tmp_path: Path) -> None:
    noise = random.Random(1).randbytes(5000)
    assert check_media(_write(tmp_path, noise, "x.png"), ext=".png") == (
        "not an image: Pillow cannot identify it"
    )
    reason = check_media(_write(tmp_path, noise, "x.mp4"), ext=".mp4")
    assert reason is not None and "MP4" in reason


def test_unknown_extension_empty_and_missing_files(tmp_path: Path) -> None:
    assert check_media(_write(tmp_path, b"anything", "x.txt"), ext=".txt") is None
    assert check_media(_write(tmp_path, b"", "x.png"), ext=".PNG") == "empty file"
    assert check_media(_write(tmp_path, b"", "x.mp4"), ext="mp4") == "empty file"
    reason = check_media(tmp_path / "missing.png", ext=".png")
    assert reason is not None and reason.startswith("cannot read the file")


# --- ISO-BMFF videos -----------------------------------------------------------------


def test_complete_mp4_passes(tmp_path: Path) -> None:
    for ext in (".mp4", ".mov", ".m4v"):
        assert check_media(_write(tmp_path, MP4, "v" + ext), ext=ext) is None


@pytest.mark.parametrize("cut", [0, 1, 2])
def test_truncated_mp4_fails(tmp_path: Path, cut: int) -> None:
    path = _write(tmp_path, MP4[: _cuts(MP4)[cut]], "v.mp4")
    reason = check_media(path, ext=".mp4")
    assert reason is not None and reason.startswith("truncated MP4: "), reason


def test_mp4_reasons(tmp_path: Path) -> None:
    short = _write(tmp_path, MP4[:-1], "a.mp4")
    assert check_media(short, ext=".mp4") == "truncated MP4: box 'mdat' needs 4008 bytes, 4007 left"
    no_moov = _write(tmp_path, _mp4(FTYP, MDAT), "b.mp4")
    assert check_media(no_moov, ext=".mp4") == "not an MP4: no moov box"
    assert check_media(no_moov, ext=".mov") == "not a MOV: no moov box"
    bad = _write(tmp_path, FTYP + struct.pack(">I4s", 4, b"moov") + bytes(8), "c.mp4")
    expected = f"not an MP4: bad size 4 of box 'moov' at byte {len(FTYP)}"
    assert check_media(bad, ext=".mp4") == expected
    header = _write(tmp_path, MP4 + b"\x00\x00\x00", "d.mp4")
    expected = f"truncated MP4: partial box header at byte {len(MP4)}"
    assert check_media(header, ext=".mp4") == expected


def test_last_box_overrunning_eof_fails(tmp_path: Path) -> None:
    overrun = _mp4(FTYP, MOOV, struct.pack(">I4s", 9000, b"mdat") + bytes(4000))
    reason = check_media(_write(tmp_path, overrun, "v.mp4"), ext=".mp4")
    assert reason == "truncated MP4: box 'mdat' needs 9000 bytes, 4008 left"


def test_64bit_largesize_box(tmp_path: Path) -> None:
    payload = bytes(3000)
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + len(payload)) + payload
    assert check_media(_write(tmp_path, _mp4(FTYP, large, MOOV), "v.mp4"), ext=".mp4") is None
    cut = _write(tmp_path, _mp4(FTYP, MOOV, large[:-1]), "w.mp4")
    assert check_media(cut, ext=".mp4") == "truncated MP4: box 'mdat' needs 3016 bytes, 3015 left"
    tiny = struct.pack(">I4sQ", 1, b"mdat", 12)
    reason = check_media(_write(tmp_path, _mp4(FTYP, MOOV, tiny), "x.mp4"), ext=".mp4")
    assert reason is not None and reason.startswith("not an MP4: bad size 12")


def test_size_zero_box_runs_to_eof(tmp_path: Path) -> None:
    to_end = struct.pack(">I4s", 0, b"mdat") + bytes(2000)
    assert check_media(_write(tmp_path, _mp4(FTYP, MOOV, to_end), "v.mp4"), ext=".mp4") is None
    # Any length is "complete" for such a box: only the moov before it is checked.
    cut = _write(tmp_path, _mp4(FTYP, MOOV, to_end[:-1000]), "w.mp4")
    assert check_media(cut, ext=".mp4") is None


def test_quicktime_box_order(tmp_path: Path) -> None:
    # QuickTime: no ftyp, wide/free atoms, moov after mdat.
    mov = _mp4(_box(b"wide"), MDAT, _box(b"free", bytes(16)), MOOV)
    assert check_media(_write(tmp_path, mov, "v.mov"), ext=".mov") is None


def test_many_boxes_are_capped_and_not_judged(tmp_path: Path) -> None:
    """Past the walk's cap a (paid) file is not failed on a guess."""
    many = _mp4(FTYP, MOOV, _box(b"free") * 10_001)
    assert check_media(_write(tmp_path, many, "v.mp4"), ext=".mp4") is None


def test_webm_magic_only(tmp_path: Path) -> None:
    webm = b"\x1a\x45\xdf\xa3" + bytes(100)
    assert check_media(_write(tmp_path, webm, "v.webm"), ext=".webm") is None
    assert check_media(_write(tmp_path, webm[:50], "w.mkv"), ext=".mkv") is None  # not checked
    assert check_media(_write(tmp_path, MP4, "x.webm"), ext=".webm") == (
        "not a WebM: no EBML header"
    )


def test_simulator_video(tmp_path: Path) -> None:
    # Without PyAV the simulator's "video" is a PNG placeholder, which check_media rejects.
    pytest.importorskip("av")
    from liangxin_batch.simulator._media import render_video

    data = render_video("a cat on a boat", "test", (64, 48))
    assert check_media(_write(tmp_path, data, "v.mp4"), ext=".mp4") is None
    for length in _cuts(data):
        reason = check_media(_write(tmp_path, data[:length], "w.mp4"), ext=".mp4")
        assert reason is not None and reason.startswith(("truncated MP4", "not an MP4")), reason


# --- Pixel cap, Pillow's global limit and LOAD_TRUNCATED_IMAGES ---------------------


@pytest.mark.parametrize("name", IMAGES)
def test_over_cap_valid_images_pass_via_verify(tmp_path: Path, name: str) -> None:
    ext, data = IMAGES[name]
    assert check_media(_write(tmp_path, data, "f" + ext), ext=ext, max_pixels=100) is None


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("cut", [0, 1, 2])
def test_over_cap_truncated_images(tmp_path: Path, name: str, cut: int) -> None:
    """What is caught without decoding: PNG (chunk CRCs + IEND walk), WebP (Pillow's
    open needs the whole RIFF), JPEG (end-of-image marker), GIF (trailer byte)."""
    ext, data = IMAGES[name]
    truncated = data[: _cuts(data)[cut]]
    path = _write(tmp_path, truncated, "f" + ext)
    reason = check_media(path, ext=ext, max_pixels=100)
    if name.startswith("gif") and truncated.endswith(b";"):
        assert reason is None  # a cut right after a ';' data byte looks complete (1 in 256)
    else:
        assert reason is not None, name


def test_pillow_verify_alone_misses_truncated_jpeg_and_png_end() -> None:
    """Why the end-of-file checks exist: verify() passes these truncated files."""
    for data in (IMAGES["jpeg"][1][:-1000], IMAGES["png"][1][:-1]):
        with Image.open(io.BytesIO(data)) as im:
            im.verify()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I4s", len(payload), kind) + payload + struct.pack(">I", crc)


def test_huge_declared_png_is_verified_without_decoding(tmp_path: Path) -> None:
    # 20000 x 20000 = 400 M pixels: above Pillow's own open() limit (~179 M), so
    # Image.open raises DecompressionBombError; check_media opens it without that check.
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(bytes(1000)))
        + _png_chunk(b"IEND", b"")
    )
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    assert check_media(_write(tmp_path, data, "big.png"), ext=".png") is None
    reason = check_media(_write(tmp_path, data[:-1], "cut.png"), ext=".png")
    assert reason == "truncated PNG: 'IEND' chunk runs past the end of the file"
    flip = data.index(b"IDAT") + 8  # a byte of the compressed data: its CRC no longer matches
    bad_crc = data[:flip] + bytes([data[flip] ^ 1]) + data[flip + 1 :]
    reason = check_media(_write(tmp_path, bad_crc, "crc.png"), ext=".png")
    assert reason is not None and reason.startswith("corrupt PNG"), reason


def test_pillow_global_limit_does_not_decide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext, data = IMAGES["png"]
    good = _write(tmp_path, data, "good.png")
    bad = _write(tmp_path, data[: len(data) // 2], "bad.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 3072 px > 2 x 100: open() raises
    assert check_media(good, ext=ext) is None
    assert check_media(bad, ext=ext) == "truncated PNG: image file is truncated"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 3072 px > 2000: open() warns
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert check_media(good, ext=ext) is None
        assert check_media(bad, ext=ext) == "truncated PNG: image file is truncated"
    with pytest.warns(Image.DecompressionBombWarning):
        assert check_media(good, ext=ext) is None


def test_load_truncated_images_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ext, data = IMAGES["jpeg"]
    path = _write(tmp_path, data, "x.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    check_media(path, ext=ext)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never touched
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as other code might
    assert check_media(path, ext=ext) == (
        "cannot check images while PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set"
    )


def test_simulator_video_lasts_the_duration_asked(tmp_path: Path) -> None:
    """Issue 15: a kling task with duration "3" got a 1 s clip."""
    av = pytest.importorskip("av")
    from liangxin_batch.simulator._media import VIDEO_FPS, render_video

    data = render_video("waves", "test", (64, 48), seconds=3)
    with av.open(_write(tmp_path, data, "v.mp4")) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 3 * VIDEO_FPS


def test_simulator_video_without_pyav_is_still_a_real_mp4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: without the `video` extra the demo's video was a PNG named .mp4; now a
    small clip shipped with the package, which check_media accepts as an MP4."""
    from liangxin_batch.simulator import _media

    monkeypatch.setattr(_media, "_av", None)
    data = _media.render_video("waves", "test", (64, 48), seconds=3)
    assert data[4:8] == b"ftyp"
    assert check_media(_write(tmp_path, data, "v.mp4"), ext=".mp4") is None
