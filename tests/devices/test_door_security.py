"""Doors: a client that can publish on the broker still cannot open a door.

Unsigned, forged, expired, replayed and cross-device commands are published with the real
`mosquitto_pub` binary; the door must stay locked, answer a negative ack with the reason and
report a `command.refused` event that reaches the station's event log.
"""

from __future__ import annotations

import json
import time

import pytest

from firmware_stubs.hal import DoorHal
from station.devices import envelope as env

from .conftest import mosquitto_pub, wait_until


class RecordingDoorHal(DoorHal):
    """Counts every time the firmware releases the bolt."""

    def __init__(self) -> None:
        super().__init__()
        self.unlocks = 0

    def set_locked(self, locked: bool) -> None:
        if not locked:
            self.unlocks += 1
        super().set_locked(locked)


@pytest.fixture
def door_setup(cfg, secrets, fleet, make_link, sniffer):
    hal = RecordingDoorHal()
    fleet.hals["door-entry"] = hal
    door = fleet.door("door-entry")
    link = make_link(cfg, secrets)
    assert link.wait_online(["door-entry"], 5)
    # the station answers the door's time challenge on its own
    assert link.wait_reported("door-entry", lambda s: s["time"]["trusted"], 5)
    return door, hal, link


def cmd_topic(cfg, device="door-entry"):
    return env.topic(cfg.station.id, device, "cmd")


def signed_unlock(key, seq=None, **kw):
    return env.build_command(key=key, device=kw.pop("device", "door-entry"),
                             seq=seq if seq is not None else time.time_ns() // 1000,
                             op=kw.pop("op", "unlock"), args=kw.pop("args", {}),
                             ttl_s=kw.pop("ttl_s", 5.0), **kw)


def assert_refused(cfg, broker, sniffer, events, payload, reason, cmd_id):
    mark = events.mark()
    mosquitto_pub(broker, cmd_topic(cfg), payload)
    ack = sniffer.wait_json("door-entry/ack", lambda a: a["cmd_id"] == cmd_id and not a["ok"])
    assert ack["reason"] == reason
    evt = events.wait("device.command_refused", "door-entry",
                      lambda e: e.data["cmd_id"] == cmd_id, after=mark)
    assert evt.data["reason"] == reason


def test_unsigned_forged_expired_and_wrong_device_unlocks_are_refused(
        cfg, secrets, broker, door_setup, sniffer, events):
    _door, hal, link = door_setup
    key = secrets.device_key(cfg.station.id, "door-entry")

    unsigned = signed_unlock(key)
    unsigned.pop("sig")
    assert_refused(cfg, broker, sniffer, events, env.encode(unsigned), "unsigned", unsigned["cmd_id"])

    forged = signed_unlock(b"\x00" * 32)
    assert_refused(cfg, broker, sniffer, events, env.encode(forged), "bad_signature", forged["cmd_id"])

    tampered = signed_unlock(key)
    tampered["args"] = {"pulse_s": 60}
    assert_refused(cfg, broker, sniffer, events, env.encode(tampered), "bad_signature", tampered["cmd_id"])

    # expiry is judged on the station's monotonic clock (docs/adr/0090), not on expires_at
    expired = signed_unlock(key, issued_at=time.time() - 10, expires_at=time.time() - 5,
                            mono_issued=time.monotonic() - 10, mono_expires=time.monotonic() - 5)
    assert_refused(cfg, broker, sniffer, events, env.encode(expired), "expired", expired["cmd_id"])

    shelf_key = secrets.device_key(cfg.station.id, "shelf-1")
    other = signed_unlock(shelf_key)
    assert_refused(cfg, broker, sniffer, events, env.encode(other), "bad_signature", other["cmd_id"])

    for_exit = signed_unlock(key, device="door-exit")
    assert_refused(cfg, broker, sniffer, events, env.encode(for_exit), "wrong_device", for_exit["cmd_id"])

    unknown = signed_unlock(key, op="self_destruct")
    assert_refused(cfg, broker, sniffer, events, env.encode(unknown), "unknown_op", unknown["cmd_id"])

    assert hal.unlocks == 0 and hal.locked
    assert link.reported("door-entry")["locked"] is True


