"""The three page flows of issue 8 in a real browser over a whole live station (broker,
firmware, service, HTTP): a courier shelves a parcel, a customer enters the code at the
kiosk, the operator watches the slot light up live and replays the morning."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import httpx
import numpy as np

from tests.browser.access import log_in, pair_kiosk
from tests.support.stack import LiveStation, wait_until

from .conftest import shot

PHONE = "13812341234"
WAYBILL = "SF1234567890123"


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_courier_shelves_a_parcel_in_the_courier_page(tmp_path: Path, page: Any) -> None:
    expect = _expect()
    with LiveStation(tmp_path, http=True) as ls:
        ls.core.couriers.add("c1", "SF", "Li", "1234")
        page.set_viewport_size({"width": 390, "height": 844})    # a handheld
        page.goto(ls.base_url + "/courier")

        page.fill("#courier-id", "c1")
        page.fill("#pin", "9999")
        page.click("#login-btn")
        expect(page.locator("#error")).to_be_visible()          # a wrong PIN is shown, not swallowed
        page.fill("#pin", "1234")
        page.click("#login-btn")
        page.select_option("#mode", "guided")
        page.click("#open-btn")

        page.fill("#waybill", WAYBILL)
        page.fill("#phone", PHONE)
        page.select_option("#size", "S")
        page.click("#scan-btn")
        target = page.locator("#target")
        expect(target).to_have_attribute("data-state", "waiting")
        slot = target.get_attribute("data-slot")
        assert slot, "guided mode names a slot"
        expect(target).to_contain_text(slot)
        assert slot in wait_until(ls.lit), "the slot the page names is the one lit"
        shot(page, "courier-1-scanned")

        ls.put(slot)                                             # the courier's hand
        row = page.locator(f'#items tr[data-waybill="{WAYBILL}"]')
        expect(row).to_have_attribute("data-state", "placed")
        expect(row.locator(".slot-cell")).to_have_text(slot)
        expect(target).to_have_attribute("data-state", "placed")
        assert ls.wait_code_for(PHONE)

        page.fill("#waybill", "NOT-A-WAYBILL")                   # an unknown carrier: refused, shown
        page.fill("#phone", PHONE)
        page.click("#scan-btn")
        expect(page.locator("#error")).to_have_attribute("data-code", "unknown_carrier")
        shot(page, "courier-2-placed")

        page.click("#close-btn")                                 # free mode: the sensor names the slot
        page.select_option("#mode", "free")
        page.click("#open-btn")
        expect(page.locator("#session-mode")).to_contain_text("free")
        page.fill("#waybill", "SF1234567890999")
        page.fill("#phone", "13900001111")
        page.click("#scan-btn")
        expect(target).to_have_attribute("data-state", "waiting")
        assert target.get_attribute("data-slot") == ""
        ls.put("1-2-07")
        expect(target).to_have_attribute("data-state", "placed")
        expect(target).to_have_attribute("data-slot", "1-2-07")
        shot(page, "courier-3-free-mode")


def test_courier_confirms_a_put_the_station_could_not_attribute(tmp_path: Path, page: Any) -> None:
    """A put beside the lit slot: the page asks "is it in 1-x-yy?" and the code goes out only
    after the courier's "yes" (#22.10, docs/adr/0095)."""
    expect = _expect()
    with LiveStation(tmp_path, http=True) as ls:
        ls.core.couriers.add("c1", "SF", "Li", "1234")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(ls.base_url + "/courier")
        page.fill("#courier-id", "c1")
        page.fill("#pin", "1234")
        page.click("#login-btn")
        page.select_option("#mode", "guided")
        page.click("#open-btn")
        page.fill("#waybill", WAYBILL)
        page.fill("#phone", PHONE)
        page.click("#scan-btn")
        target = page.locator("#target")
        expect(target).to_have_attribute("data-state", "waiting")
        slot = target.get_attribute("data-slot")
        other = "1-1-02" if slot != "1-1-02" else "1-1-03"
        ls.put(other)                                            # beside the lit slot
        expect(target).to_have_attribute("data-state", "unverified")
        expect(target).to_contain_text(other)
        row = page.locator(f'#items tr[data-waybill="{WAYBILL}"]')
        expect(row).to_have_attribute("data-state", "unverified")
        assert ls.codes_for(PHONE) == [], "a code went out before the courier confirmed"
        shot(page, "courier-4-confirm-slot")
        page.click("#confirm-yes")
        expect(target).to_have_attribute("data-state", "placed")
        expect(row.locator(".slot-cell")).to_have_text(other)
        assert ls.wait_code_for(PHONE).startswith(other + "-")


