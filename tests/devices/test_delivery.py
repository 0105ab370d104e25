"""Device events are taken on the link's own delivery thread (docs/adr/0165): a flow that
takes long never keeps the link from reading what the devices say next."""

from __future__ import annotations

import threading

from station.devices.link import DeviceEvent, DeviceLink, Light

from .conftest import EventLog, taken

RED = Light(("#FF0000",))


def test_a_slow_flow_does_not_hold_up_a_door_commands_outcome(cfg, secrets, fleet, make_link, events: EventLog):
    """on_event runs the flows an event starts: a placement's commit and its lights, which
    take as long as the disk's fsync. While one is slow, a door's ack is still read and wakes
    the customer's request waiting on it; the events queued meanwhile are taken after the
    slow one, in order, each once. (With events taken on the network thread, the door's ack
    waited behind the slow flow: this test's unlock timed out.)"""
    release, busy = threading.Event(), threading.Event()

    def on_event(ev: DeviceEvent) -> None:
        if ev.kind == "command.acked" and ev.device == "shelf-1" and not release.is_set():
            busy.set()
            release.wait(10)  # the slow flow
        events(ev)

    fleet.door("door-entry")
    fleet.shelf("shelf-1")
    link: DeviceLink = make_link(cfg, secrets, on_event=on_event)
    for device in ("door-entry", "shelf-1"):
        assert link.wait_reported(device, lambda s: s["time"]["trusted"], 5)
    lights = link.set_lights("shelf-1", {(1, 1): RED})
    assert lights.wait(5).ok
    assert busy.wait(5), "the lights' outcome was never offered to on_event"
    try:
        unlocked = link.unlock("door-entry", pulse_s=0.05).wait(3)
        assert unlocked.ok
        assert not events.of("command.acked", "door-entry"), "taken before the slow flow ended"
    finally:
        release.set()
    taken(link)
    acked = [e.data["cmd_id"] for e in events.of("command.acked")]
    assert acked == [lights.cmd_id, unlocked.cmd_id]
