"""Issue 15: the simulator drew CJK prompts as empty boxes (Pillow's bundled font has no
CJK glyphs, and draws every missing character as the same box). Characters are now drawn
with an installed font that has them, or else spelled as their code point (`U+4E2D`).

Pictures are compared by where their ink is (pixels unlike the background), so prompts
whose background colours differ can still be compared glyph for glyph."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from liangxin_batch.simulator import _media, _text

SIZE = (256, 128)
LABEL = "z-image · 0123456789ab #0"


def ink(prompt: str) -> bytes:
    """The picture's ink as a 1-bit mask: where it is not the background colour."""
    image = Image.open(io.BytesIO(_media.render_image(prompt, LABEL, SIZE, "png"))).convert("RGB")
    plain = Image.new("RGB", image.size, image.getpixel((0, 0)))  # the margin's colour
    red, green, blue = ImageChops.difference(image, plain).split()
    changed = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    return changed.point(lambda v: 255 if v else 0).tobytes()


def test_two_cjk_characters_are_not_drawn_as_the_same_box() -> None:
    assert ink("中") != ink("文")
    assert ink("猫が窓辺で眠る") != ink("고양이가 창가에서 잔다")


def test_without_a_font_that_has_them_they_are_spelled_as_code_points(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_text, "FALLBACK_FONTS", ())  # as on a machine with no CJK font
    _text.clear_font_cache()
    try:
        assert ink("中") == ink("U+4E2D")
        assert ink("中文 cat") == ink("U+4E2D U+6587 cat")
    finally:
        _text.clear_font_cache()


@pytest.mark.parametrize("how", ["found", "named"])
def test_an_installed_font_draws_what_the_bundled_one_lacks(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    dejavu = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not dejavu.is_file():
        pytest.skip(f"{dejavu} is not installed here")
    if how == "found":  # one of the paths looked at
        monkeypatch.setattr(_text, "FALLBACK_FONTS", (str(dejavu),))
    else:  # or the one the user names
        monkeypatch.setattr(_text, "FALLBACK_FONTS", ())
        monkeypatch.setenv("LIANGXIN_SIM_FONT", str(dejavu))
    _text.clear_font_cache()
    try:
        assert ink("é") != ink("è")  # DejaVu has both; the bundled font has neither
        assert ink("é") != ink("U+00E9")  # drawn, not spelled
    finally:
        _text.clear_font_cache()
