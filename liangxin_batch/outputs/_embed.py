"""`--embed-metadata`: a copy of each output image with its prompt and parameters inside,
for the tools that read them from the file (PNG-info panels, image browsers, civitai).

The originals are never touched (a generated file may carry C2PA credentials that any
rewrite breaks); the copies go under `DIR/with-metadata/`, at the same path as below
`DIR/outputs/`. A copy is the original's bytes with metadata added at the container
level, never re-encoded (the pixels, and every other chunk, stay as they were):

- PNG: a `parameters` text chunk in the AUTOMATIC1111 convention (core/_provenance.py
  `parameters_text`), plus the whole provenance record as JSON in a `liangxin-batch`
  chunk; `tEXt` when the text is Latin-1, else `iTXt` (UTF-8), as Pillow writes them.
  Inserted before the first IDAT, where streaming readers look; chunks of the same
  keywords in the original are replaced.
- JPEG: EXIF UserComment (tag 0x9286 of the Exif IFD) with the same text, charset
  `UNICODE` (the EXIF spec's 8-byte prefix, UTF-16 in the TIFF header's byte order: big
  endian, as piexif and A1111 write and read it); an existing EXIF block keeps its
  other tags. An APP1 segment holds at most 64 KB: a longer text gets no copy (said in
  the log; the sidecar has it all).
- WebP: the same EXIF in an `EXIF` chunk (a simple-format file gains the `VP8X` header
  that announces it). No size limit.
- Anything else (videos, GIF, ...): no copy.

Made in worker threads after a job is done; a copy that cannot be made is a note in the
log, never a job's failure.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from PIL import Image

from liangxin_batch.outputs._atomic import write_atomic
from liangxin_batch.outputs._layout import OUTPUTS_DIR
from liangxin_batch.outputs._provenance import record_parameters

__all__ = [
    "EMBED_DIR",
    "PARAMETERS_KEY",
    "RECORD_KEY",
    "copy_path",
    "embed_copy",
    "embeddable",
    "jpeg_with_comment",
    "png_with_text",
    "user_comment",
    "webp_with_comment",
]

EMBED_DIR = "with-metadata"
PARAMETERS_KEY = "parameters"
RECORD_KEY = "liangxin-batch"
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE = b"UNICODE\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_APP1 = 65533  # an APP1 segment's length field counts itself: 65535 - 2
_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})


class NotEmbeddable(ValueError):
    """This file cannot carry the metadata (what it is, or why, in the message)."""


def embeddable(path: str) -> bool:
    """Whether `--embed-metadata` makes a copy of this output (by its extension)."""
    return os.path.splitext(path)[1].lower() in _SUFFIXES


def copy_path(rel: str) -> str:
    """`with-metadata/m/x.png` for `outputs/m/x.png` (relative to DIR)."""
    head, sep, rest = rel.partition("/")
    return f"{EMBED_DIR}/{rest}" if sep and head == OUTPUTS_DIR else f"{EMBED_DIR}/{rel}"


# -- PNG ------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _text_chunk(keyword: str, text: str) -> bytes:
    key = keyword.encode("latin-1")
    try:
        return _png_chunk(b"tEXt", key + b"\x00" + text.encode("latin-1"))
    except UnicodeEncodeError:  # CJK, emoji: international text, UTF-8, uncompressed
        return _png_chunk(b"iTXt", key + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def _png_keyword(kind: bytes, data: bytes) -> bytes | None:
    if kind in (b"tEXt", b"iTXt", b"zTXt"):
        return data.split(b"\x00", 1)[0]
    return None


def png_with_text(data: bytes, texts: Mapping[str, str]) -> bytes:
    """The PNG `data` with a text chunk per `texts` item before its first IDAT."""
    if not data.startswith(_PNG_SIGNATURE):
        raise NotEmbeddable("not a PNG")
    keys = {k.encode("latin-1") for k in texts}
    out = [_PNG_SIGNATURE]
    pos, inserted = len(_PNG_SIGNATURE), False
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise NotEmbeddable("a truncated PNG chunk")
        if kind == b"IDAT" and not inserted:
            out.extend(_text_chunk(k, v) for k, v in texts.items())
            inserted = True
        if _png_keyword(kind, data[pos + 8 : pos + 8 + length]) not in keys:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    if not inserted:
        raise NotEmbeddable("a PNG without image data")
    return b"".join(out)


# -- EXIF (JPEG, WebP) ------------------------------------------------------------------


def user_comment(text: str) -> bytes:
    """An EXIF UserComment value: the UNICODE charset prefix, then UTF-16 big endian
    (the TIFF byte order `_exif_with` writes)."""
    return _UNICODE + text.encode("utf-16-be")


def _exif_with(existing: bytes | None, text: str) -> bytes:
    """A whole EXIF block ("Exif\\0\\0" + TIFF, big endian) with UserComment set."""
    exif = Image.Exif()
    if existing:
        with suppress(Exception):  # an unreadable block is replaced by ours alone
            exif.load(existing)
    exif.endian = ">"  # big endian: piexif and A1111 read UTF-16 big endian
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = user_comment(text)
    block: bytes = exif.tobytes()
    return block


def jpeg_with_comment(data: bytes, text: str) -> bytes:
    """The JPEG `data` with an EXIF UserComment of `text` (its segments copied, an
    earlier EXIF block's other tags kept, the scan data untouched)."""
    if not data.startswith(b"\xff\xd8"):
        raise NotEmbeddable("not a JPEG")
    segments: list[bytes] = []
    existing: bytes | None = None
    pos = 2
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise NotEmbeddable("a damaged JPEG header")
        marker = data[pos + 1]
        if marker == 0xDA or marker in (0xD9, 0x01) or 0xD0 <= marker <= 0xD7:
            break  # start of scan: the rest is image data, copied as it is
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos : pos + 2 + length]
        if marker == 0xE1 and segment[4:10] == b"Exif\x00\x00":
            existing = existing or segment[4:]
        else:
            segments.append(segment)
        pos += 2 + length
    block = _exif_with(existing, text)
    if len(block) > _MAX_APP1:
        raise NotEmbeddable(
            f"the text needs {len(block):,} bytes of EXIF; a JPEG segment holds {_MAX_APP1:,}"
        )
    app1 = b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block
    at = 1 if segments and segments[0][1] == 0xE0 else 0  # after a JFIF APP0
    segments.insert(at, app1)
    return b"\xff\xd8" + b"".join(segments) + data[pos:]


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return kind + struct.pack("<I", len(payload)) + payload + pad


