"""Is a downloaded file really a complete file of its type?

A Content-Length can lie and a connection can drop at a clean boundary, so a size and a
digest of what arrived do not prove the file is whole: a truncated image or video must not
be counted "verified". `check_media` opens the file and checks its structure (images are
fully decoded with Pillow; ISO-BMFF videos have their top-level boxes walked) and returns
a short reason for a person, or None when the file is complete.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, UnidentifiedImageError

from liangxin_batch.core._local_files import sniff_media_type

__all__ = ["check_media"]

_IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
_BMFF = {".mp4": "an MP4", ".mov": "a MOV", ".m4v": "an M4V"}
_EBML = {".webm": "a WebM", ".mkv": "an MKV"}
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_MAX_BOXES = 10_000  # top-level MP4 boxes; real files have a handful (fragmented: a few per s)
_MAX_CHUNKS = 100_000  # PNG chunks (IDAT chunks are usually 8-64 KiB)
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def check_media(
    path: Path,
    *,
    ext: str,
    max_pixels: int | None = 178_956_970,
    decoded: list[Image.Image] | None = None,
) -> str | None:
    """None when the file is a complete, decodable file of the kind `ext` names
    ('.png', '.jpg', '.jpeg', '.webp', '.gif', '.mp4', '.mov', '.m4v', '.webm', '.mkv');
    otherwise a short reason for a person ("truncated PNG: image file is truncated",
    "not an MP4: no moov box", ...). Unknown extensions: None (nothing to check).

    Images above `max_pixels` are not decoded (decompression bombs): only Pillow's
    `verify()` and the end-of-file checks run for them. Never raises.

    `decoded`, when given, receives a complete single-frame image as decoded here, so a
    preview can be made from it without decoding the file a second time.
    """
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    if ext not in _IMAGE_EXTS and ext not in _BMFF and ext not in _EBML:
        return None
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                return "empty file"
            f.seek(0)
            head = f.read(16)
            if ext in _IMAGE_EXTS:
                return _check_image(f, size, head, max_pixels, decoded)
            image = _sniff_image(head)
            if image:
                return f"expected a video, got a {image} image"
            if ext in _EBML:
                # WebM/Matroska: the EBML magic only. Element sizes may be "unknown"
                # (live muxers), so there is no cheap exact-tiling check as for MP4.
                return None if head[:4] == _EBML_MAGIC else f"not {_EBML[ext]}: no EBML header"
            return _check_bmff(f, size, _BMFF[ext])
    except OSError as err:
        return f"cannot read the file: {err.strerror or err}"


#: The formats a downloaded image is verified as, by sniffed media type (Pillow's names).
_PILLOW_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
}


def _sniff_image(head: bytes) -> str | None:
    """The image format the first bytes announce, named as Pillow names it."""
    kind = sniff_media_type(head)
    return _PILLOW_FORMATS.get(kind) if kind is not None else None


def _check_image(
    f: BinaryIO,
    size: int,
    head: bytes,
    max_pixels: int | None,
    decoded: list[Image.Image] | None = None,
) -> str | None:
    if head[4:8] == b"ftyp" or head[:4] == _EBML_MAGIC:
        return "expected an image, got a video"
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # set by someone else: load() would pad, not fail
        return "cannot check images while PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set"
    fmt = _sniff_image(head) or "image"
    riff = struct.unpack("<I", head[4:8])[0] + 8 if fmt == "WEBP" else 0
    if riff > size:  # Pillow would only say "could not create decoder object"
        return f"truncated WEBP: the RIFF header says {riff} bytes, the file has {size}"
    try:
        try:
            im = Image.open(f)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            im = _open_unchecked(f)  # Pillow's process-wide limit; ours is max_pixels
        fmt = im.format or fmt
        over_cap = max_pixels is not None and im.width * im.height > max_pixels
        if over_cap:
            im.verify()  # no decoding. PNG: chunk CRCs; JPEG, GIF, WebP: next to nothing
        else:
            for frame in range(getattr(im, "n_frames", 1)):
                im.seek(frame)
                im.load()
    except UnidentifiedImageError:
        return "not an image: Pillow cannot identify it"
    except Exception as err:  # Pillow raises many kinds on damaged input
        msg = str(err) or type(err).__name__
        return f"{'truncated' if 'truncat' in msg.lower() else 'corrupt'} {fmt}: {msg}"
    # A whole single-frame image, decoded: the caller may make its preview from it.
    whole = not over_cap and getattr(im, "n_frames", 1) == 1
    # Decoding stops at the end of the pixel data: what follows it is checked here.
    if fmt == "PNG":
        broken = _check_png_end(f, size)
        if broken is None and whole and decoded is not None:
            decoded.append(im)
        return broken
    f.seek(max(0, size - 2))
    tail = f.read(2)
    if fmt == "GIF" and tail[-1:] != b";":
        return "truncated GIF: no trailer byte at the end"
    if fmt in ("JPEG", "MPO") and over_cap and tail != b"\xff\xd9":
        return "truncated JPEG: no end-of-image marker at the end"
    if whole and decoded is not None:
        decoded.append(im)
    return None


def _open_unchecked(f: BinaryIO) -> ImageFile.ImageFile:
    """`Image.open` without its DecompressionBomb check (which reads a process global)."""
    Image.init()
    f.seek(0)
    prefix = f.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        result = accept(prefix) if accept else True
        if result and not isinstance(result, str):
            f.seek(0)
            try:
                return factory(f, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise UnidentifiedImageError("cannot identify image file")


def _check_png_end(f: BinaryIO, size: int) -> str | None:
    """The chunks (length, type, data, CRC) must reach a complete IEND chunk."""
    pos = len(_PNG_SIG)
    for _ in range(_MAX_CHUNKS):
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8:
            return "truncated PNG: no IEND chunk"
        length, kind = struct.unpack(">I4s", header)
        pos += 12 + length
        if pos > size:
            return f"truncated PNG: {kind.decode('latin-1')!r} chunk runs past the end of the file"
        if kind == b"IEND":
            return None
    return None  # more chunks than we walk: not judged (a paid file is not failed on a guess)


def _check_bmff(f: BinaryIO, size: int, name: str) -> str | None:
    """ISO-BMFF (MP4/MOV/M4V): top-level boxes must tile the file exactly and hold a moov."""
    label = name.split()[1]
    pos, kinds = 0, set()
    for _ in range(_MAX_BOXES):  # headers only: payloads are skipped by seeking
        if pos >= size:
            break
        f.seek(pos)
        header = f.read(16)  # size, type and (when size == 1) a 64-bit largesize
        if len(header) < 8:
            return f"truncated {label}: partial box header at byte {pos}"
        box_size, raw = struct.unpack(">I4s", header[:8])
        kind, minimum = raw.decode("latin-1"), 8
        if box_size == 1:
            if len(header) < 16:
                return f"truncated {label}: partial box header at byte {pos}"
            box_size, minimum = struct.unpack(">Q", header[8:])[0], 16
        elif box_size == 0:  # this box runs to the end of the file
            box_size = size - pos
        if box_size < minimum:
            return f"not {name}: bad size {box_size} of box {kind!r} at byte {pos}"
        if pos + box_size > size:
            return f"truncated {label}: box {kind!r} needs {box_size} bytes, {size - pos} left"
        kinds.add(kind)
        pos += box_size
    if pos < size:
        return None  # more boxes than we walk: not judged (a paid file is not failed on a guess)
    return None if "moov" in kinds else f"not {name}: no moov box"
