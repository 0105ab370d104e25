"""Crashes and outages: devices come back to the desired state, stale commands never run."""

from __future__ import annotations

import signal
import time

from station.devices.link import DeviceLink, Light, SeqSource

from .conftest import Fleet, link_config, taken, wait_until
from .test_door_security import RecordingDoorHal

GREEN = Light(("#00FF00",), "blink", 60.0)


def lit(state: dict) -> set[tuple[int, int]]:
    return {(s["row"], s["col"]) for s in state["lights"]}


def test_killed_shelf_process_comes_back_to_the_desired_lights(cfg, secrets, broker, spawn, make_link, events):
    proc = spawn("shelf", "shelf-1", broker.url)
    link = make_link(cfg, secrets)
    assert link.wait_online(["shelf-1"], 10)
    assert link.set_lights("shelf-1", {(1, 1): GREEN, (5, 10): GREEN}).wait(5).ok
    first = link.wait_reported("shelf-1", lambda s: lit(s) == {(1, 1), (5, 10)})
    assert first is not None

    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    events.wait("device.offline", "shelf-1")  # the broker published the last will
    assert not link.is_online("shelf-1")

    spawn("shelf", "shelf-1", broker.url)  # nobody asks for anything: the link reconciles
    state = link.wait_reported(
        "shelf-1", lambda s: s["boot_id"] != first["boot_id"] and lit(s) == {(1, 1), (5, 10)}, 10)
    assert state is not None, link.reported("shelf-1")
    assert all(s["colours"] == ["#00FF00"] and s["pattern"] == "blink" for s in state["lights"])
    assert state["lights"][0]["ttl_left_s"] <= 60.0  # the remaining ttl, not a fresh one
    events.wait("device.reconciled", "shelf-1")
    assert int(state["boot_id"].split("-")[0]) == int(first["boot_id"].split("-")[0]) + 1


def test_broker_outage_longer_than_expiry_runs_no_stale_command(config, secrets, own_broker, tmp_path, make_link, events):
    cfg = link_config(config, own_broker, command_ttl_s=1.0)
    fleet = Fleet(cfg, secrets, own_broker.url, tmp_path / "nv")
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    try:
        fleet.door("door-entry")
        shelf = fleet.shelf("shelf-1")
        link = make_link(cfg, secrets)
        assert link.wait_online(["door-entry", "shelf-1"], 5)
        assert link.unlock("door-entry", pulse_s=0.1).wait(5).ok
        wait_until(lambda: hal.locked, 5, "relock")
        assert link.set_lights("shelf-1", {(2, 2): GREEN}).wait(5).ok

        own_broker.stop()
        wait_until(lambda: not link.connected.is_set(), 5, "station noticed the outage")
        stale = link.unlock("door-entry", pulse_s=5)
        stale_light = link.set_lights("shelf-1", {(3, 3): GREEN})
        assert stale.wait(5).status == "expired"  # resolved by its expiry, never after
        assert stale_light.wait(5).status == "expired"
        time.sleep(0.3)  # the outage outlasts the expiry
        own_broker.start()

        assert link.wait_online(["door-entry", "shelf-1"], 10)
        wait_until(lambda: fleet.running["door-entry"].connected.is_set(), 10, "door reconnect")
        # a fresh command goes through, so both ends are really back
        assert link.set_lights("shelf-1", {(4, 4): GREEN}).wait(5).ok
        # the expired lights command itself never ran, but its slot is still *desired*, so
        # the reconciliation after the outage lights it (with its remaining ttl)
        assert set(link.desired_lights("shelf-1")) == {(2, 2), (3, 3), (4, 4)}
        wait_until(lambda: set(shelf.hal.lit()) == {(2, 2), (3, 3), (4, 4)}, 5, "reconciled")
        time.sleep(0.3)  # give any queued stale publish its chance to (wrongly) run
        assert hal.unlocks == 1 and hal.locked
        assert stale.cmd_id not in fleet.running["door-entry"]._acks
        assert stale_light.cmd_id not in shelf._acks
        taken(link)
        assert {e.data["cmd_id"] for e in events.of("command.expired")} == {stale.cmd_id, stale_light.cmd_id}
        assert len(events.of("door.unlocked", "door-entry")) == 1
    finally:
        fleet.stop()


def test_commands_still_accepted_after_a_station_restart(cfg, secrets, fleet, make_link, tmp_path):
    fleet.door("door-entry")
    first = make_link(cfg, secrets, seq_path=tmp_path / "seq")
    assert first.lock("door-entry").wait(5).ok
    first.stop()
    second = make_link(cfg, secrets, seq_path=tmp_path / "seq")
    assert second.lock("door-entry").wait(5).ok


def test_sequence_numbers_survive_a_clock_that_steps_back(tmp_path, monkeypatch):
    src = SeqSource(tmp_path / "seq")
    a = src.next()
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000)  # 1970: clock reset
    again = SeqSource(tmp_path / "seq")
    b = again.next()
    assert b > a and again.next() > b


def test_duplicate_acks_do_not_produce_a_second_outcome(cfg, secrets, fleet, make_link, events, broker):
    fleet.door("door-entry")
    link: DeviceLink = make_link(cfg, secrets)
    assert link.wait_reported("door-entry", lambda s: s["time"]["trusted"], 5)
    handle = link.lock("door-entry")
    assert handle.wait(5).ok
    ack = events.wait("command.acked", pred=lambda e: e.data["cmd_id"] == handle.cmd_id)
    # resend the device's exact ack bytes (QoS 1 may do that)
    fleet.running["door-entry"]._publish("ack", fleet.running["door-entry"]._acks[handle.cmd_id])
    later = link.lock("door-entry")  # a later command's ack arrives after the duplicate
    assert later.wait(5).ok
    events.wait("command.acked", pred=lambda e: e.data["cmd_id"] == later.cmd_id)  # taken in order
    assert len([e for e in events.of("command.acked") if e.data["cmd_id"] == handle.cmd_id]) == 1
    assert ack.data["tries"] == 1