def webp_with_comment(data: bytes, text: str) -> bytes:
    """The WebP `data` with an EXIF chunk holding UserComment `text`."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise NotEmbeddable("not a WebP")
    chunks: list[tuple[bytes, bytes]] = []
    existing: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        payload = data[pos + 8 : pos + 8 + size]
        if len(payload) != size:
            raise NotEmbeddable("a truncated WebP chunk")
        if kind == b"EXIF":
            existing = payload if payload.startswith(b"Exif") else b"Exif\x00\x00" + payload
        else:
            chunks.append((kind, payload))
        pos += 8 + size + (size % 2)
    if not chunks:
        raise NotEmbeddable("an empty WebP")
    if chunks[0][0] != b"VP8X":  # the simple format: announce the EXIF in a VP8X header
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            alpha = 0x10 if "A" in image.mode else 0
        header = bytes([alpha]) + b"\x00\x00\x00"
        header += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", header))
    flags = chunks[0][1]
    chunks[0] = (b"VP8X", bytes([flags[0] | 0x08]) + flags[1:])
    exif = (b"EXIF", _exif_with(existing, text)[6:])  # the TIFF block, as the spec says
    xmp = next((i for i, (k, _) in enumerate(chunks) if k == b"XMP "), len(chunks))
    chunks.insert(xmp, exif)
    body = b"WEBP" + b"".join(_riff_chunk(k, p) for k, p in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# -- the copy -----------------------------------------------------------------------------


def embedded(data: bytes, suffix: str, record: Mapping[str, Any]) -> bytes:
    """`data` (an output's bytes, of type `suffix`) with the record's metadata in it."""
    text = record_parameters(record)
    suffix = suffix.lower()
    if suffix == ".png":
        whole = json.dumps(record, ensure_ascii=False, sort_keys=True)
        return png_with_text(data, {PARAMETERS_KEY: text, RECORD_KEY: whole})
    if suffix in (".jpg", ".jpeg"):
        return jpeg_with_comment(data, text)
    if suffix == ".webp":
        return webp_with_comment(data, text)
    raise NotEmbeddable(f"no metadata copy of a {suffix or 'typeless'} file")


def embed_copy(out_dir: Path, rel: str, record: Mapping[str, Any]) -> str:
    """Write `DIR/with-metadata/...` for output `rel` (relative to DIR), atomically;
    returns the copy's path relative to DIR. NotEmbeddable or OSError when it cannot."""
    source = out_dir / rel
    data = embedded(source.read_bytes(), source.suffix, record)
    target_rel = copy_path(rel)
    target = out_dir / target_rel
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
    return target_rel
