"""A device event is acknowledged to the broker only after its transaction commits (#22.4).

With the store full (SQLite `max_page_count` on the station's connection, as in
test_faults.py), a shelf's placement cannot be committed. Before, paho acknowledged it when
the handler returned and it was lost: no `slot.sensed`, no parcel, no pickup code, while the
shelf still reported the slot occupied. Now the link holds it, unacknowledged, and offers it
again; the real link, firmware and Mosquitto are in play.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from station.bootstrap import build_station
from station.store.db import StoreFull
from station.store.eventlog import Event
from tests.support.stack import LiveStation, wait_until

PHONE = "13900000001"


def _scan(ls: LiveStation, http: httpx.Client, waybill: str) -> str:
    ls.core.couriers.add("c1", "SF", "Li", "2468")
    ctok = {"Authorization": "Bearer " + ls.token("courier", "c1")}
    sid = http.post("/api/courier/sessions", json={}, headers=ctok).json()["session_id"]
    res = http.post(f"/api/courier/sessions/{sid}/scans", headers=ctok,
                    json={"waybill": waybill, "phone": PHONE, "size": "S"})
    assert res.status_code == 200, res.text
    return str(res.json()["slot"])


def _fill(store: Any) -> None:
    """Cap the database at its size, then write small filler events until it refuses one:
    what is left in the last pages is too little for a placement's transaction."""
    with store.reading() as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
    for n in range(100_000):
        try:
            store.append(Event("test.filler", "disk", "test", {"n": n}))
        except StoreFull:
            return
    raise AssertionError("the store never filled up")


def _unfill(store: Any) -> None:
    with store.reading() as conn:
        conn.execute("PRAGMA max_page_count = 1073741823")


def _sensed(store: Any, slot: str) -> int:
    return int(store.query_one("SELECT COUNT(*) n FROM events WHERE type = 'slot.sensed'"
                               " AND subject = ?", (slot,))["n"])


def _shelved(store: Any, waybill: str) -> bool:
    return store.query_one("SELECT 1 FROM parcels WHERE waybill = ? AND state = 'shelved'",
                           (waybill,)) is not None


def test_a_placement_that_could_not_be_committed_is_taken_once_there_is_room(tmp_path: Path) -> None:
    with LiveStation(tmp_path, http=True) as ls:
        http = httpx.Client(base_url=ls.base_url, timeout=15)
        slot = _scan(ls, http, "SF0000000000001")
        store, link = ls.station.store, ls.station.link
        _fill(store)
        ls.put(slot)
        wait_until(lambda: link.held > 0, 10)  # refused by the store, held by the link
        assert _sensed(store, slot) == 0 and not _shelved(store, "SF0000000000001")
        ctrl, row, col = ls.shelf(slot)
        # the shelf's signed state says the slot is occupied all along
        assert link.wait_reported(ctrl.device_id, lambda s: any(
            (o["row"], o["col"]) == (row, col) for o in s["occupied"]), 10)

        _unfill(store)
        code = ls.wait_code_for(PHONE)  # the held placement was taken: parcel, code, message
        assert code
        assert _sensed(store, slot) == 1 and _shelved(store, "SF0000000000001")
        wait_until(lambda: link.held == 0, 10)
        http.close()


def test_a_placement_held_when_the_station_dies_is_delivered_again_by_the_broker(tmp_path: Path) -> None:
    """The proof that the broker was not told: the station dies (no goodbye) holding the
    event; a new station on the same database and the same persistent session gets it
    from the broker and binds the parcel."""
    with LiveStation(tmp_path, http=True) as ls:
        assert ls.config.mqtt.persistent_session
        http = httpx.Client(base_url=ls.base_url, timeout=15)
        slot = _scan(ls, http, "SF0000000000002")
        station = ls.station
        _fill(station.store)
        ls.put(slot)
        wait_until(lambda: station.link.held > 0, 10)

        client = station.link._client  # a power cut: the TCP link drops, nothing is sent
        sock = client.socket()
        client.loop_stop()
        sock.close()
        station.link._client = None
        station.stop()

        ls.station = build_station(ls.config, ls.secrets).start()  # a new connection: no cap
        store = ls.station.store
        wait_until(lambda: _shelved(store, "SF0000000000002"), 15)
        assert _sensed(store, slot) == 1
        assert ls.wait_code_for(PHONE)
        http.close()


def test_a_placement_lost_in_transit_is_an_alarm_never_a_silent_difference(tmp_path: Path) -> None:
    """The shelf's placement event never arrives (dropped on the way); its signed retained
    state still counts the parcel. The audit against that state raises one alarm for the
    slot, however often it runs."""
    with LiveStation(tmp_path, http=True) as ls:
        http = httpx.Client(base_url=ls.base_url, timeout=15)
        slot = _scan(ls, http, "SF0000000000003")
        store, audit = ls.station.store, ls.core.audit
        audit.interval_s = 0.5
        ctrl, row, col = ls.shelf(slot)

        def lossy(direction: str, topic: str, payload: bytes, deliver: Any) -> None:
            if not topic.endswith("/evt"):
                deliver(payload)

        ctrl.net = lossy
        ls.put(slot)
        assert ls.station.link.wait_reported(ctrl.device_id, lambda s: any(
            (o["row"], o["col"]) == (row, col) for o in s["occupied"]), 10)
        mismatch_sql = "SELECT data FROM events WHERE type = 'slot.count_mismatch' AND subject = ?"
        wait_until(lambda: store.query(mismatch_sql, (slot,)), 15)
        runs = audit._next
        wait_until(lambda: audit._next > runs + 2 * audit.interval_s, 10)  # three audits more
        assert len(store.query(mismatch_sql, (slot,))) == 1
        alarms = store.query("SELECT kind FROM alarms WHERE subject = ? AND acknowledged_at IS NULL",
                             (slot,))
        assert [a["kind"] for a in alarms] == ["slot.count_mismatch"]
        assert json.loads(store.query(mismatch_sql, (slot,))[0]["data"]) == {
            "slot": slot, "recorded": 0, "reported": 1}
        assert not _shelved(store, "SF0000000000003")  # nothing guessed
        http.close()
