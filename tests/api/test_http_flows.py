"""The courier, kiosk and exit routes over HTTP against a whole station (real broker and
firmware): what a handheld, a kiosk screen and the door cameras actually send."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.support.stack import LiveStation, wait_until
from tests.support.testdata import face_file
from tests.vision.codegen import code128_image, compose, qr_image, rotate

PHONE = "13800001111"


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return bytes(buf)


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(buf)


@pytest.fixture
def live(tmp_path: Path):
    with LiveStation(tmp_path, http=True) as ls:
        ls.core.couriers.add("c-sf", "SF", "Li Lei", "2468")
        yield ls


def client(ls: LiveStation, role: str | None = None, subject: str = "t") -> httpx.Client:
    headers = {"Authorization": f"Bearer {ls.token(role, subject)}"} if role else {}
    return httpx.Client(base_url=ls.base_url, headers=headers, timeout=20)


def courier(ls: LiveStation) -> httpx.Client:
    with client(ls) as anon:
        res = anon.post("/api/courier/login", json={"courier_id": "c-sf", "pin": "2468"})
    assert res.status_code == 200, res.text
    return httpx.Client(base_url=ls.base_url, timeout=20,
                        headers={"Authorization": f"Bearer {res.json()['token']}"})


def shelve(ls: LiveStation, waybill: str, phone: str = PHONE) -> str:
    with courier(ls) as c:
        sid = c.post("/api/courier/sessions", json={"mode": "guided"}).json()["session_id"]
        res = c.post(f"/api/courier/sessions/{sid}/scans", json={"waybill": waybill, "phone": phone, "size": "S"})
        assert res.status_code == 200, res.text
        slot = res.json()["slot"]
        ls.put(slot)
        wait_until(lambda: c.get(f"/api/courier/sessions/{sid}").json()["items"][0]["state"] == "placed")
    return slot


def test_courier_shelves_over_http_and_sees_the_parcel_placed(live: LiveStation) -> None:
    slot = shelve(live, "SF1000000000001")
    assert live.wait_code_for(PHONE).startswith(slot)
    types = [r["type"] for r in live.core.ctx.store.query("SELECT type FROM events")]
    assert {"parcel.scanned", "parcel.shelved", "notify.queued"} <= set(types)


def test_the_handheld_long_polls_one_scan_until_it_is_shelved(live: LiveStation) -> None:
    """GET .../items/{id}?wait_s=N answers as soon as the put is bound, not after N s."""
    with courier(live) as c:
        sid = c.post("/api/courier/sessions", json={"mode": "guided"}).json()["session_id"]
        scan = c.post(f"/api/courier/sessions/{sid}/scans",
                      json={"waybill": "SF1000000000009", "phone": PHONE, "size": "S"}).json()
        url = f"/api/courier/sessions/{sid}/items/{scan['pending_id']}"
        now = c.get(url).json()
        assert now["state"] == "waiting" and now["slot"] == scan["slot"]
        threading.Timer(0.3, live.put, args=(scan["slot"],)).start()
        done = c.get(url, params={"wait_s": 10}).json()
        assert done["state"] == "placed" and done["parcel_id"] and done["slot"] == scan["slot"]
        assert c.get(url, params={"wait_s": 11}).json()["error"] == "invalid_request"
        assert c.get(url, params={"wait_s": -1}).status_code == 422
        assert c.get(f"/api/courier/sessions/{sid}/items/pnd_nope").status_code == 404
    # another courier cannot follow this courier's scans
    live.core.couriers.add("c-sf2", "SF", "Han Meimei", "1357")
    with client(live) as anon:
        token = anon.post("/api/courier/login", json={"courier_id": "c-sf2", "pin": "1357"}).json()["token"]
        res = anon.get(url, headers={"Authorization": f"Bearer {token}"})
    assert res.status_code == 404


def test_the_handheld_asks_where_a_put_it_cannot_attribute_went(live: LiveStation) -> None:
    """A put beside the lit slot is held (`unverified`, no code) until the courier confirms
    the slot the handheld names (#22.10, docs/adr/0095)."""
    with courier(live) as c:
        sid = c.post("/api/courier/sessions", json={"mode": "guided"}).json()["session_id"]
        scan = c.post(f"/api/courier/sessions/{sid}/scans",
                      json={"waybill": "SF1000000000010", "phone": PHONE, "size": "S"}).json()
        other = "1-1-02" if scan["slot"] != "1-1-02" else "1-1-03"
        url = f"/api/courier/sessions/{sid}/items/{scan['pending_id']}"
        threading.Timer(0.2, live.put, args=(other,)).start()
        asked = c.get(url, params={"wait_s": 10}).json()
        assert asked["state"] == "unverified" and asked["confirm_slot"] == other, asked
        assert other in asked["message"]
        assert live.codes_for(PHONE) == [], "a code went out before the courier confirmed"
        assert c.post(url + "/confirm", json={"slot": scan["slot"]}).json()["error"] == "wrong_slot_confirmed"
        assert c.post(url + "/confirm", json={}).status_code == 422
        assert c.post(url + "/confirm", json={"slot": "x" * 100}).status_code == 422
        done = c.post(url + "/confirm", json={"slot": other})
        assert done.status_code == 200, done.text
        assert done.json()["state"] == "placed" and done.json()["slot"] == other
        assert c.post(url + "/confirm", json={"slot": other}).json()["state"] == "placed"
    assert live.wait_code_for(PHONE).startswith(other + "-")


@pytest.mark.parametrize("body,status,code", [
    ({"waybill": "SF1000000000002", "phone": "12345", "size": "S"}, 422, "invalid_phone"),
    ({"waybill": "XX99", "phone": PHONE, "size": "S"}, 422, "unknown_carrier"),
    ({"waybill": "ZT100000000001", "phone": PHONE, "size": "S"}, 422, "wrong_carrier"),
    ({"waybill": "SF1000000000002", "phone": PHONE, "size": "XXL"}, 422, "invalid_request"),
    ({"waybill": "SF1000000000002", "phone": PHONE, "size": "S", "extra": 1}, 422, "invalid_request"),
])
def test_a_bad_scan_is_refused_with_its_reason(live: LiveStation, body: dict, status: int, code: str) -> None:
    with courier(live) as c:
        sid = c.post("/api/courier/sessions", json={}).json()["session_id"]
        res = c.post(f"/api/courier/sessions/{sid}/scans", json=body)
    assert res.status_code == status, res.text
    assert res.json()["error"] == code
    assert live.core.ctx.store.query_one("SELECT 1 FROM pending_placements") is None


def test_a_duplicate_waybill_is_refused(live: LiveStation) -> None:
    shelve(live, "SF1000000000003")
    with courier(live) as c:
        sid = c.post("/api/courier/sessions", json={}).json()["session_id"]
        res = c.post(f"/api/courier/sessions/{sid}/scans",
                     json={"waybill": "SF1000000000003", "phone": PHONE, "size": "S"})
    assert res.status_code == 409 and res.json()["error"] == "duplicate_waybill"


def test_wrong_courier_pins_hit_the_lockout(live: LiveStation) -> None:
    with client(live) as anon:
        codes = [anon.post("/api/courier/login", json={"courier_id": "c-sf", "pin": "0000"}).status_code
                 for _ in range(live.config.lockout.free_failures + 1)]
        last = anon.post("/api/courier/login", json={"courier_id": "c-sf", "pin": "2468"})
    assert codes[:-1] == [401] * live.config.lockout.free_failures
    assert last.status_code == 429 and last.json()["error"] == "locked_out"
    assert "retry_after_s" in last.json()


def test_scan_frame_reads_a_rotated_waybill_label(live: LiveStation) -> None:
    frame = compose([rotate(code128_image("SF1000000000004"), 20)], size=(1280, 720))
    with courier(live) as c:
        sid = c.post("/api/courier/sessions", json={}).json()["session_id"]
        res = c.post(f"/api/courier/sessions/{sid}/scan-frame", content=png(frame),
                     headers={"content-type": "image/png"})
    assert res.status_code == 200, res.text
    assert res.json()["waybills"] == ["SF1000000000004"]


def test_the_qr_from_the_message_opens_the_door_at_the_kiosk_camera(live: LiveStation) -> None:
    slot = shelve(live, "SF1000000000005")
    sms = wait_until(lambda: [m for m in live.webhook.snapshot() if m.get("to") == PHONE])[-1]
    picture = compose([rotate(qr_image(sms["qr"], scale=6), 15)], size=(1280, 720))
    with client(live, "kiosk", "kiosk-1") as k:
        res = k.post("/api/kiosk/qr-frame", content=jpeg(picture), headers={"content-type": "image/jpeg"})
        assert res.status_code == 200, res.text
        assert res.json()["slots"] == [slot] and res.json()["door"] == "unlocked"
        forged = sms["qr"][:-1] + ("0" if sms["qr"][-1] != "0" else "1")
        bad = k.post("/api/kiosk/qr", json={"payload": forged})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_pickup_code"


def test_the_exit_camera_reads_the_parcels_and_opens_the_exit(live: LiveStation) -> None:
    slot = shelve(live, "SF1000000000006")
    code = live.wait_code_for(PHONE)
    with client(live, "kiosk", "kiosk-1") as k:
        assert k.post("/api/kiosk/code", json={"code": code}).status_code == 200
        live.take(slot)
        frame = compose([rotate(code128_image("SF1000000000006"), -25)], size=(1280, 720))
        res = k.post("/api/exit/frame", content=png(frame), headers={"content-type": "image/png"})
    assert res.status_code == 200, res.text
    assert res.json()["allowed"] and res.json()["read"] == ["SF1000000000006"]
    state = live.core.ctx.store.query_one("SELECT state FROM parcels WHERE waybill = 'SF1000000000006'")
    assert state["state"] == "picked_up"


@pytest.mark.parametrize("data,code", [
    (b"not an image at all", "image_unsupported_format"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "image_corrupt"),
])
def test_a_broken_picture_gets_a_clear_error_and_the_station_keeps_running(
        live: LiveStation, data: bytes, code: str) -> None:
    with client(live, "kiosk", "kiosk-1") as k:
        res = k.post("/api/kiosk/qr-frame", content=data, headers={"content-type": "image/jpeg"})
        assert res.status_code == 422, res.text
        assert res.json()["error"].startswith("image_")
        empty = k.post("/api/exit/frame", content=b"", headers={"content-type": "image/png"})
        assert empty.status_code == 422
        assert k.get("/api/health").status_code == 200


def test_courier_pin_entry_unlocks_the_entry_door_and_a_disabled_courier_is_refused(live: LiveStation) -> None:
    with client(live, "kiosk", "kiosk-1") as k:
        res = k.post("/api/kiosk/courier/pin", json={"courier_id": "c-sf", "pin": "2468"})
        assert res.status_code == 200 and res.json()["door"] == "unlocked"
        live.core.couriers.set_active("c-sf", False)
        res = k.post("/api/kiosk/courier/pin", json={"courier_id": "c-sf", "pin": "2468"})
    assert res.status_code == 403 and res.json()["error"] == "courier_disabled"
    wait_until(lambda: live.core.ctx.store.query_one(
        "SELECT 1 FROM events WHERE type = 'door.unlocked' AND subject = 'door-entry'"))


def _portrait(name: str) -> np.ndarray:
    image = cv2.imread(str(face_file(f"faces/{name}.png")))
    assert image is not None
    return image


def test_face_entry_lets_the_enrolled_courier_in_and_refuses_a_photo(live: LiveStation) -> None:
    from shelf_sim.blinks import live_sequence, still_sequence
    from station.vision.faces import FaceEngine

    with client(live, "operator", "op") as op:
        for name in ("obama-1", "obama-3"):
            res = op.post("/api/operator/couriers/c-sf/face", content=png(_portrait(name)),
                          headers={"content-type": "image/png"})
            assert res.status_code == 200, res.text
        two = op.post("/api/operator/couriers/c-sf/face", content=b"\x89PNG broken",
                      headers={"content-type": "image/png"})
        assert two.status_code == 422
    face = _portrait("obama-2")
    landmarks = FaceEngine().analyse(face, landmarks=True)[0].landmarks

    def frames(seq: list[np.ndarray]) -> dict[str, list[str]]:
        return {"frames": [base64.b64encode(jpeg(f)).decode() for f in seq]}

    with client(live, "kiosk", "kiosk-1") as k:
        ok = k.post("/api/kiosk/courier/face", json=frames(live_sequence(face, landmarks)))
        assert ok.status_code == 200, ok.text
        assert ok.json()["courier_id"] == "c-sf"
        photo = k.post("/api/kiosk/courier/face", json=frames(still_sequence(face)))
        assert photo.status_code == 401 and photo.json()["error"] == "face_rejected"
    events = live.core.ctx.store.query(
        "SELECT type, data FROM events WHERE type LIKE 'auth.face.%' ORDER BY seq")
    assert [e["type"] for e in events] == ["auth.face.accepted", "auth.face.rejected"]
    accepted = json.loads(events[0]["data"])
    assert accepted["distance"] < 0.5 and "encoding" not in events[0]["data"]
    blob = live.core.ctx.store.query_one("SELECT blob FROM face_templates LIMIT 1")["blob"]
    assert np.float32(0).tobytes() not in blob[:8]  # ciphertext, not a raw float array


def test_a_frames_body_nested_too_deep_is_a_clear_error(live: LiveStation) -> None:
    """review: JSON deeper than the parser goes was a RecursionError, answered 500."""
    with client(live, "kiosk", "kiosk-1") as k:
        for body in (b"[" * 100_000, b'{"frames": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
            res = k.post("/api/kiosk/courier/face", content=body, headers={"content-type": "application/json"})
            assert res.status_code == 422 and res.json()["error"] == "invalid_request", res.text
        assert k.get("/api/health").status_code == 200
