"""Clock steps never stop a door or a light, and never let a given-up command run (#22.1, #22.2).

Real link, real firmware (in process, on the in-memory HAL) and a real Mosquitto. Steps are
injected through the station's and the firmware's clocks (tests/devices/clocks.py); the
machine's clock is never touched. Expiry is judged on the station's monotonic clock
(docs/adr/0090), so a step of any size, either way, on either end, changes nothing a door or
a shelf decides.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from station.devices.link import Light

from .clocks import DeviceClock, SteppedStationClock
from .conftest import Fleet, link_config, mosquitto_pub, taken, wait_until
from .test_door_security import RecordingDoorHal, cmd_topic

STEPS = [10, 120, 3600, 86400]
BOTH_WAYS = [s * sign for s in STEPS for sign in (-1, 1)]
GREEN = Light(("#00FF00",), "solid", 60.0)


def step_id(step: float) -> str:
    return f"{'+' if step > 0 else '-'}{abs(step)}s"


class Gate:
    """The door's network for incoming commands: records every cmd_id that reached the
    firmware and, while closed, keeps what arrives (as someone on the path could)."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.held: list[tuple[bytes, Callable[[bytes], None]]] = []
        self.closed = False
        self._lock = threading.Lock()

    def __call__(self, direction: str, topic: str, payload: bytes,
                 deliver: Callable[[bytes], None]) -> None:
        if direction == "in":
            with self._lock:
                if self.closed:
                    self.held.append((payload, deliver))
                    return
                self.received.append(_cmd_id(payload))
        deliver(payload)

    def held_ids(self) -> list[str]:
        with self._lock:
            return [_cmd_id(p) for p, _ in self.held]

    def release(self) -> None:
        with self._lock:
            held, self.held, self.closed = self.held, [], False
            self.received += [_cmd_id(p) for p, _ in held]
        for payload, deliver in held:
            deliver(payload)


def _cmd_id(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("cmd_id", ""))
    except ValueError:
        return ""


def trusted(link: Any, *devices: str) -> None:
    for device in devices:
        assert link.wait_reported(device, lambda s: s["time"]["trusted"], 5), device


def assert_door_and_lights_work(link: Any, hal: RecordingDoorHal, col: int) -> None:
    before = hal.unlocks
    out = link.unlock("door-entry", pulse_s=0.1).wait(5)
    assert out.status == "acked", out
    assert hal.unlocks == before + 1
    out = link.set_lights("shelf-1", {(1, col): GREEN}).wait(5)
    assert out.status == "acked", out
    wait_until(lambda: hal.locked, 5, "relock after the pulse")


@pytest.mark.parametrize("step", BOTH_WAYS, ids=step_id)
def test_doors_and_lights_work_after_the_station_clock_steps(cfg, secrets, fleet, make_link, step):
    """Production devices (time from the station's challenge). Before: a backward step larger
    than the ttl made every command `expired` until the hourly re-sync."""
    clock = SteppedStationClock()
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    door = fleet.door("door-entry")
    shelf = fleet.shelf("shelf-1")
    link = make_link(cfg, secrets, clock=clock.clock)
    trusted(link, "door-entry", "shelf-1")
    assert_door_and_lights_work(link, hal, 1)

    clock.step(step)
    assert_door_and_lights_work(link, hal, 2)
    # the devices noticed the station's wall clock moved and took it again (their reported
    # time follows), judging expiry on the monotonic clocks all along
    wait_until(lambda: abs(door.now() - clock.wall()) < 2, 5, "door took the stepped time")
    link.set_lights("shelf-1", {(1, 3): GREEN}).wait(5)
    wait_until(lambda: abs(shelf.now() - clock.wall()) < 2, 5, "shelf took the stepped time")
    assert_door_and_lights_work(link, hal, 4)
    assert set(shelf.hal.lit()) == {(1, 1), (1, 2), (1, 3), (1, 4)}
    # the desired lights keep their ttl on the monotonic clock: a forward step does not drop
    # them (nothing to reconcile to), a backward one does not keep them for a day
    assert set(link.desired_lights("shelf-1")) == {(1, 1), (1, 2), (1, 3), (1, 4)}


