"""A command whose ack is lost is sent again after the device's own round trip, not after the
link's fixed ceiling (docs/adr/0167): one command is in flight per device, so every command
queued behind a lost ack waits that long. Found by the week scenario, where a lost ack
stalled a shelf's lights for half a second about once every three seconds."""

from __future__ import annotations

import json
import threading
from typing import Any

from station.devices.link import MIN_RETRY_S, DeviceLink, _Device


class _DropNextAck:
    """The door's network: once armed, drops the ack of the next `lock` it is sent (only
    that one: a time sync or a ping answered meanwhile goes through), delivers the rest."""

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.target: str | None = None
        self.dropped = 0

    def __call__(self, direction: str, topic: str, payload: bytes, deliver: Any) -> None:
        msg = json.loads(payload)
        if direction == "in" and self.armed.is_set() and msg.get("op") == "lock":
            self.armed.clear()
            self.target = msg.get("cmd_id")
        elif direction == "out" and topic.endswith("/ack") and self.target is not None \
                and msg.get("cmd_id") == self.target:
            self.target = None
            self.dropped += 1
            return
        deliver(payload)


def test_a_lost_ack_is_resent_after_the_round_trip_not_the_ceiling(cfg, secrets, fleet, make_link, events):
    net = _DropNextAck()
    fleet.door("door-entry", net=net)
    link: DeviceLink = make_link(cfg, secrets, retry_s=30.0)  # a ceiling no test waits out
    assert link.wait_reported("door-entry", lambda s: s["time"]["trusted"], 5)
    for _ in range(5):  # round trips to learn from
        assert link.lock("door-entry").wait(5).ok
    dev = link._devices["door-entry"]
    assert dev.srtt is not None
    net.armed.set()
    handle = link.lock("door-entry")
    outcome = handle.wait(10)   # far below the 30 s ceiling: resent after about the round trip
    assert outcome.ok, outcome
    assert net.dropped == 1
    ack = events.wait("command.acked", pred=lambda e: e.data["cmd_id"] == handle.cmd_id)
    assert ack.data["tries"] == 2


def test_the_retry_waits_the_ceiling_until_a_round_trip_is_known():
    assert _Device("door", "door").retry_after(1, 0.5) == 0.5


def test_the_retry_follows_the_smoothed_round_trip_within_its_bounds():
    dev = _Device("shelf-1", "shelf")
    for _ in range(50):
        dev.measured(0.005)     # a LAN's 5 ms
    assert dev.retry_after(1, 0.5) == MIN_RETRY_S        # never below the floor
    for _ in range(50):
        dev.measured(0.150)     # a slow gateway's 150 ms, steady
    first = dev.retry_after(1, 0.5)
    assert MIN_RETRY_S < first < 0.5
    assert dev.retry_after(2, 0.5) == min(0.5, 2 * first)  # doubled for a send unanswered
    assert dev.retry_after(5, 0.5) == 0.5                  # and never above the ceiling


def test_a_jittery_link_waits_longer_than_a_steady_one_with_the_same_mean():
    steady, jittery = _Device("a", "shelf"), _Device("b", "shelf")
    for i in range(100):
        steady.measured(0.060)
        jittery.measured(0.020 if i % 2 else 0.100)
    assert jittery.retry_after(1, 2.0) > steady.retry_after(1, 2.0)