def test_customer_enters_the_code_in_the_kiosk_page(tmp_path: Path, page: Any) -> None:
    expect = _expect()
    with LiveStation(tmp_path, http=True) as ls:
        slot, code = ls.shelve_one()
        page.set_viewport_size({"width": 768, "height": 1024})   # a portrait kiosk screen
        pair_kiosk(page, ls, "kiosk-1")

        page.fill("#display", slot + "-00000000")               # a wrong code first
        page.click("#key-ok")
        expect(page.locator("#message")).to_have_attribute("data-code", "wrong_code")
        expect(page.locator("#message")).to_contain_text("not right")
        shot(page, "kiosk-1-wrong-code")

        page.click('#keypad button[data-key="clear"]')
        for ch in code:                                          # typed on the touch keypad
            page.click(f'#keypad button[data-key="{ch}"]')
        expect(page.locator("#display")).to_have_value(code)
        page.click("#key-ok")

        expect(page.locator("#result")).to_be_visible()
        expect(page.locator(f'#slot-list li[data-slot="{slot}"]')).to_be_visible()
        colour = page.locator("#colour-swatch").get_attribute("data-colour")
        assert colour and colour.startswith("#")
        expect(page.locator("#colour-en")).not_to_be_empty()
        expect(page.locator("#colour-zh")).not_to_be_empty()
        wait_until(lambda: ls.lit().get(slot) == (colour,))     # the shelf shows what the page says
        shot(page, "kiosk-2-result")

        page.click("#done")                                      # phone number + one-time code
        page.click("#tab-phone")
        page.fill("#display", PHONE)
        page.click("#key-ok")
        expect(page.locator("#step-label")).to_contain_text("138****1234")
        page.fill("#display", ls.wait_code_for(PHONE, kind="otp"))
        page.click("#key-ok")
        expect(page.locator(f'#slot-list li[data-slot="{slot}"]')).to_be_visible()
        expect(page.locator("#colour-swatch")).to_have_attribute("data-colour", colour)

        pair_kiosk(page, ls, "kiosk-2")
        for _ in range(8):                                       # guessing: locked out, told for how long
            page.fill("#display", slot + "-00000000")
            page.click("#key-ok")
            expect(page.locator("#message")).to_have_attribute("data-code", re.compile("wrong_code|locked_out"))
            if page.locator("#message").get_attribute("data-code") == "locked_out":
                break
            page.click('#keypad button[data-key="clear"]')
        expect(page.locator("#message")).to_contain_text(re.compile(r"Try again in \d+ s"))
        expect(page.locator("#key-ok")).to_be_disabled()
        shot(page, "kiosk-3-locked-out")

        next(d for d in ls.devices if d.device_id == ls.config.doors.entry).stop()
        wait_until(lambda: not ls.core.ctx.devices.is_online(ls.config.doors.entry))
        pair_kiosk(page, ls, "kiosk-3")
        page.fill("#display", code)
        page.click("#key-ok")
        expect(page.locator("#message")).to_have_attribute("data-code", "door_offline")
        expect(page.locator("#message")).to_contain_text("out of order")
        shot(page, "kiosk-4-door-offline")


