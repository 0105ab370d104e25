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
