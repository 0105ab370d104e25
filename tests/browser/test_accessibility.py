"""axe-core (npm, tests/browser/package.json: `npm ci` there) injected into the kiosk,
courier and operator pages: no serious or critical WCAG 2.1 A/AA violations (#19.5)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.browser.access import log_in, pair_kiosk
from tests.support.stack import LiveStation

from .conftest import shot

AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

# `make test` installs it (make browser-deps): a missing one is a broken set-up, not a pass
pytestmark = pytest.mark.skipif(not AXE.exists() and not os.environ.get("CI"),
                                reason="axe-core not installed: make browser-deps")


def serious(page: Any) -> list[dict[str, Any]]:
    # evaluated through the DevTools protocol, which the pages' CSP (script-src 'self')
    # rightly does not let a <script> tag do
    page.evaluate("src => { (0, eval)(src); }", AXE.read_text("utf-8"))
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", TAGS)
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def test_the_kiosk_page_entry_and_result(tmp_path: Path, page: Any) -> None:
    with LiveStation(tmp_path, http=True) as ls:
        _slot, code = ls.shelve_one()
        pair_kiosk(page, ls, "kiosk-1")
        assert serious(page) == []
        page.fill("#display", code)
        page.click("#key-ok")
        page.wait_for_selector("#result:not(.hidden)")
        assert serious(page) == []


def _both_modes(page: Any, where: str) -> None:
    """axe in the normal and in the large-text / high-contrast mode, switched by its key
    (#19.5); the page is left in the mode it was found in."""
    found = page.evaluate("() => document.documentElement.classList.contains('large-text')")
    for _ in range(2):
        large = page.evaluate("() => document.documentElement.classList.contains('large-text')")
        assert serious(page) == [], f"{where}, {'large text' if large else 'normal'}"
        page.keyboard.press("*")
    assert page.evaluate("() => document.documentElement.classList.contains('large-text')") == found


def test_the_kiosk_in_both_modes_with_messages_and_answers(tmp_path: Path, page: Any) -> None:
    """Every state a customer sees: entry, a refusal, the result with its slot list, a
    report answered, the exit open after "leave without parcels"."""
    with LiveStation(tmp_path, http=True) as ls:
        slot, code = ls.shelve_one()
        page.set_viewport_size({"width": 768, "height": 1024})
        page.goto(ls.base_url + "/kiosk")                  # not paired yet: staff's screen
        for _ in range(2):
            assert serious(page) == [], "pairing"
            page.click("#large-text")
        pair_kiosk(page, ls, "kiosk-1")
        _both_modes(page, "entry")
        page.keyboard.type(slot + "-00000000")
        page.keyboard.press("Enter")
        page.wait_for_selector("#message[data-code=wrong_code]")
        _both_modes(page, "entry, wrong code")
        page.keyboard.press("Escape")
        page.keyboard.press("/")
        _both_modes(page, "entry, phone number")
        page.keyboard.press("/")
        page.wait_for_selector("#qr-pane:not(.hidden)")
        _both_modes(page, "entry, QR code")
        page.keyboard.press("Escape")
        page.keyboard.type(code)
        page.keyboard.press("Enter")
        page.wait_for_selector("#result:not(.hidden)")
        _both_modes(page, "result")
        page.click(f'#slot-list li[data-slot="{slot}"] button[data-problem="not_mine"]')
        page.wait_for_selector("#report-message[data-reported=not_mine]")
        page.click("#leave")
        page.wait_for_selector("#leave-message[data-left]")
        _both_modes(page, "result, reported and left")


def _both_modes_by_button(page: Any, where: str) -> None:
    """The same on a personal screen, whose mode switch is the header button: reached and
    pressed from the keyboard."""
    for _ in range(2):
        large = page.evaluate("() => document.documentElement.classList.contains('large-text')")
        assert page.get_attribute("#large-text", "aria-pressed") == ("true" if large else "false")
        assert serious(page) == [], f"{where}, {'large text' if large else 'normal'}"
        page.focus("#large-text")
        page.keyboard.press("Enter")


def test_the_courier_page(tmp_path: Path, page: Any) -> None:
    with LiveStation(tmp_path, http=True) as ls:
        ls.core.couriers.add("c1", "SF", "Li", "1234")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(ls.base_url + "/courier")
        _both_modes_by_button(page, "courier log in")
        page.fill("#courier-id", "c1")
        page.fill("#pin", "9999")
        page.click("#login-btn")
        page.wait_for_selector("#error:not(.hidden)")
        _both_modes_by_button(page, "courier wrong PIN")
        page.fill("#pin", "1234")
        page.click("#login-btn")
        page.click("#open-btn")
        page.fill("#waybill", "SF1234567890123")
        page.fill("#phone", "13812341234")
        page.click("#scan-btn")
        page.wait_for_selector("#target[data-state=waiting]")
        _both_modes_by_button(page, "courier scanned")
        page.focus("#large-text")
        page.keyboard.press("Enter")
        page.reload()                                   # this handheld remembers it
        page.wait_for_selector("html.large-text")
        shot(page, "courier-large-text")


def test_the_operator_page(tmp_path: Path, page: Any) -> None:
    with LiveStation(tmp_path, http=True) as ls:
        ls.shelve_one()
        log_in(page, ls)
        page.wait_for_selector("#events tr")
        _both_modes_by_button(page, "operator console")
        page.focus("#large-text")
        page.keyboard.press("Enter")
        shot(page, "operator-large-text")


def test_a_screen_asking_for_more_contrast_starts_in_the_mode(tmp_path: Path, browser: Any) -> None:
    """The system's "more contrast" (prefers-contrast: more) until the person chooses."""
    with LiveStation(tmp_path, http=True) as ls:
        ctx = browser.new_context(viewport={"width": 390, "height": 844})
        try:
            pg = ctx.new_page()
            pg.emulate_media(contrast="more")
            pg.goto(ls.base_url + "/courier")
            pg.wait_for_selector("html.large-text")
            assert pg.get_attribute("#large-text", "aria-pressed") == "true"
            pg.click("#large-text")
            pg.reload()
            pg.wait_for_selector("#large-text[aria-pressed=false]")
            assert not pg.evaluate("() => document.documentElement.classList.contains('large-text')")
        finally:
            ctx.close()
