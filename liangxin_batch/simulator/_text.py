"""Drawing a prompt's text into a picture: every character legible, whatever its script.

Pillow's bundled font (Aileron) has little beyond ASCII, and draws every character it
lacks as one and the same box, so a Chinese, Japanese or Korean prompt came out as a row
of identical empty boxes. Each character is drawn with the first font that has it: the
bundled one, then `LIANGXIN_SIM_FONT` if set, then the first installed fonts found in
`FALLBACK_FONTS` (DejaVu for accented Latin, Greek and Cyrillic; Noto CJK, WenQuanYi,
Droid Sans Fallback and the usual macOS/Windows CJK fonts). No font is shipped: a CJK
font is tens of megabytes. A character that no font here has is spelled as its code
point (`U+4E2D`), so it can still be read and two different ones never look alike.

The pictures depend on the fonts installed, so their bytes match across machines with
the same Pillow and the same fonts (on one machine a file can always be made again).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache

from PIL import ImageDraw, ImageFont

__all__ = ["FALLBACK_FONTS", "TextStyle", "clear_font_cache", "spell_missing", "wrap"]

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: Installed fonts tried, in this order, for characters the bundled font lacks. Exact
#: paths, no search of the font folders: cheap, and the same choice on every start.
FALLBACK_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian, Ubuntu
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian fonts-noto-cjk
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",  # Fedora
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/wenquanyi/wqy-zenhei/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",  # macOS
    "/System/Library/Fonts/AppleSDGothicNeo.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",  # Windows
    "C:/Windows/Fonts/msgothic.ttc",
    "C:/Windows/Fonts/malgun.ttf",
)
_MAX_FALLBACKS = 4  # fonts loaded per size: enough for any script mix, bounded memory
_NO_GLYPH = "\U0010ffff"  # a noncharacter: no font maps it, so it shows the "missing" box


def _load(path: str, size: int) -> Font | None:
    try:
        return ImageFont.truetype(path, size)
    except OSError:  # not installed here, or not a font Pillow can read
        return None


@lru_cache(maxsize=16)
def _chain(size: int) -> tuple[Font, ...]:
    fonts: list[Font] = [ImageFont.load_default(size=size)]
    chosen = os.environ.get("LIANGXIN_SIM_FONT", "")
    for path in (chosen, *FALLBACK_FONTS) if chosen else FALLBACK_FONTS:
        if len(fonts) > _MAX_FALLBACKS:
            break
        if os.path.isfile(path) and (font := _load(path, size)) is not None:
            fonts.append(font)
    return tuple(fonts)


def _mask(font: Font, char: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(char)
    return mask.size, bytes(mask)


@lru_cache(maxsize=8192)
def _font_index(size: int, char: str) -> int | None:
    """Which font of the chain draws `char` (None: none has it). A font lacking a glyph
    draws its "missing" box, the same as for a character no font maps."""
    if char.isspace():
        return 0
    for index, font in enumerate(_chain(size)):
        if _mask(font, char) != _mask(font, _NO_GLYPH):
            return index
    return None


def clear_font_cache() -> None:
    """Forget the fonts found and what they cover (tests change `FALLBACK_FONTS`)."""
    _chain.cache_clear()
    _font_index.cache_clear()


def spell_missing(text: str, size: int) -> str:
    """`text` with each character that no font here has written as ` U+XXXX `."""
    return "".join(f" U+{ord(c):04X} " if _font_index(size, c) is None else c for c in text)


class TextStyle:
    """Text of one size over the font chain: measured and drawn run by run."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fonts = _chain(size)
        first = self._fonts[0]
        # A Pillow built without FreeType has only a bitmap font, which takes no anchor.
        self._ascent = first.getmetrics()[0] if isinstance(first, ImageFont.FreeTypeFont) else 0

    def _runs(self, text: str) -> list[tuple[str, Font]]:
        runs: list[tuple[str, Font]] = []
        current, start = -1, 0
        for i, char in enumerate(text):
            index = _font_index(self.size, char) or 0  # spelled out before we get here
            if index != current and i:
                runs.append((text[start:i], self._fonts[current]))
                start = i
            current = index
        if text:
            runs.append((text[start:], self._fonts[current]))
        return runs

    def length(self, text: str) -> float:
        return sum(font.getlength(run) for run, font in self._runs(text))

    def draw(
        self, draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill: tuple[int, int, int]
    ) -> None:
        # On one baseline (the bundled font's): fonts differ in how high they sit.
        x, baseline = float(xy[0]), xy[1] + self._ascent
        for run, font in self._runs(text):
            anchor = "ls" if isinstance(font, ImageFont.FreeTypeFont) else None
            draw.text((x, baseline), run, font=font, fill=fill, anchor=anchor)
            x += font.getlength(run)


def wrap(
    text: str, measure: Callable[[str], float], width: float, *, most: int | None = None
) -> list[str]:
    """Lines of `text` no wider than `width` (words kept whole where they fit). With
    `most`, wrapping stops once there are more lines than that (the caller shows `most`
    and marks the rest as cut): a long prompt is not measured to its end."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            if most is not None and len(lines) > most:
                return lines
            candidate = f"{line} {word}" if line else word
            if measure(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            # A word longer than the line (a CJK sentence has no spaces) is cut by character.
            while len(word) > 1 and measure(word) > width:
                cut = _longest_fit(word, measure, width)
                lines.append(word[:cut])
                word = word[cut:]
                if most is not None and len(lines) > most:
                    return lines
            line = word
        lines.append(line)
    return lines


def _longest_fit(word: str, measure: Callable[[str], float], width: float) -> int:
    """The most characters of `word` (at least one) whose width fits: a bisection, as a
    prefix only widens as it grows (measuring each shorter prefix in turn was quadratic
    in a long unspaced CJK prompt)."""
    low, high = 1, len(word)  # word[:low] is taken even when it does not fit
    while low < high:
        mid = (low + high + 1) // 2
        if measure(word[:mid]) <= width:
            low = mid
        else:
            high = mid - 1
    return low