def test_a_replayed_unlock_never_opens_the_door_again(cfg, secrets, broker, fleet, door_setup, sniffer, events):
    door, hal, link = door_setup
    handle = link.unlock("door-entry", pulse_s=0.1)
    assert handle.wait(5).status == "acked"
    assert hal.unlocks == 1
    wait_until(lambda: hal.locked, 5, "relock after the pulse")
    captured = next(p for t, p, _ in sniffer.messages
                    if t.endswith("door-entry/cmd") and json.loads(p)["cmd_id"] == handle.cmd_id)

    # same bytes again, same boot: recognised by cmd_id, the first ack is repeated, no effect
    mosquitto_pub(broker, cmd_topic(cfg), captured)
    wait_until(lambda: len([a for a in sniffer.json("door-entry/ack")
                            if a["cmd_id"] == handle.cmd_id]) >= 2, 5, "repeated ack")
    assert hal.unlocks == 1

    # after a reboot the ack cache is gone; the NV seq still refuses it
    door.stop()
    fleet.door("door-entry")
    assert link.wait_reported("door-entry", lambda s: s["boot_id"] != door.boot_id
                              and s["time"]["trusted"], 5)
    assert_refused(cfg, broker, sniffer, events, captured, "replayed", handle.cmd_id)

    # a fresh command with an old sequence number is a replay too
    key = secrets.device_key(cfg.station.id, "door-entry")
    old = signed_unlock(key, seq=1)
    assert_refused(cfg, broker, sniffer, events, env.encode(old), "replayed", old["cmd_id"])
    assert hal.unlocks == 1 and hal.locked


def test_a_door_without_trusted_time_refuses_commands(cfg, secrets, broker, fleet, sniffer, events, make_link):
    fleet.hals["door-entry"] = hal = RecordingDoorHal()
    fleet.door("door-entry")  # no station running: nobody answers the time challenge
    wait_until(lambda: sniffer.json("door-entry/state"), 5, "door state")
    key = secrets.device_key(cfg.station.id, "door-entry")
    cmd = signed_unlock(key)
    mosquitto_pub(broker, cmd_topic(cfg), env.encode(cmd))
    ack = sniffer.wait_json("door-entry/ack", lambda a: a["cmd_id"] == cmd["cmd_id"])
    assert ack["ok"] is False and ack["reason"] == "no_trusted_time"
    assert hal.unlocks == 0
    # a station arrives, answers the challenge, and its own commands then work
    link = make_link(cfg, secrets)
    assert link.unlock("door-entry", pulse_s=0.1).wait(5).status == "acked"
    assert hal.unlocks == 1


def test_a_forged_time_sync_cannot_set_the_clock(cfg, secrets, broker, fleet, sniffer):
    fleet.door("door-entry")
    state = sniffer.wait_json("door-entry/state", lambda s: s["time"]["nonce"])
    key = secrets.device_key(cfg.station.id, "door-entry")
    stale = env.build_command(key=key, device="door-entry", seq=5, op="time.sync",
                              args={"nonce": "0123456789abcdef"}, ttl_s=5)
    mosquitto_pub(broker, cmd_topic(cfg), env.encode(stale))
    ack = sniffer.wait_json("door-entry/ack", lambda a: a["cmd_id"] == stale["cmd_id"])
    assert ack["reason"] == "replayed"
    forged = env.build_command(key=b"\x01" * 32, device="door-entry", seq=6, op="time.sync",
                               args={"nonce": state["time"]["nonce"]}, ttl_s=5)
    mosquitto_pub(broker, cmd_topic(cfg), env.encode(forged))
    ack = sniffer.wait_json("door-entry/ack", lambda a: a["cmd_id"] == forged["cmd_id"])
    assert ack["reason"] == "bad_signature"


def test_unlock_pulse_then_contact_reports_open_and_close(door_setup, events):
    _door, hal, link = door_setup
    assert link.unlock("door-entry").wait(5).status == "acked"
    events.wait("door.unlocked", "door-entry")
    assert not hal.locked  # the ack says the bolt is released, not that anyone went through
    hal.open_contact()
    opened = events.wait("door.opened", "door-entry")
    assert opened.data["authorized"] is True
    hal.close_contact()
    events.wait("door.closed", "door-entry")
    events.wait("door.locked", "door-entry", lambda e: e.data["cause"] == "pulse_end")
    assert hal.locked and not events.of("door.forced_open")


def test_door_forced_open_and_held_open_raise_alarms(door_setup, events):
    _door, hal, link = door_setup
    hal.open_contact()
    opened = events.wait("door.opened", "door-entry")
    assert opened.data["authorized"] is False
    events.wait("door.forced_open", "door-entry")
    events.wait("door.held_open", "door-entry")  # held_open_alarm_s is 0.4 in these tests
    assert link.wait_reported("door-entry", lambda s: s["held_open_alarm"] and s["open"])
    hal.close_contact()
    events.wait("door.closed", "door-entry")


def test_emergency_release_unlocks_regardless_and_reports(door_setup, events):
    _door, hal, link = door_setup
    hal.contact_broken = True  # a broken sensor must not block an emergency exit
    hal.press_emergency()
    evt = events.wait("door.emergency_release", "door-entry")
    assert evt.data["was_locked"] is True
    assert not hal.locked
    assert link.lock("door-entry").wait(5).result == {"locked": False, "emergency": True}
    assert not hal.locked  # the emergency input wins over a lock command
    hal.release_emergency()
    events.wait("door.locked", "door-entry", lambda e: e.data["cause"] == "emergency_reset")
    assert hal.locked
