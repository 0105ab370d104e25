"""The operator console shows the room picture of a customer's take in the event log and at
the take's step of the replay (#21.3), decrypted by the station for the logged-in operator;
a camera that was down shows as "no picture"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.browser.access import log_in
from tests.e2e.test_room_cameras import customer_takes_with_the_camera_on, room_source, room_station, sensed
from tests.support.stack import wait_until

from .conftest import shot


def test_the_console_shows_the_takes_room_picture_in_the_log_and_the_replay(tmp_path: Path, page: Any) -> None:
    from playwright.sync_api import expect

    with room_station(tmp_path, http=True) as ls:
        frame = np.zeros((240, 320, 3), np.uint8)
        frame[:, :160] = (20, 200, 60)  # a picture the test can recognise by its pixels
        take = customer_takes_with_the_camera_on(ls, frame)
        room = ls.station.vision.room
        ref, seq = take["picture"], take["seq"]
        assert ref and room.drain()

        log_in(page, ls, "op-view", role="viewer")  # a viewer may look at the pictures
        row = page.locator(f'#events tr[data-seq="{seq}"]')
        expect(row).to_have_attribute("data-type", "slot.sensed")
        thumb = row.locator(f'img.room-pic[data-ref="{ref}"]')
        thumb.scroll_into_view_if_needed()  # fetched when it comes into view
        expect(thumb).to_have_attribute("data-loaded", "true")
        assert thumb.evaluate("img => img.naturalWidth") == 320

        page.fill("#rp-seq", str(seq))  # the take's step of the replay
        page.press("#rp-seq", "Enter")
        expect(page.locator("#rp-info")).to_have_attribute("data-seq", str(seq))
        step = page.locator(f'#rp-picture img.room-pic[data-ref="{ref}"]')
        expect(step).to_have_attribute("data-loaded", "true")
        # the pixels are the camera's: green on the left half, black on the right
        colours = step.evaluate("""img => { const c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight; const g = c.getContext('2d');
            g.drawImage(img, 0, 0); return [Array.from(g.getImageData(40, 120, 1, 1).data),
                                            Array.from(g.getImageData(280, 120, 1, 1).data)]; }""")
        left, right = colours
        assert left[1] > 150 and left[0] < 80 and max(right[:3]) < 40, colours
        shot(page, "operator-room-picture-replay")

        thumb.click()  # enlarged in the dialog
        expect(page.locator("#snapshot-dialog")).to_be_visible()
        page.click("#snapshot-dialog button")

        # one step earlier is the put: its own picture, not the take's
        put = sensed(ls, "put")[0]
        page.fill("#rp-seq", str(put["seq"]))
        page.press("#rp-seq", "Enter")
        expect(page.locator("#rp-info")).to_have_attribute("data-seq", str(put["seq"]))
        expect(page.locator(f'#rp-picture img.room-pic[data-ref="{put["picture"]}"]')).to_have_count(1)

        # an event with no picture says so at its step
        room_source(ls).unplug()
        wait_until(lambda: not room.grabbers["cam-room-1"].connected)
        ls.put("2-1-01")
        blind = wait_until(lambda: [e for e in ls.core.ctx.store.query(
            "SELECT seq, data FROM events WHERE type = 'slot.sensed' ORDER BY seq DESC LIMIT 1")
            if json.loads(e["data"])["slot"] == "2-1-01"])[0]
        # the console knows of the event (its stream) before it is asked to step there
        page.wait_for_function(f"() => Number(document.querySelector('#seq').textContent) >= {blind['seq']}")
        page.fill("#rp-seq", str(blind["seq"]))
        page.press("#rp-seq", "Enter")
        expect(page.locator("#rp-picture .no-pic")).to_have_attribute("data-reason", "camera_down")
