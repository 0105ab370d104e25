"""The pages' Chinese labels render with a real glyph on a fresh machine (issue 17): `make
system-deps` installs a CJK font, and the kiosk's own font stack must reach it.

How a missing glyph is told apart: Chromium draws every character it has no glyph for as the
same empty box, so two different Chinese characters drawn in the page's font give identical
pixels when the font is missing and different pixels when it is there; a private-use code
point (no font has it) is drawn beside them as the box itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.access import pair_kiosk
from tests.support.stack import LiveStation

from .conftest import shot

GLYPHS = """(el) => {
  const font = getComputedStyle(el).font;
  const draw = (ch) => {
    const c = document.createElement('canvas');
    c.width = 64; c.height = 64;
    const g = c.getContext('2d');
    g.font = font.replace(/\\d+(\\.\\d+)?px/, '40px');
    g.fillStyle = '#000';
    g.fillText(ch, 4, 48);
    return Array.from(g.getImageData(0, 0, 64, 64).data).join(',');
  };
  const text = el.textContent;
  const han = Array.from(text).filter((ch) => /\\p{Script=Han}/u.test(ch));
  return {font, han: han.slice(0, 4), drawn: han.slice(0, 4).map(draw), box: draw('\\uE000')};
}"""


def test_the_kiosk_draws_its_chinese_labels_with_a_real_font(tmp_path: Path, page: Any) -> None:
    with LiveStation(tmp_path, http=True) as ls:
        pair_kiosk(page, ls, "kiosk-1")
        page.wait_for_load_state("networkidle")
        found = page.evaluate(GLYPHS, page.locator("body").element_handle())
        shot(page, "kiosk-fonts")
    assert len(found["han"]) >= 2, f"the kiosk shows no Chinese label: {found['han']}"
    drawn = found["drawn"]
    assert len(set(drawn)) == len(drawn), (
        f"Chinese characters {found['han']} are drawn alike (missing-glyph boxes) in {found['font']!r}: "
        "no CJK font; run `make system-deps`")
    assert found["box"] not in drawn, "a Chinese character is drawn as the missing-glyph box"
