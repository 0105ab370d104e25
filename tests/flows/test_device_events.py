"""What devices report lands in the log, and is never lost on the way."""

from __future__ import annotations

import logging

import pytest

from .harness import Station


def test_availability_events_update_the_devices_projection(station: Station) -> None:
    station.core.on_device_event("shelf-1", "device.offline", {})
    station.core.on_device_event("door-entry", "device.offline", {})
    rows = {r["id"]: r["online"] for r in station.store.query("SELECT id, online FROM devices")}
    assert rows == {"shelf-1": 0, "door-entry": 0}
    assert station.store.query_one("SELECT 1 FROM alarms WHERE kind = 'device.offline'") is not None
    station.core.on_device_event("shelf-1", "device.online", {"boot_id": "b2"})
    assert station.store.query_one("SELECT online FROM devices WHERE id = 'shelf-1'")["online"] == 1


def test_a_forced_door_raises_an_alarm(station: Station) -> None:
    station.core.on_device_event("door-entry", "door.forced_open", {})
    assert station.store.query_one("SELECT 1 FROM alarms WHERE kind = 'door.forced_open'") is not None


def test_a_placement_at_an_impossible_slot_is_logged_not_acted_on(station: Station) -> None:
    station.core.on_device_event("shelf-1", "placement", {"row": 42, "col": 1, "action": "put"})
    station.core.on_device_event("shelf-x", "placement", {"row": 1, "col": 1, "action": "put"})
    types = [r["type"] for r in station.store.query("SELECT type FROM events ORDER BY seq")]
    assert "device.placement.invalid" in types and "device.placement.unknown_device" in types
    assert station.store.query_one("SELECT 1 FROM parcels") is None


def test_a_bare_availability_kind_is_not_lost(station: Station, caplog: pytest.LogCaptureFixture) -> None:
    seq = station.store.last_seq
    with caplog.at_level(logging.ERROR, logger="station"):
        station.core.on_device_event("shelf-1", "offline", {})
    assert station.store.last_seq > seq
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_boot_state_that_contradicts_itself_or_the_shelf_moves_nothing_there(station: Station) -> None:
    """review: a shelf's boot state (signed, but firmware can be wrong) listing a slot twice
    with two counts made a take from the last entry; entries outside the shelf, or with a
    bool or a fraction for a number, were taken as row 1 / col 1. Now such a slot keeps
    what the station knew, the rest of the state still counts, and one event says so."""
    import json

    from station.domain.layout import SlotAddress

    from .harness import phone, sf_waybill

    slot, _ = station.shelve(sf_waybill(1), phone(1))
    a = SlotAddress.parse(slot)
    device = station.device_of(slot)
    shelf = station.ctx.layout.shelf_of_device(device)
    far = SlotAddress(shelf.number, shelf.rows, shelf.columns)
    assert str(far) != slot
    before = station.store.last_seq
    junk: list[object] = [{"row": 99, "col": 99, "count": 5}, "x", None, {"row": 1},
                          {"row": 1.5, "col": True, "count": 1}] * 200
    station.core.on_device_event(device, "device.rebooted", {"boot_id": "b2", "previous": "b1", "occupied": [
        {"row": a.row, "col": a.col, "count": 1}, {"row": a.row, "col": a.col, "count": 2},  # listed twice
        {"row": far.row, "col": far.col, "count": 10**9}, *junk]})
    rows = station.store.query("SELECT type, subject, data FROM events WHERE seq > ?", (before,))
    invalid = [json.loads(r["data"]) for r in rows if r["type"] == "device.placement.invalid"]
    assert len(invalid) == 1 and invalid[0]["ignored"] == len(junk) and invalid[0]["listed_twice"] == \
        f"{a.row}-{a.col}", invalid
    assert not [r for r in rows if r["subject"] == slot], "the slot listed twice moved nothing"
    far_sensed = [json.loads(r["data"]) for r in rows if r["type"] == "slot.sensed"]
    assert [(d["slot"], d["action"]) for d in far_sensed] == [(str(far), "put")]
    assert far_sensed[0]["items"] <= station.ctx.layout.slot(far).capacity
    parcel = station.store.query_one("SELECT state, slot FROM parcels")
    assert (parcel["state"], parcel["slot"]) == ("shelved", slot)