@pytest.mark.parametrize("step", BOTH_WAYS, ids=step_id)
def test_doors_and_lights_work_after_a_device_clock_steps(cfg, secrets, fleet, make_link, step):
    """Controllers that keep their own wall clock (`trust_host_clock`: NTP on the board).
    Before: a forward step larger than the ttl made the device refuse everything `expired`."""
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    door_clock, shelf_clock = DeviceClock(), DeviceClock()
    fleet.door("door-entry", clock=door_clock, trust_host_clock=True)
    fleet.shelf("shelf-1", clock=shelf_clock, trust_host_clock=True)
    link = make_link(cfg, secrets)
    trusted(link, "door-entry", "shelf-1")
    assert_door_and_lights_work(link, hal, 1)

    door_clock.step(step)
    shelf_clock.step(step)
    assert_door_and_lights_work(link, hal, 2)
    assert_door_and_lights_work(link, hal, 3)


def test_a_device_whose_timer_leaps_forward_resyncs_and_runs_the_command(
        cfg, secrets, fleet, make_link, events):
    """A device that overestimates the station's clock refuses `expired`, asks for a time.sync,
    and the station retries the still-fresh command once instead of giving up."""
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    door_clock = DeviceClock()
    fleet.door("door-entry", clock=door_clock)
    fleet.shelf("shelf-1")
    link = make_link(cfg, secrets)
    trusted(link, "door-entry", "shelf-1")
    door_clock.leap(600)
    mark = events.mark()
    handle = link.unlock("door-entry", pulse_s=0.1)
    assert handle.wait(5).status == "acked"
    refused = [e for e in events.events[mark:] if e.kind == "device.command_refused"
               and e.data["cmd_id"] == handle.cmd_id]
    assert [e.data["reason"] for e in refused] == ["expired"]
    assert hal.unlocks == 1


def test_a_late_answer_to_a_challenge_is_tightened_at_once(cfg, secrets, fleet, make_link):
    """A sync that answers an old challenge gives a loose anchor (the device's bound on the
    station's clock is as high as the challenge is old): the device asks again at once."""
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    door_clock = DeviceClock()
    door = fleet.door("door-entry", clock=door_clock)
    wait_until(lambda: door.connected.is_set(), 5, "door up, its challenge open")
    door_clock.leap(20)  # nobody answered for 20 s (within the 30 s window)
    link = make_link(cfg, secrets)
    trusted(link, "door-entry")

    def overestimate() -> float:
        anchor = door._anchor
        return anchor.station_now(door_clock.monotonic()) - time.monotonic() if anchor else 1e9

    wait_until(lambda: overestimate() < 1.0, 5, "a tight anchor")
    assert link.unlock("door-entry", pulse_s=0.1).wait(5).ok
    assert hal.unlocks == 1


@pytest.mark.parametrize("step", [-86400, 86400], ids=step_id)
def test_a_command_in_flight_keeps_its_ttl_whatever_the_station_clock_does(
        cfg, secrets, fleet, make_link, step):
    """Before: a forward step expired the command in flight at once; a backward step kept it
    alive (and retried) for a day."""
    clock = SteppedStationClock()
    gate = Gate()
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    fleet.door("door-entry", net=gate)
    link = make_link(cfg, secrets, clock=clock.clock)
    trusted(link, "door-entry")
    gate.closed = True
    handle = link.unlock("door-entry", pulse_s=0.1)
    wait_until(lambda: handle.cmd_id in gate.held_ids(), 5, "first transmission")
    clock.step(step)
    # two more retransmissions: the link has ticked well past the step
    wait_until(lambda: gate.held_ids().count(handle.cmd_id) >= 3, 5, "retries after the step")
    assert not handle.done()
    if step > 0:
        gate.release()  # the door hears it now, well within its ttl
        assert handle.wait(5).status == "acked"
        assert hal.unlocks == 1
    else:
        assert handle.wait(5).status == "expired"  # after its ttl, not a day later
        gate.release()
        wait_until(lambda: hal.locked, 1)
        assert hal.unlocks == 0


