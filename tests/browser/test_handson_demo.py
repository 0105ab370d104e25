"""The newcomer's story in `make demo`, by hand in a real browser while the simulated people
keep going (issue 17): log in as the printed courier, shelve a parcel, put it on the virtual
shelf, read the code in the SMS inbox, type it at the kiosk, see the slot light in the
kiosk's colour, take the parcel, and leave through the exit. And the room page is the
demo's alone: `station run` answers 404 for it."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.demo import DemoProcess

from .conftest import shot

PHONE = "13955550123"
WAYBILL = "SF7777000011112"


def _leave(room: Any, expect: Any) -> None:
    """Show the parcel at the exit until it opens. The demo's simulated people make mistakes
    (shelf_sim/demo.py): one of them lifting a parcel lit for nobody holds every exit until
    it is back in its slot (ADR 0075), which is the station doing its job; any other refusal
    fails the test."""
    result = room.locator("#exit-result")
    deadline = time.monotonic() + 60.0
    while True:
        result.evaluate("el => el.removeAttribute('data-allowed')")  # wait for this answer
        room.click("#exit-btn")
        expect(result).to_have_attribute("data-allowed", re.compile("^(true|false)$"))
        if result.get_attribute("data-allowed") == "true":
            return
        text = result.inner_text()
        assert "not lit for anyone" in text, text
        assert time.monotonic() < deadline, f"the exit stayed held for a minute: {text}"
        room.wait_for_timeout(1000)


def test_a_newcomer_shelves_picks_up_and_leaves_by_hand(tmp_path: Path, browser: Any) -> None:
    from playwright.sync_api import expect

    demo = DemoProcess(tmp_path / "demo")
    try:
        urls = demo.wait_ready()
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        courier, room, kiosk = ctx.new_page(), ctx.new_page(), ctx.new_page()
        errors: list[str] = []
        for pg in (courier, room, kiosk):
            pg.set_default_timeout(20_000)
            pg.on("pageerror", lambda exc: errors.append(str(exc)))

        # the courier shelves one parcel with the id and PIN `make demo` printed
        courier.goto(urls["base"] + "/courier")
        courier.fill("#courier-id", urls["courier_id"])
        courier.fill("#pin", urls["pin"])
        courier.click("#login-btn")
        courier.select_option("#mode", "guided")
        courier.click("#open-btn")
        courier.fill("#waybill", WAYBILL)
        courier.fill("#phone", PHONE)
        courier.click("#scan-btn")
        target = courier.locator("#target")
        expect(target).to_have_attribute("data-state", "waiting")
        slot = target.get_attribute("data-slot")
        assert slot

        # ... and puts it where the light says, on the virtual room page
        room.goto(urls["room"])
        button = room.locator(f'.slot-btn[data-slot="{slot}"]')
        expect(button).to_have_attribute("data-lit", "true")
        room.select_option("#hand", "put")
        button.click()
        expect(courier.locator(f'#items tr[data-waybill="{WAYBILL}"]')).to_have_attribute("data-state", "placed")

        # the customer's code arrives in the SMS inbox
        message = room.locator(f'#sms li[data-kind="pickup_code"][data-to="{PHONE}"] .code')
        expect(message).to_be_visible()
        code = message.inner_text().strip()
        shot(room, "demo-room-1-shelved")

        # typed at the kiosk, it lights the slot in the kiosk's colour
        kiosk.goto(urls["kiosk"])                                 # paired once with the printed code
        kiosk.fill("#pair-code", urls["pairing_code"])
        kiosk.click("#pair button[type=submit]")
        expect(kiosk.locator("#entry")).to_be_visible()
        kiosk.fill("#display", code)
        kiosk.click("#key-ok")
        expect(kiosk.locator(f'#slot-list li[data-slot="{slot}"]')).to_be_visible()
        colour = kiosk.locator("#colour-swatch").get_attribute("data-colour")
        assert colour
        expect(button).to_have_attribute("data-colours", colour)
        shot(kiosk, "demo-kiosk-entered")
        shot(room, "demo-room-2-lit")
        operator = ctx.new_page()
        operator.goto(urls["operator"])                           # and the printed admin login
        operator.fill("#l-id", urls["operator_id"])
        operator.fill("#l-password", urls["password"])
        operator.click("#login-form button[type=submit]")
        expect(operator.locator(f'[data-slot="{slot}"]').first).to_be_visible()
        shot(operator, "demo-operator")
        operator.close()

        # the customer takes it and shows it at the exit
        room.select_option("#hand", "take")
        button.click()
        expect(room.locator(f'#held li[data-waybill="{WAYBILL}"]')).to_be_visible()
        _leave(room, expect)
        expect(room.locator(f'#held li[data-waybill="{WAYBILL}"]')).to_have_count(0)
        shot(room, "demo-room-3-left")
        assert not errors, errors
        ctx.close()
    finally:
        demo.stop()
        demo.kill_all()


def test_station_run_has_no_demo_pages(tmp_path: Path) -> None:
    from tests.reliability.harness import ProcStation

    with ProcStation(tmp_path) as ps:
        ps.start()
        for path in ("/demo/room", "/demo/api/room", "/demo/api/sms", "/demo/api/exit-token"):
            assert httpx.get(ps.base_url + path, timeout=10).status_code == 404, path
