"""Reporting and refusing on the kiosk page (#19.4): the customer's buttons beside each slot
raise the operator alarm, and "damaged" refuses the parcel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.access import pair_kiosk
from tests.support.stack import LiveStation, wait_until

from .conftest import shot
from .test_flows import _expect


def test_customer_reports_an_empty_slot_and_refuses_a_damaged_parcel(tmp_path: Path, page: Any) -> None:
    expect = _expect()
    with LiveStation(tmp_path, http=True) as ls:
        slot, code = ls.shelve_one()
        page.set_viewport_size({"width": 768, "height": 1024})
        pair_kiosk(page, ls, "kiosk-1")
        page.fill("#display", code)
        page.click("#key-ok")
        expect(page.locator("#result")).to_be_visible()
        row = page.locator(f'#slot-list li[data-slot="{slot}"]')
        expect(row).to_be_visible()
        row.get_by_role("button", name=f"The slot is empty: slot {slot}").click()
        expect(page.locator("#report-message")).to_have_attribute("data-reported", "slot_empty")
        row.locator('button[data-problem="damaged"]').click()
        expect(page.locator("#report-message")).to_have_attribute("data-reported", "damaged")
        expect(page.locator("#report-message")).to_contain_text("put it back")
        shot(page, "kiosk-5-refused")
        store = ls.core.ctx.store
        wait_until(lambda: store.query_one("SELECT state FROM parcels")["state"] == "refused")
        kinds = {r["kind"] for r in store.query("SELECT kind FROM alarms")}
        assert {"kiosk.slot_empty", "kiosk.damaged"} <= kinds
