"""Garbage on every topic, from either side: error events, and both ends keep running."""

from __future__ import annotations

import json
import time

from station.devices import envelope as env
from station.devices.link import Light

from .conftest import mosquitto_pub, wait_until

ONE_MB = b"{" + b'"a":' * 10 + b"x" * (1024 * 1024)


def test_device_process_survives_garbage_commands(cfg, secrets, broker, spawn, make_link, events, sniffer):
    proc = spawn("shelf", "shelf-1", broker.url)
    link = make_link(cfg, secrets)
    assert link.wait_online(["shelf-1"], 10)
    key = secrets.device_key(cfg.station.id, "shelf-1")
    topic = env.topic(cfg.station.id, "shelf-1", "cmd")
    good = env.build_command(key=key, device="shelf-1", seq=time.time_ns() // 1000, op="lights.set",
                             args={"slots": []}, ttl_s=5)
    wrong_types = dict(good, seq="seven")
    bad_args = env.build_command(key=key, device="shelf-1", seq=time.time_ns() // 1000,
                                 op="lights.set", args={"slots": [{"row": 99, "col": "x"}]}, ttl_s=5)
    unknown_op = env.build_command(key=key, device="shelf-1", seq=time.time_ns() // 1000,
                                   op="reboot", args={}, ttl_s=5)
    cases = [
        (b"not json at all", "malformed"),
        (b"\xff\xfe\x00garbage", "malformed"),
        (b"[1, 2, 3]", "malformed"),
        (b"[" * 100000 + b"]" * 100000, "too_large"),
        (json.dumps(wrong_types).encode(), "malformed"),
        (env.encode(bad_args), "malformed"),
        (ONE_MB, "too_large"),
        (env.encode(unknown_op), "unknown_op"),
        (b'{"v":1,"t":"cmd","sig":"00","seq":NaN}', "malformed"),
    ]
    mark = events.mark()
    for payload, _ in cases:
        mosquitto_pub(broker, topic, payload)
    def refusals():
        found = [e for e in events.events[mark:] if e.kind == "device.command_refused"]
        return found if len(found) >= len(cases) else None

    refused = wait_until(refusals, 10, "refusals")
    assert [e.data["reason"] for e in refused] == [reason for _, reason in cases]
    assert proc.poll() is None
    assert link.set_lights("shelf-1", {(1, 1): Light(("#123456",))}).wait(5).ok


def test_station_survives_garbage_from_devices(cfg, secrets, broker, fleet, make_link, events):
    shelf = fleet.shelf("shelf-1")
    link = make_link(cfg, secrets)
    assert link.wait_online(["shelf-1"], 5)
    assert link.wait_reported("shelf-1", lambda s: s["time"]["trusted"], 5)
    before = link.reported("shelf-1")
    key = secrets.device_key(cfg.station.id, "shelf-1")

    def t(channel):
        return env.topic(cfg.station.id, "shelf-1", channel)

    forged_state = dict(before, lights=[{"row": 1, "col": 1, "colours": ["#FFFFFF"],
                                         "pattern": "solid", "ttl_left_s": 5}])
    forged_state["sig"] = env.signature(forged_state, b"\x02" * 32)
    unsigned_evt = {"v": 1, "t": "evt", "msg_id": "m1", "device": "shelf-1", "boot_id": "1-x",
                    "evt_seq": 1, "ts": None, "uptime_s": 1.0, "kind": "placement",
                    "data": {"row": 1, "col": 1, "action": "put", "count": 1, "occupied": True}}
    unknown_kind = env.sign({**unsigned_evt, "kind": "shelf.exploded", "data": {}}, key)
    bad_data = env.sign({**unsigned_evt, "data": {"row": "one"}}, key)
    other_device = env.sign({**unsigned_evt, "device": "shelf-2"}, key)
    cases = [
        ("ack", b"not json", "malformed"),
        ("ack", json.dumps({"v": 1, "t": "ack", "ok": "yes", "sig": "00"}).encode(), "malformed"),
        ("ack", ONE_MB, "too_large"),
        ("evt", b"\x00\x01", "malformed"),
        ("evt", json.dumps(unsigned_evt).encode(), "unsigned"),
        ("evt", env.encode(unknown_kind), "malformed"),
        ("evt", env.encode(bad_data), "malformed"),
        ("evt", env.encode(other_device), "wrong_device"),
        ("state", ONE_MB, "too_large"),
        ("state", env.encode(forged_state), "bad_signature"),
        ("state", b"[]", "malformed"),
        ("avail", b"maybe", "malformed"),
    ]
    mark = events.mark()
    for channel, payload, _ in cases:
        mosquitto_pub(broker, t(channel), payload)
    def bad_messages():
        found = [e for e in events.events[mark:] if e.kind == "device.bad_message"]
        return found if len(found) >= len(cases) else None

    bad = wait_until(bad_messages, 10, "bad_message events")
    assert [(e.data["channel"], e.data["reason"]) for e in bad] == [(c, r) for c, _, r in cases]
    assert not events.of("placement")  # the unsigned placement never reached the log
    assert link.reported("shelf-1")["lights"] == before["lights"]
    assert link.is_online("shelf-1")
    assert link.set_lights("shelf-1", {(2, 2): Light(("#654321",))}).wait(5).ok
    assert shelf.hal.led(2, 2).lit
