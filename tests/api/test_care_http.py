"""Deadline extension over HTTP (#19.3) against a whole station (real broker, firmware and
webhook): the kiosk with a code or a QR, once; the operator, any waiting parcel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stack import LiveStation

from .test_http_flows import PHONE, client, shelve


@pytest.fixture
def live(tmp_path: Path):
    with LiveStation(tmp_path, http=True) as ls:
        ls.core.couriers.add("c-sf", "SF", "Li Lei", "2468")
        yield ls


def test_extend_at_the_kiosk_once_then_by_the_operator(live: LiveStation) -> None:
    shelve(live, "SF1000000000101")
    code = live.wait_code_for(PHONE)
    before = live.core.ctx.store.query_one("SELECT id, deadline FROM parcels")
    period = live.config.care.extension_s
    with client(live, "kiosk", "kiosk-1") as k:
        assert k.post("/api/kiosk/extend", json={}).status_code == 422
        assert k.post("/api/kiosk/extend", json={"code": code, "payload": "x"}).status_code == 422
        res = k.post("/api/kiosk/extend", json={"code": code})
        assert res.status_code == 200, res.text
        assert res.json()["deadline"] == before["deadline"] + period
        again = k.post("/api/kiosk/extend", json={"code": code})
        assert again.status_code == 409 and again.json()["error"] == "already_extended"
        wrong = k.post("/api/kiosk/extend", json={"code": "1-1-01-00000000"})
        assert wrong.status_code in (401, 403, 400, 422), wrong.text
    with client(live, "kiosk", "kiosk-1") as k:  # a kiosk may not use the operator's route
        assert k.post(f"/api/operator/parcels/{before['id']}/extend",
                      json={"seconds": 60}).status_code in (401, 403)
    with client(live, "operator", "op-1") as op:
        res = op.post(f"/api/operator/parcels/{before['id']}/extend", json={"seconds": 3600})
        assert res.status_code == 200, res.text
        assert res.json()["deadline"] == before["deadline"] + period + 3600
        assert op.post("/api/operator/parcels/pcl_nope/extend",
                       json={"seconds": 60}).status_code == 404
        assert op.post(f"/api/operator/parcels/{before['id']}/extend",
                       json={"seconds": -1}).status_code == 422
    events = live.core.ctx.store.query(
        "SELECT actor FROM events WHERE type = 'parcel.extended' ORDER BY seq")
    assert [e["actor"] for e in events] == ["kiosk-1", "op-1"]


def test_extend_at_the_kiosk_with_the_qr(live: LiveStation) -> None:
    shelve(live, "SF1000000000102")
    live.wait_code_for(PHONE)
    qr = next(m["qr"] for m in live.webhook.snapshot() if m.get("kind") == "pickup_code")
    with client(live, "kiosk", "kiosk-1") as k:
        res = k.post("/api/kiosk/extend", json={"payload": qr})
        assert res.status_code == 200, res.text
        bad = k.post("/api/kiosk/extend", json={"payload": qr[:-2] + "00"})
        assert bad.status_code >= 400 and bad.status_code < 500


def test_report_and_refuse_at_the_kiosk_over_http(live: LiveStation) -> None:
    """#19.4 through the real API: an alarm per report; the refused parcel goes back."""
    slot = shelve(live, "SF1000000000103")
    code = live.wait_code_for(PHONE)
    with client(live, "kiosk", "kiosk-1") as k:
        entry = k.post("/api/kiosk/code", json={"code": code})
        assert entry.status_code == 200, entry.text
        sid = entry.json()["session_id"]
        url = f"/api/kiosk/sessions/{sid}/report"
        assert k.post(url, json={"slot": slot, "problem": "lost"}).status_code == 422
        assert k.post(url, json={"slot": "x", "problem": "slot_empty"}).status_code == 422
        res = k.post(url, json={"slot": slot, "problem": "slot_empty", "snapshot": "cd" * 32})
        assert res.status_code == 200 and res.json()["alarm_id"], res.text
        res = k.post(url, json={"slot": slot, "problem": "damaged"})
        assert res.status_code == 200 and res.json()["refused"], res.text
        assert k.post("/api/kiosk/sessions/pks_nope/report",
                      json={"slot": slot, "problem": "damaged"}).status_code == 404
    kinds = [r["kind"] for r in live.core.ctx.store.query("SELECT kind FROM alarms")]
    assert "kiosk.slot_empty" in kinds and "kiosk.damaged" in kinds
    state = live.core.ctx.store.query_one("SELECT state FROM parcels")["state"]
    assert state == "refused"
