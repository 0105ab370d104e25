"""axe-core (npm, tests/browser/package.json: `npm ci` there) injected into the kiosk,
courier and operator pages: no serious or critical WCAG 2.1 A/AA violations (#19.5)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.browser.access import log_in, pair_kiosk
from tests.support.stack import LiveStation

from .test_flows import _shelve_by_api

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
        _slot, code = _shelve_by_api(ls)
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
        slot, code = _shelve_by_api(ls)
        page.set_viewport_size({"width": 768, "height": 1024})
        pair_kiosk(page, ls, "kiosk-1")
        _both_modes(page, "entry")
        page.keyboard.type(slot + "-00000000")
        page.keyboard.press("Enter")
        page.wait_for_selector("#message[data-code=wrong_code]")
        _both_modes(page, "entry, wrong code")
        page.keyboard.press("Escape")
        page.keyboard.press("/")
        _both_modes(page, "entry, phone number")
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


def test_the_courier_page(tmp_path: Path, page: Any) -> None:
    with LiveStation(tmp_path, http=True) as ls:
        page.goto(ls.base_url + "/courier")
        assert serious(page) == []


def test_the_operator_page(tmp_path: Path, page: Any) -> None:
    with LiveStation(tmp_path, http=True) as ls:
        log_in(page, ls)
        assert serious(page) == []