@pytest.mark.parametrize("step", [0, 120, 3600], ids=lambda s: f"station{step_id(s)}" if s else "nostep")
def test_an_unlock_given_up_while_the_link_was_down_never_runs(
        config, secrets, own_broker, tmp_path, make_link, events, step):
    """#22.2: the broker is away, the station gives the unlock up (`expired`); when the link
    returns, paho must not send it, and the door must not run it even though its own clock
    (behind the stepped station) would call it fresh."""
    cfg = link_config(config, own_broker)
    clock = SteppedStationClock()
    gate = Gate()
    fleet = Fleet(cfg, secrets, own_broker.url, tmp_path / "nv")
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    try:
        door = fleet.door("door-entry", net=gate)
        link = make_link(cfg, secrets, clock=clock.clock)
        trusted(link, "door-entry")
        clock.step(step)  # after the door took its time: its clock is `step` behind

        own_broker.stop()
        wait_until(lambda: not link.connected.is_set(), 5, "station noticed the outage")
        given_up = link.unlock("door-entry", pulse_s=5)
        assert given_up.wait(5).status == "expired"
        own_broker.start()

        wait_until(link.connected.is_set, 10, "station reconnected")
        wait_until(door.connected.is_set, 10, "door reconnected")
        assert link.wait_online(["door-entry"], 10)
        # a fresh command goes through, so both ends are back and anything queued has landed
        assert link.lock("door-entry").wait(5).ok
        assert given_up.cmd_id not in gate.received  # never sent after it was given up
        assert hal.unlocks == 0 and hal.locked
        assert given_up.outcome is not None and given_up.outcome.status == "expired"
        taken(link)
        assert not [e for e in events.of("command.acked") if e.data["cmd_id"] == given_up.cmd_id]
    finally:
        fleet.stop()


@pytest.mark.parametrize("step", [120, 3600], ids=step_id)
def test_a_command_that_arrives_after_the_station_gave_up_is_refused(
        cfg, secrets, fleet, make_link, events, sniffer, step):
    """Held on the way (a slow network, someone on the path) past its expiry, then delivered:
    the door refuses it on the station's monotonic clock, although by its own wall clock
    (behind the stepped station) the command would still look fresh."""
    clock = SteppedStationClock()
    gate = Gate()
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    fleet.door("door-entry", net=gate)
    link = make_link(cfg, secrets, clock=clock.clock)
    trusted(link, "door-entry")
    clock.step(step)
    gate.closed = True
    handle = link.unlock("door-entry", pulse_s=5)
    assert handle.wait(5).status == "expired"
    copies = gate.held_ids().count(handle.cmd_id)
    assert copies >= 1
    gate.release()
    wait_until(lambda: len([a for a in sniffer.json("door-entry/ack")
                            if a["cmd_id"] == handle.cmd_id]) >= copies, 5, "the door's answers")
    answers = [a for a in sniffer.json("door-entry/ack") if a["cmd_id"] == handle.cmd_id]
    assert {(a["ok"], a.get("reason")) for a in answers} == {(False, "expired")}
    assert hal.unlocks == 0 and hal.locked
    assert handle.outcome is not None and handle.outcome.status == "expired"


