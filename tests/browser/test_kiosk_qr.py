"""The kiosk's QR path end to end: the customer holds the QR from their message up to the
kiosk screen's camera. Chromium's fake capture device plays a Y4M file made from the QR,
the page grabs a frame, the station decodes it and opens the door."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import segno

from tests.browser.access import pair_kiosk
from tests.support.stack import LiveStation, wait_until

from .conftest import CHROMIUM, CHROMIUM_ARGS, shot

PHONE = "13812341234"


def _y4m(path: Path, image_bgr: np.ndarray, frames: int = 5) -> Path:
    """A tiny YUV4MPEG2 clip of one still image: the format Chromium's fake camera reads."""
    h, w = image_bgr.shape[:2]
    i420 = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2YUV_I420).tobytes()
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + i420)
    return path


def _qr_frame(payload: str) -> np.ndarray:
    """The QR as a phone screen shows it, centred in a 640x480 camera frame."""
    qr = segno.make_qr(payload, error="m")
    side = 360
    modules = np.array([[0 if dark else 255 for dark in row] for row in qr.matrix], np.uint8)
    img = cv2.resize(modules, (side, side), interpolation=cv2.INTER_NEAREST)
    frame = np.full((480, 640), 255, np.uint8)
    frame[60:60 + side, 140:140 + side] = img
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


@pytest.fixture
def qr_camera_page(playwright: Any, tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """A browser of its own whose camera shows whatever `clip` holds when the page asks."""
    clip = tmp_path / "camera.y4m"
    _y4m(clip, np.full((480, 640, 3), 255, np.uint8))
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-video-capture={clip}"]
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = ctx.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page, clip
    browser.close()
    assert not errors, errors


def test_customer_shows_the_qr_to_the_kiosk_camera(tmp_path: Path, qr_camera_page: tuple[Any, Path]) -> None:
    from playwright.sync_api import expect

    page, clip = qr_camera_page
    with LiveStation(tmp_path / "station", http=True) as ls:
        ls.core.couriers.add("c1", "SF", "Li", "1234")
        s = ls.core.shelving.open_session("c1")
        r = ls.core.shelving.scan(s["session_id"], "SF1234567890123", PHONE, "S")
        ls.put(r.slot)
        message = wait_until(lambda: next((m for m in ls.webhook.snapshot()
                                           if m.get("to") == PHONE and m.get("qr")), None))
        _y4m(clip, _qr_frame(message["qr"]))                    # before the page opens the camera

        pair_kiosk(page, ls, "kiosk-1")
        page.click("#tab-qr")
        expect(page.locator("#qr-video")).to_have_js_property("videoWidth", 640)   # the camera is on
        page.click("#qr-scan")
        expect(page.locator(f'#slot-list li[data-slot="{r.slot}"]')).to_be_visible()
        colour = page.locator("#colour-swatch").get_attribute("data-colour")
        wait_until(lambda: ls.lit().get(r.slot) == (colour,))
        shot(page, "kiosk-5-qr")
