"""The reachable-slot flag over HTTP (#19.5, ADR 0154): an admin sets and clears it by
number, a viewer may only read the masked list, a bad number is a clear 422; and end to
end (real broker and firmware) a courier's scan with the carrier's pre-advice lights a
reachable row and the parcel is shelved there, with no number in clear anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from station.api.auth import make_token
from station.bootstrap import build_station
from station.config import load_secrets, write_new_secrets
from station.domain.layout import SlotAddress
from tests.conftest import example_config
from tests.support.stack import LiveStation, wait_until

from .test_http_flows import client, courier

ROWS = [2, 3]
NUMBER = "13957246813"
URL = "/api/operator/recipients/reachable"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    secrets = load_secrets(write_new_secrets(tmp_path / "secrets.toml"), env={})
    cfg = example_config(tmp_path)
    cfg = cfg.model_copy(update={"care": cfg.care.model_copy(update={"reachable_rows": ROWS})})
    station = build_station(cfg, secrets)
    station.app.state.test_secrets = secrets
    yield station.app
    station.store.close()


def _admin(app: Any) -> dict[str, str]:
    token = make_token(app.state.test_secrets.token_key, "operator", "op-admin", 600)
    return {"Authorization": f"Bearer {token}"}


def test_an_admin_sets_and_clears_the_flag_and_a_viewer_only_reads(app: Any) -> None:
    c = TestClient(app, raise_server_exceptions=False)
    res = c.post(URL, json={"phone": NUMBER, "needs_reachable_slot": True}, headers=_admin(app))
    assert res.status_code == 200, res.text
    assert res.json() == {"phone_masked": "139****6813", "needs_reachable_slot": True,
                          "changed": True, "source": "operator", "reachable_rows_configured": True}
    again = c.post(URL, json={"phone": NUMBER, "needs_reachable_slot": True}, headers=_admin(app))
    assert again.json()["changed"] is False
    bad = c.post(URL, json={"phone": "12345", "needs_reachable_slot": True}, headers=_admin(app))
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_phone", bad.text
    assert "11 digits" in bad.json()["message"]
    missing = c.post(URL, json={"phone": NUMBER}, headers=_admin(app))
    assert missing.status_code == 422 and missing.json()["error"] == "invalid_request"

    app.state.services.core.accounts.add("viewer-1", "viewer", "a long password", actor="test")
    v = TestClient(app, raise_server_exceptions=False)
    login = v.post("/api/operator/login", json={"operator_id": "viewer-1", "password": "a long password"})
    assert login.status_code == 200, login.text
    listed = v.get(URL)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["rows"] == ROWS and body["slots"] > 0
    assert [(f["phone_masked"], f["source"], f["actor"]) for f in body["flags"]] == [
        ("139****6813", "operator", "op-admin")]
    refused = v.post(URL, json={"phone": NUMBER, "needs_reachable_slot": False},
                     headers={"Origin": "http://testserver"})
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden", refused.text

    cleared = c.post(URL, json={"phone": NUMBER, "needs_reachable_slot": False}, headers=_admin(app))
    assert cleared.status_code == 200 and cleared.json()["changed"] is True
    assert c.get(URL, headers=_admin(app)).json()["flags"] == []
    store = app.state.services.core.ctx.store
    dump = repr(store.query("SELECT * FROM events")) + repr(store.query("SELECT * FROM recipient_flags"))
    assert NUMBER not in dump and "57246813" not in dump
    assert [r["type"] for r in store.query(
        "SELECT type FROM events WHERE type LIKE 'recipient.%' ORDER BY seq")] == [
        "recipient.reachable.set", "recipient.reachable.cleared"]


def test_a_flagged_recipients_parcel_is_shelved_in_a_reachable_row_end_to_end(
        tmp_path: Path) -> None:
    with LiveStation(tmp_path, http=True, sections={"care": {"reachable_rows": ROWS}}) as live:
        live.core.couriers.add("c-sf", "SF", "Li Lei", "2468")
        with courier(live) as c:
            sid = c.post("/api/courier/sessions", json={"mode": "guided"}).json()["session_id"]
            plain = c.post(f"/api/courier/sessions/{sid}/scans",
                           json={"waybill": "SF1000000000201", "phone": "13800001111", "size": "S"})
            assert plain.status_code == 200, plain.text
            live.put(plain.json()["slot"])
            res = c.post(f"/api/courier/sessions/{sid}/scans",
                         json={"waybill": "SF1000000000202", "phone": NUMBER, "size": "S",
                               "needs_reachable_slot": True})
            assert res.status_code == 200, res.text
            slot = res.json()["slot"]
            assert res.json()["reachable"] is True and SlotAddress.parse(slot).row in ROWS
            assert SlotAddress.parse(plain.json()["slot"]).row not in ROWS
            live.put(slot)
            wait_until(lambda: all(i["state"] == "placed" for i in
                                   c.get(f"/api/courier/sessions/{sid}").json()["items"]))
        code = live.wait_code_for(NUMBER)
        assert code.startswith(slot)
        with client(live, "operator", "op-1") as op:
            flags = op.get(URL).json()["flags"]
        assert [(f["phone_masked"], f["source"], f["carrier"]) for f in flags] == [
            ("139****6813", "pre-advice", "SF")]
        parcel = live.core.ctx.store.query_one(
            "SELECT slot, state FROM parcels WHERE waybill = 'SF1000000000202'")
        assert (parcel["slot"], parcel["state"]) == (slot, "shelved")
        dump = repr(live.core.ctx.store.query("SELECT * FROM events"))
        assert NUMBER not in dump and "57246813" not in dump


def test_concurrent_flag_requests_write_one_event_per_real_change(app: Any) -> None:
    """review: 32 admins setting the same number at once write exactly one set event; a storm
    of mixed sets and clears leaves the flag as its last event says, each event a real change."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    c = TestClient(app, raise_server_exceptions=False)
    admin = _admin(app)

    def post(needs: bool) -> int:
        return c.post(URL, json={"phone": NUMBER, "needs_reachable_slot": needs}, headers=admin).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(post, [True] * 32)) == {200}
        flags = c.get(URL, headers=admin).json()["flags"]
        assert len(flags) == 1
        assert set(pool.map(post, [i % 2 == 0 for i in range(64)])) == {200}
    listed = c.get(URL, headers=admin).json()["flags"]
    events = c.get("/api/operator/events", params={"type": "recipient.reachable.set", "limit": 500},
                   headers=admin).json()["events"]
    cleared = c.get("/api/operator/events", params={"type": "recipient.reachable.cleared", "limit": 500},
                    headers=admin).json()["events"]
    kinds = [e["type"] for e in sorted(events + cleared, key=lambda e: e["seq"])]
    assert kinds[0] == "recipient.reachable.set" and kinds.count("recipient.reachable.set") >= 1
    assert all(a != b for a, b in zip(kinds, kinds[1:])), "an event that changed nothing"
    assert (kinds[-1] == "recipient.reachable.set") == (len(listed) == 1)
    assert NUMBER not in json.dumps(events + cleared)
