"""Real result files: PNG/JPEG images of the prompt, and tiny playable MP4 videos.

The bytes depend only on their arguments, so a test can regenerate a file and compare
digests (on one machine: the fonts installed may draw characters Pillow's own font
lacks, see `_text.py`). Images show the wrapped prompt on a background whose colour
comes from a hash of the prompt; videos (PyAV, the `video` extra) animate a bar over
the same picture for the duration asked, and without PyAV are a small clip shipped with
the package.
"""

from __future__ import annotations

import colorsys
import hashlib
import importlib.resources
import io
from types import ModuleType

from PIL import Image, ImageDraw

from ._text import TextStyle, spell_missing, wrap

__all__ = ["VIDEO_BACKEND", "VIDEO_MAX_SECONDS", "output_size", "render_image", "render_video"]

IMAGE_LONG_SIDE = 512
VIDEO_LONG_SIDE = 160
VIDEO_MAX_SECONDS = 15  # the longest clip a task gets (kling's longest duration)
VIDEO_FPS = 12

_av: ModuleType | None
try:  # the `video` extra; without it videos are a labelled placeholder (see render_video)
    import av as _av_module

    _av = _av_module
except ImportError:  # pragma: no cover - exercised only where av is missing
    _av = None

VIDEO_BACKEND: str = "pyav" if _av is not None else "placeholder"


def output_size(aspect_ratio: str | None, long_side: int) -> tuple[int, int]:
    """(width, height) honouring "W:H" with the long side fixed; square when unknown/auto."""
    w, h = 1, 1
    if aspect_ratio and ":" in aspect_ratio:
        left, _, right = aspect_ratio.partition(":")
        try:
            w, h = int(left), int(right)
        except ValueError:
            w, h = 1, 1
        if w <= 0 or h <= 0:
            w, h = 1, 1
    if w >= h:
        width, height = long_side, round(long_side * h / w)
    else:
        width, height = round(long_side * w / h), long_side
    # Video encoders need even dimensions; harmless for images.
    return max(16, width - width % 2), max(16, height - height % 2)


def _colours(prompt: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    hue = digest[0] / 255
    sat = 0.35 + digest[1] / 255 * 0.4
    val = 0.7 + digest[2] / 255 * 0.25
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    background = (round(r * 255), round(g * 255), round(b * 255))
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    ink = (20, 20, 20) if luminance > 0.55 else (245, 245, 245)
    return background, ink


def _picture(prompt: str, label: str, size: tuple[int, int]) -> Image.Image:
    width, height = size
    background, ink = _colours(prompt)
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    margin = max(4, min(size) // 20)
    text_size = max(8, min(size) // 16)
    text = TextStyle(text_size)
    small = TextStyle(max(6, text_size * 2 // 3))
    line_height = text_size + text_size // 4
    max_lines = max(1, (height - 2 * margin - line_height) // line_height)
    shown = spell_missing(prompt or "(no prompt)", text_size)
    lines = wrap(shown, text.length, width - 2 * margin, most=max_lines)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], lines[max_lines - 1] + " …"]
    y = margin
    for line in lines:
        text.draw(draw, (margin, y), line, ink)
        y += line_height
    small.draw(draw, (margin, height - margin - text_size), spell_missing(label, small.size), ink)
    return image


def render_image(prompt: str, label: str, size: tuple[int, int], fmt: str) -> bytes:
    """Encode the prompt picture as "png" or "jpeg"."""
    buffer = io.BytesIO()
    picture = _picture(prompt, label, size)
    if fmt == "jpeg":
        picture.save(buffer, "JPEG", quality=85)
    else:
        picture.save(buffer, "PNG")
    return buffer.getvalue()


def render_video(prompt: str, label: str, size: tuple[int, int], seconds: int = 1) -> bytes:
    """An MP4 of `seconds` (libx264, else mpeg4). Without PyAV: a small clip shipped with
    the package (still a real MP4, so nothing downstream is told a PNG is a video)."""
    if _av is None:
        return (importlib.resources.files(__package__) / "placeholder.mp4").read_bytes()
    base = _picture(prompt, label, size)
    errors: list[str] = []
    for codec in ("libx264", "mpeg4"):
        try:
            return _encode(base, codec, max(1, seconds))
        except Exception as err:  # an FFmpeg build may lack a codec; try the next one
            errors.append(f"{codec}: {err}")
    raise RuntimeError("no usable video encoder: " + "; ".join(errors))


def _encode(base: Image.Image, codec: str, seconds: int) -> bytes:
    assert _av is not None
    width, height = base.size
    buffer = io.BytesIO()
    with _av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # One thread: the encoded bytes are then identical on every run.
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        frames = seconds * VIDEO_FPS
        bar = max(2, width // 16)
        for i in range(frames):
            frame_image = base.copy()
            x = (width - bar) * i // max(1, frames - 1)
            ImageDraw.Draw(frame_image).rectangle((x, 0, x + bar, height), fill=(255, 255, 255))
            frame = _av.VideoFrame.from_image(frame_image)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