def test_operator_sees_the_lit_slot_live_and_replays_the_morning(tmp_path: Path, page: Any) -> None:
    expect = _expect()
    with LiveStation(tmp_path, http=True) as ls:
        slot, code = ls.shelve_one()                          # the morning: one parcel shelved
        ok, photo = cv2.imencode(".jpg", np.full((240, 320, 3), (40, 120, 200), np.uint8))
        assert ok                                                # and a photo held up to the face camera
        res = httpx.post(ls.base_url + "/api/kiosk/courier/face", content=photo.tobytes(),
                         headers={"Content-Type": "image/jpeg", "Authorization": "Bearer " + ls.token("kiosk", "kiosk-1")})
        assert res.json()["error"] == "face_rejected"
        log_in(page, ls, "op-1")
        expect(page.locator("#live")).to_have_attribute("data-state", "live")
        cell = page.locator(f'#shelves .slot[data-slot="{slot}"]')
        expect(cell).to_have_attribute("data-parcels", "1")
        expect(cell).to_have_attribute("data-colours", "")
        expect(page.locator("#chain")).to_have_attribute("data-ok", "true")
        expect(page.locator("#devices [data-online=true]")).to_have_count(len(ls.config.device_ids))
        cookie = next(c for c in page.context.cookies() if c["name"] == "ps_session")
        assert cookie["path"] == "/api" and cookie["sameSite"] == "Strict" and cookie["httpOnly"]

        res = httpx.post(ls.base_url + "/api/kiosk/code", json={"code": code},
                         headers={"Authorization": "Bearer " + ls.token("kiosk", "kiosk-1")})
        assert res.status_code == 200, res.text
        colour = res.json()["colour"]
        expect(cell).to_have_attribute("data-colours", colour)   # pushed by the event stream
        expect(page.locator("#shelves .slot.mismatch")).to_have_count(0)   # LEDs and sensors agree
        expect(page.locator('#doors [data-door="door-entry"] [data-reported]')).to_be_visible()
        expect(page.locator('#doors [data-door="door-entry"]')).to_have_attribute("data-last", "door.unlocked")
        expect(page.locator('#events tr[data-type="pickup.opened"]')).to_have_count(1)
        shot(page, "operator-1-live")

        auth = {"Authorization": "Bearer " + ls.token("operator", "op-1")}
        events = httpx.get(ls.base_url + "/api/operator/events", params={"type": "parcel.*"}, headers=auth).json()
        seq = {e["type"]: e["seq"] for e in events["events"]}
        scanned, shelved = seq["parcel.scanned"], seq["parcel.shelved"]

        page.fill("#rp-seq", str(scanned))                        # the moment it was scanned
        page.press("#rp-seq", "Enter")
        expect(page.locator("#rp-info")).to_have_attribute("data-seq", str(scanned))
        expect(page.locator("#map-panel")).to_have_attribute("data-mode", "replay")
        courier_colour = page.locator(f'#shelves .slot[data-slot="{slot}"]')
        expect(courier_colour).to_have_attribute("data-parcels", "0")   # lit for the courier, still empty
        assert courier_colour.get_attribute("data-colours") not in ("", colour)
        expect(page.locator('#doors [data-door="door-entry"]')).to_have_attribute("data-last", "")
        shot(page, "operator-2-replay-scanned")

        for _ in range(shelved - scanned):                        # step forward to the shelving
            page.click("#rp-fwd")
        expect(page.locator("#rp-info")).to_have_attribute("data-seq", str(shelved))
        expect(page.locator(f'#shelves .slot[data-slot="{slot}"]')).to_have_attribute("data-parcels", "1")
        expect(page.locator(f'#shelves .slot[data-slot="{slot}"]')).to_have_attribute("data-colours", "")
        page.click("#rp-back")
        expect(page.locator("#rp-info")).to_have_attribute("data-seq", str(shelved - 1))

        page.locator("#rp-slider").fill(str(scanned - 1))        # the slider
        expect(page.locator("#rp-info")).to_have_attribute("data-seq", str(scanned - 1))
        log = httpx.get(ls.base_url + "/api/operator/events", params={"limit": 500}, headers=auth).json()["events"]
        ts = next(e["ts"] for e in log if e["seq"] == scanned)
        want = max(e["seq"] for e in log if e["ts"][:19] <= ts[:19])    # everything up to the end of that second
        local = datetime.fromisoformat(ts[:19] + "+00:00").astimezone(ZoneInfo("Asia/Shanghai"))
        page.fill("#rp-at", local.strftime("%Y-%m-%dT%H:%M:%S"))    # a time instead of a seq
        page.click("#rp-at-go")
        expect(page.locator("#rp-info")).to_have_attribute("data-seq", str(want))

        last = ls.core.ctx.store.last_seq
        page.fill("#rp-seq", str(last - 3))
        page.press("#rp-seq", "Enter")
        expect(page.locator("#rp-info")).to_have_attribute("data-seq", str(last - 3))
        page.click("#rp-play")                                    # play on to the end: the live state again
        expect(page.locator("#rp-info")).to_have_attribute("data-seq", str(last), timeout=20_000)
        expect(page.locator(f'#shelves .slot[data-slot="{slot}"]')).to_have_attribute("data-colours", colour)

        page.click("#rp-live")
        expect(page.locator("#map-panel")).to_have_attribute("data-mode", "live")
        expect(cell).to_have_attribute("data-colours", colour)
        shot(page, "operator-3-back-live")

        page.fill("#f-type", "parcel.*")                          # the log, filtered
        page.click("#filters button[type=submit]")
        expect(page.locator("#events tr")).to_have_count(2)
        with page.expect_download() as dl:                       # export carries the token
            page.click("#export-jsonl")
        lines = Path(dl.value.path()).read_text().splitlines()
        assert len(lines) == 2 and all('"parcel.' in line for line in lines)

        page.fill("#f-type", "auth.face.*")                       # the snapshot of the refused face
        page.click("#filters button[type=submit]")
        expect(page.locator("#events tr")).to_have_count(1)
        page.click("#events tr button.snap")
        expect(page.locator("#snapshot-dialog")).to_be_visible()
        expect(page.locator("#snapshot-img")).to_have_js_property("naturalWidth", 320)
        ref = ls.core.ctx.store.query_one(                     # on disk it is ciphertext (#21.3)
            "SELECT snapshot FROM events WHERE type = 'auth.face.rejected'")["snapshot"]
        kept = list(Path(ls.config.station.snapshots_dir).rglob(f"{ref}*"))
        assert [f.suffix for f in kept] == [".snap"]
        assert cv2.imdecode(np.frombuffer(kept[0].read_bytes(), np.uint8), cv2.IMREAD_COLOR) is None
        shot(page, "operator-4-snapshot")
        page.click("#snapshot-dialog button")
        expect(page.locator("#snapshot-dialog")).to_be_hidden()

        page.click("#couriers-panel summary")                    # couriers: add one, disable them
        expect(page.locator('#couriers [data-courier="c1"]')).to_be_visible()
        page.fill("#c-id", "c9")
        page.fill("#c-carrier", "ZTO")
        page.fill("#c-name", "Zhao")
        page.fill("#c-pin", "5678")
        page.click("#courier-form button[type=submit]")
        row = page.locator('#couriers [data-courier="c9"]')
        expect(row).to_be_visible()
        row.locator("button", has_text="disable").click()
        expect(row).to_have_class(re.compile("inactive"))
        assert ls.core.couriers.get("c9").active is False
        shot(page, "operator-5-couriers")

        entry = ls.config.doors.entry                            # a door dies while a customer waits
        next(d for d in ls.devices if d.device_id == entry).stop()
        expect(page.locator(f'#devices [data-device="{entry}"]')).to_have_attribute("data-online", "false")
        res = httpx.post(ls.base_url + "/api/kiosk/code", json={"code": code},
                         headers={"Authorization": "Bearer " + ls.token("kiosk", "kiosk-1")})
        assert res.status_code == 503
        alarms = page.locator("#alarms .alarm")
        expect(alarms.locator('xpath=self::*[@data-kind="door.offline"]')).to_have_count(1)
        expect(alarms.locator('xpath=self::*[@data-kind="device.offline"]')).to_have_count(1)
        shot(page, "operator-6-alarms")
        for left in (1, 0):                                      # acknowledged one by one
            alarms.first.locator("button").click()
            expect(alarms).to_have_count(left)

        ls.put("2-5-10")                                         # something left on a shelf unscanned
        stray = page.locator('#shelves .slot[data-slot="2-5-10"]')
        expect(stray).to_have_class(re.compile("mismatch"))
        expect(stray).to_have_attribute("data-mismatch", re.compile("sensor feels 1"))
        shot(page, "operator-7-sensor-differs")
        page.goto("about:blank")                                 # end the event stream before the station stops
        time.sleep(0.5)
