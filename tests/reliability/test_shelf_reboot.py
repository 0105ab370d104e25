"""A parcel lifted while its shelf was down is still a take (the CI failure of stop 23).

A shelf controller that loses power forgets the sensor changes it had not yet sent, and a
hand that lifts a parcel while it is off is never an event at all: the new boot starts from
what its sensors read. The signed state of the new boot says the slot is empty. The station
takes that difference as the take it is, so the exit waits for whoever may hold the parcel
and a recipient's own pickup is counted, instead of a silent mismatch the exit knows nothing
of (the simulator let a foreign parcel out that way under load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_stubs.shelf import ShelfController
from station.bootstrap import build_station
from tests.support.stack import LiveStation, wait_until

PHONE = "13900000001"
WAYBILL = "SF0000000000011"


def _state(ls: LiveStation) -> str | None:
    row = ls.station.store.query_one("SELECT state FROM parcels WHERE waybill = ?", (WAYBILL,))
    return None if row is None else str(row["state"])


def _power_cycle(ls: LiveStation, slot: str, while_off: Any) -> None:
    """Cut the shelf's power, do `while_off` to its sensors, power it on again (same NV store,
    same HAL: a new boot id)."""
    old, _, _ = ls.shelf(slot)
    old.crash()
    while_off(old.hal)
    new = ShelfController(old.station_id, old.device_id, old.rows, old.cols, old._key,
                          ls.broker.url, hal=old.hal, nv_path=old.nv.path, trust_host_clock=True)
    ls.devices[ls.devices.index(old)] = new.start()


def _events(ls: LiveStation, etype: str, slot: str) -> list[Any]:
    return ls.station.store.query("SELECT seq FROM events WHERE type = ? AND subject = ?", (etype, slot))


def test_a_parcel_lifted_while_its_shelf_was_off_holds_the_exit(tmp_path: Path) -> None:
    with LiveStation(tmp_path) as ls:
        slot, _ = ls.shelve_one(WAYBILL, PHONE)
        ctrl, row, col = ls.shelf(slot)
        _power_cycle(ls, slot, lambda hal: hal.sensor(row, col).take())
        wait_until(lambda: _events(ls, "slot.lifted", slot), 15)
        assert _state(ls) == "shelved"  # nobody's pickup: the parcel is not given away
        takes = ls.station.store.query("SELECT session_id FROM takes WHERE slot = ? AND resolved_seq IS NULL",
                                       (slot,))
        assert len(takes) == 1  # open for the exit (and the operator) to answer
        count = ls.station.store.query_one("SELECT count FROM slot_counts WHERE slot = ?", (slot,))
        assert count is not None and count["count"] == 0

        # the same boot's state again (a heartbeat, a retained copy) is not a second take
        new, _, _ = ls.shelf(slot)
        new.publish_state()
        ls.station.link.wait_reported(new.device_id, lambda s: True, 5)
        wait_until(lambda: ls.station.link.held == 0, 5)
        assert len(_events(ls, "slot.lifted", slot)) == 1
        assert len(_events(ls, "slot.sensed", slot)) == 2  # the put, the take seen at boot


def test_a_shelf_that_comes_back_as_it_was_changes_nothing(tmp_path: Path) -> None:
    with LiveStation(tmp_path) as ls:
        slot, _ = ls.shelve_one(WAYBILL, PHONE)
        before = ls.station.store.query_one("SELECT MAX(seq) n FROM events")["n"]
        _power_cycle(ls, slot, lambda hal: None)
        new, _, _ = ls.shelf(slot)
        wait_until(lambda: ls.station.store.query(
            "SELECT 1 FROM events WHERE type = 'device.rebooted' AND seq > ?", (before,)), 15)
        wait_until(lambda: ls.station.link.held == 0, 5)
        assert not ls.station.store.query(
            "SELECT type FROM events WHERE seq > ? AND type LIKE 'slot.%'", (before,))
        assert _state(ls) == "shelved"


def test_a_parcel_lifted_while_its_shelf_rebooted_and_the_station_was_down_holds_the_exit(
        tmp_path: Path) -> None:
    """The station down, the shelf power-cycled with a parcel lifted meanwhile: the first
    state the station sees after its start is of a boot after the one its log knew, and is
    reconciled like a reboot seen live (before: only the shelf audit's alarm)."""
    with LiveStation(tmp_path) as ls:
        slot, _ = ls.shelve_one(WAYBILL, PHONE)
        wait_until(lambda: ls.station.store.query_one(
            "SELECT boot_id FROM devices WHERE id = ? AND boot_id IS NOT NULL", (ls.shelf(slot)[0].device_id,)), 10)
        ls.station.stop()
        ctrl, row, col = ls.shelf(slot)
        _power_cycle(ls, slot, lambda hal: hal.sensor(row, col).take())
        ls.station = build_station(ls.config, ls.secrets).start()
        wait_until(lambda: _events(ls, "slot.lifted", slot), 15)
        takes = ls.station.store.query("SELECT session_id FROM takes WHERE slot = ? AND resolved_seq IS NULL",
                                       (slot,))
        assert len(takes) == 1  # open: the exit waits for whoever holds it
        assert _state(ls) == "shelved"
        rebooted = ls.station.store.query("SELECT data FROM events WHERE type = 'device.rebooted' AND subject = ?",
                                          (ctrl.device_id,))
        assert len(rebooted) == 1

        # a second start with the shelf as it is now moves nothing more
        ls.station.stop()
        ls.station = build_station(ls.config, ls.secrets).start()
        assert ls.station.link.wait_online(ls.config.device_ids, 15)
        wait_until(lambda: ls.station.link.held == 0, 5)
        assert len(_events(ls, "slot.lifted", slot)) == 1
        assert len(ls.station.store.query("SELECT 1 FROM events WHERE type = 'device.rebooted'")) == 1


def test_a_shelf_that_did_not_reboot_while_the_station_was_down_is_no_reboot(tmp_path: Path) -> None:
    with LiveStation(tmp_path) as ls:
        slot, _ = ls.shelve_one(WAYBILL, PHONE)
        ls.station.stop()
        ls.station = build_station(ls.config, ls.secrets).start()
        assert ls.station.link.wait_online(ls.config.device_ids, 15)
        wait_until(lambda: ls.station.link.held == 0, 5)
        assert not ls.station.store.query("SELECT 1 FROM events WHERE type = 'device.rebooted'")
        assert not _events(ls, "slot.lifted", slot)
        assert _state(ls) == "shelved"
