"""Review attacks on the room cameras through a live station (#21.3): a camera whose HTTP
snapshot never answers delays no door, and the picture and clip endpoints take only a
well-formed reference from an operator (no path, no trailing newline, no kiosk or courier)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx
import pytest

from station.vision import cameras
from tests.e2e.test_room_cameras import base_cameras, events
from tests.support.stack import LiveStation, wait_until


class HangingCamera:
    """An HTTP 'camera' that accepts every connection and answers none until released."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.release = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.release.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # read nothing, answer nothing

    def close(self) -> None:
        self.release.set()
        self._thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


class _PatientSource(cameras.HttpSnapshotSource):
    """The station's own HTTP snapshot source, waiting far longer than the test takes: any
    door that waited on the camera would wait past the client's timeout."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout=120.0)


@pytest.fixture
def hanging() -> HangingCamera:
    cam = HangingCamera()
    yield cam
    cam.close()


def test_a_camera_that_never_answers_delays_no_door_and_refs_are_checked(
        tmp_path: Path, hanging: HangingCamera, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cameras, "HttpSnapshotSource", _PatientSource)
    room = {"id": "cam-room-1", "role": "room", "source": f"snapshot+http://127.0.0.1:{hanging.port}/snap",
            "sees": ["shelf-1", "shelf-2", "shelf-out", "door-entry", "door-exit"]}
    with LiveStation(tmp_path, top={"cameras": [*base_cameras(), room]}, http=True) as ls:
        wait_until(lambda: hanging.accepted)  # the grabber is inside a read that never returns
        slot, code = ls.shelve_one()
        kiosk = {"Authorization": "Bearer " + ls.token("kiosk", "kiosk-1")}
        res = httpx.post(ls.base_url + "/api/kiosk/code", json={"code": code}, headers=kiosk, timeout=20)
        assert res.status_code == 200, res.text
        assert not hanging.release.is_set() and len(hanging.accepted) == 1, "the camera was hanging all along"
        import json

        put = next(json.loads(e["data"]) for e in events(ls, "slot.sensed"))
        assert put["picture"] is None and put["picture_reason"] in ("stale", "camera_down"), put

        op = {"Authorization": "Bearer " + ls.token("operator", "op-1")}
        courier = {"Authorization": "Bearer " + ls.token("courier", "c1")}
        ref = "a" * 32
        for path in (f"snapshots/{ref}", f"clips/{ref}", f"clips/{ref}/0"):
            url = f"{ls.base_url}/api/operator/{path}"
            assert httpx.get(url, headers=op).status_code == 404
            for who in (kiosk, courier):
                assert httpx.get(url, headers=who).status_code in (401, 403), (path, who)
        # a reference that is not one: a path, a trailing newline, upper case, too long
        bad = ["..%2F..%2Fstation.db", "%2E%2E", f"{ref}%0A", ref.upper(), ref + "0", ("b" * 64) + "%0A",
               f"{ref}.clip"]
        for b in bad:
            for path in (f"snapshots/{b}", f"clips/{b}", f"clips/{b}/0"):
                r = httpx.get(f"{ls.base_url}/api/operator/{path}", headers=op)
                assert r.status_code == 404 and r.json()["error"] == "not_found", (path, r.status_code, r.text)
        assert httpx.get(f"{ls.base_url}/api/operator/clips/{ref}/-1", headers=op).status_code == 422
        # a file that is there but does not open (a damaged one, another station's key after a
        # restore): a clear 409 naming it, not a 500 with a traceback
        snaps = ls.station.vision.snapshots
        for path, url in ((snaps.path(ref), f"snapshots/{ref}"), (snaps.path(ref, ".clip"), f"clips/{ref}")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x00" * 64)
            r = httpx.get(f"{ls.base_url}/api/operator/{url}", headers=op)
            assert r.status_code == 409 and r.json()["error"] == "snapshot_unreadable", (url, r.text)