@pytest.mark.parametrize("step", [-120, -86400], ids=step_id)
def test_a_captured_unlock_replayed_after_a_clock_step_never_opens_the_door(
        cfg, secrets, broker, fleet, make_link, sniffer, events, step):
    """Security: the station's wall clock steps back and the door takes the stepped time; a
    captured unlock (one the door never heard, so its seq is still unused, and one it ran)
    is published again. Before: the never-heard one looked fresh again and opened the door."""
    clock = SteppedStationClock()
    gate = Gate()
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    door = fleet.door("door-entry", net=gate, resync_s=0.5)  # re-syncs without a command
    link = make_link(cfg, secrets, clock=clock.clock)
    trusted(link, "door-entry")
    ran = link.unlock("door-entry", pulse_s=0.1)
    assert ran.wait(5).ok
    wait_until(lambda: hal.locked, 5, "relock")
    gate.closed = True
    unheard = link.unlock("door-entry", pulse_s=5)
    assert unheard.wait(5).status == "expired"
    gate.held, gate.closed = [], False  # dropped on the way
    captured = {}
    for topic, payload, _ in list(sniffer.messages):
        if topic.endswith("door-entry/cmd"):
            captured.setdefault(json.loads(payload)["cmd_id"], payload)

    clock.step(step)
    wait_until(lambda: abs(door.now() - clock.wall()) < 2, 5, "door took the stepped time")
    mosquitto_pub(broker, cmd_topic(cfg), captured[unheard.cmd_id])
    ack = sniffer.wait_json("door-entry/ack", lambda a: a["cmd_id"] == unheard.cmd_id)
    assert ack["ok"] is False and ack["reason"] == "expired"
    mosquitto_pub(broker, cmd_topic(cfg), captured[ran.cmd_id])  # its first ack again, no effect
    wait_until(lambda: len([a for a in sniffer.json("door-entry/ack")
                            if a["cmd_id"] == ran.cmd_id]) >= 2, 5, "repeated ack")
    assert hal.unlocks == 1 and hal.locked
    assert link.unlock("door-entry", pulse_s=0.1).wait(5).ok  # the station's own still work
    assert hal.unlocks == 2


def test_after_the_station_reboots_its_devices_take_its_new_clock(
        cfg, secrets, fleet, make_link, tmp_path):
    """A new kernel boot starts the station's monotonic clock again under a new epoch: the
    first command is refused `clock_skew`, the device asks for a time.sync, the retry runs."""
    hal = fleet.hals["door-entry"] = RecordingDoorHal()
    fleet.door("door-entry")
    fleet.shelf("shelf-1")
    first = make_link(cfg, secrets, clock=SteppedStationClock("boot-a", 50_000).clock,
                      seq_path=tmp_path / "seq")
    trusted(first, "door-entry", "shelf-1")
    assert_door_and_lights_work(first, hal, 1)
    first.stop()
    rebooted = SteppedStationClock("boot-b", 5.0 - time.monotonic())  # up for 5 s
    second = make_link(cfg, secrets, clock=rebooted.clock, seq_path=tmp_path / "seq")
    assert_door_and_lights_work(second, hal, 2)


def test_firmware_processes_keep_working_through_day_steps_of_the_station(
        cfg, secrets, broker, spawn, make_link, events):
    """The same with the firmware as real processes (`python -m firmware_stubs.door|shelf`,
    time from the station's challenge): a day back, then two days forward."""
    spawn("door", "door-entry", broker.url)
    spawn("shelf", "shelf-1", broker.url)
    clock = SteppedStationClock()
    link = make_link(cfg, secrets, clock=clock.clock)
    trusted(link, "door-entry", "shelf-1")
    for col, step in enumerate((0, -86400, 2 * 86400), start=1):
        clock.step(step)
        mark = events.mark()
        out = link.unlock("door-entry", pulse_s=0.1).wait(5)
        assert out.status == "acked", out
        events.wait("door.unlocked", "door-entry", after=mark)
        out = link.set_lights("shelf-1", {(2, col): GREEN}).wait(5)
        assert out.status == "acked", out
    assert link.wait_reported("shelf-1", lambda s: {(x["row"], x["col"]) for x in s["lights"]}
                              == {(2, 1), (2, 2), (2, 3)})
