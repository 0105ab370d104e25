"""The injectable network hook: duplicated and dropped messages never double-run a command."""

from __future__ import annotations

import threading

from station.devices.link import Light
from tests.devices.conftest import taken


def test_duplicated_incoming_commands_run_once_and_dropped_acks_are_retried(cfg, secrets, fleet, make_link, events):
    seen: list[str] = []
    lock = threading.Lock()
    state = {"drop_acks": 0}

    def net(direction, topic, payload, deliver):
        if direction == "in":
            deliver(payload)
            deliver(payload)  # every command arrives twice
        elif topic.endswith("/ack") and state["drop_acks"]:
            with lock:
                state["drop_acks"] -= 1
            seen.append("dropped")  # the ack and the duplicate's repeated ack are lost
        else:
            deliver(payload)

    door = fleet.door("door-entry", net=net)
    opened: list[bool] = []
    original = door.hal.set_locked
    door.hal.set_locked = lambda locked: (opened.append(locked), original(locked))[1]  # type: ignore[method-assign]
    link = make_link(cfg, secrets)
    assert link.wait_reported("door-entry", lambda s: s["time"]["trusted"], 5)
    state["drop_acks"] = 2
    out = link.unlock("door-entry", pulse_s=0.05).wait(5)
    assert out.status == "acked"
    assert opened.count(False) == 1  # one unlock despite duplicates and a retry
    assert seen == ["dropped", "dropped"]
    taken(link)
    acked = [e for e in events.of("command.acked") if e.data["cmd_id"] == out.cmd_id]
    assert len(acked) == 1 and acked[0].data["tries"] >= 2


def test_shelf_lights_via_hook_that_delays_nothing(cfg, secrets, fleet, make_link):
    shelf = fleet.shelf("shelf-1", net=lambda d, t, p, deliver: deliver(p))
    link = make_link(cfg, secrets)
    assert link.set_lights("shelf-1", {(1, 1): Light(("#ABCDEF",))}).wait(5).ok
    assert shelf.hal.led(1, 1).colours == ("#ABCDEF",)
