"""A simulated room camera: an IP camera's still-image URL (what the station's
`snapshot+http://` source reads), drawing what a camera over the shelves would see.

It goes through the same camera interface as a real one (the station's HttpSnapshotSource, its
grabber, its ring), whether the station runs in this process or as its own: the simulator only
serves pictures. Each picture is drawn from the simulated hardware: every slot with its
parcels (the placement sensors' counts) and its LED colours, the doors open or shut, and a
frame counter; it is drawn again only when the hardware changed (a still room is one JPEG).
Small on purpose (160 x 120): a simulated week writes one picture per take, put and door."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from .facecam import CameraServer

WIDTH, HEIGHT = 160, 120


def _bgr(colour: str) -> tuple[int, int, int]:
    """An LED colour ("#RRGGBB", as the station sends them) in OpenCV's channel order."""
    text = colour.lstrip("#")
    try:
        r, g, b = (int(text[i:i + 2], 16) for i in (0, 2, 4))
    except ValueError:
        return (255, 255, 255)
    return (b, g, r)


def with_room_camera(config: Any, url: str) -> list[Any]:
    """The config's cameras with its room cameras replaced by one at `url` that sees every
    shelf and door (what a simulated run and the demo give the station)."""
    from station.config import CameraConfig

    return [c for c in config.cameras if c.role != "room"] + [
        CameraConfig(id="sim-room", role="room", source=url, sees=config.device_ids)]


class RoomCameraServer:
    """`url` is the station's camera source; `attach` hands it the hardware to look at."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._shelves: dict[str, Any] = {}
        self._doors: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._cached: tuple[Any, bytes] | None = None
        self.served = 0
        self.down = False  # a fault: the camera answers 503 (the station records no picture)
        self._http = CameraServer(host, port)
        self._url = self._http.serve("room", lambda: None if self.down else self.jpeg())

    @property
    def url(self) -> str:
        return self._url

    def attach(self, shelves: Mapping[str, Any], doors: Mapping[str, Any]) -> None:
        with self._lock:
            self._shelves, self._doors = dict(shelves), dict(doors)
            self._cached = None

    def _state(self) -> tuple[Any, ...]:
        return (tuple(h.changes() for h in self._shelves.values()),
                tuple(tuple(sorted((rc, led.colours) for rc, led in h.lit().items()))
                      for h in self._shelves.values()),
                tuple((bool(h.read_contact()), bool(getattr(h, "locked", True))) for h in self._doors.values()))

    def jpeg(self) -> bytes:
        with self._lock:
            state = self._state()
            if self._cached is None or self._cached[0] != state:
                self._cached = (state, self._draw())
            self.served += 1
            return self._cached[1]

    def _draw(self) -> bytes:
        img = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
        shelves = list(self._shelves.values())
        band = (HEIGHT - 16) // max(1, len(shelves))
        for n, hal in enumerate(shelves):
            slots = hal.slots()
            rows = max(r for r, _ in slots) if slots else 1
            cols = max(c for _, c in slots) if slots else 1
            cw, ch = (WIDTH - 4) / cols, max(2, band - 2) / rows
            lit = hal.lit()
            for r, c in slots:
                x0, y0 = int(2 + (c - 1) * cw), int(2 + n * band + (r - 1) * ch)
                x1, y1 = int(x0 + cw) - 1, int(y0 + ch) - 1
                count = hal.sensor(r, c).read()
                cv2.rectangle(img, (x0, y0), (x1, y1), (90, 140, 190) if count else (70, 70, 70), -1)
                led = lit.get((r, c))
                if led is not None and led.colours:
                    cv2.rectangle(img, (x0, y0), (x1, y1), _bgr(led.colours[0]), 1)
        for n, door in enumerate(self._doors.values()):
            open_ = bool(door.read_contact())
            cv2.rectangle(img, (4 + n * 40, HEIGHT - 12), (36 + n * 40, HEIGHT - 2),
                          (60, 200, 60) if open_ else (60, 60, 200), -1)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert ok
        return buf.tobytes()

    def stop(self) -> None:
        self._http.stop()
