"""Hostile device input against `station run` (a child process) over a real Mosquitto: what
reaches the station from the device side of the broker stays within its budgets.

  * undecodable messages (a lone surrogate, invalid or overlong UTF-8) are each counted as
    a `device.bad_message` within the per-device budget, never a traceback (#14.11);
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from station.devices import envelope as env
from tests.reliability.harness import ProcStation, shelve, until

# the link's budget for unusable messages (station/devices/link.py `_bad`): a burst of 20,
# then 2 a second, per device
BAD_BURST, BAD_PER_S = 20, 2.0


class Publisher:
    """A raw MQTT client on the device side of the broker (the tests' broker is open)."""

    def __init__(self, port: int, client_id: str = "attacker") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Recorder:
    """Records the raw payloads published on some topics (what an eavesdropper captures)."""

    def __init__(self, port: int, topic: str) -> None:
        self.payloads: list[bytes] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="eavesdropper")
        ready = threading.Event()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = lambda c, u, m: self.payloads.append(bytes(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10), "the eavesdropper did not subscribe"

    def of_kind(self, kind: str) -> list[bytes]:
        return [p for p in list(self.payloads) if json.loads(p).get("kind") == kind]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _sig() -> str:
    return "ab" * 32


def _bad_unicode(device: str) -> list[tuple[str, bytes]]:
    """(channel, payload): every way a device message can fail to be text."""
    evt = {"v": 1, "t": "evt", "msg_id": "m1", "device": device, "boot_id": "1-aa", "evt_seq": 7,
           "ts": None, "uptime_s": 1.0, "kind": "door.opened", "data": {"note": "X"}, "sig": _sig()}
    surrogate_in_data = json.dumps(evt).replace('"X"', '"\\ud800"').encode()
    surrogate_device = json.dumps({**evt, "device": "Y"}).replace('"Y"', '"\\udfff"').encode()
    surrogate_key = json.dumps(evt).replace('"note"', '"\\udc80"').encode()
    return [
        ("evt", surrogate_in_data),                           # well-formed up to the signature
        ("evt", surrogate_device),                            # a device name nobody can store
        ("state", surrogate_key),
        ("evt", b'{"v": 1, "t": "evt", "kind": "\xff\xfe"}'),  # invalid UTF-8
        ("ack", b'{"v": 1, "t": "ack", "cmd_id": "\xc0\xaf"}'),  # overlong "/"
        ("state", b'{"v": 1, "device": "\xed\xa0\x80"}'),      # a surrogate encoded as UTF-8
        ("ack", b"\xf8\x88\x80\x80\x80"),                     # a 5-byte form
        ("evt", b'"\\ud800"'),
    ]


def _bad_messages(ps: ProcStation, device: str, after_seq: int) -> list[dict[str, Any]]:
    rows = ps.query("SELECT data FROM events WHERE type = 'device.bad_message' AND subject = ?"
                    " AND seq > ? ORDER BY seq", (device, after_seq))
    return [json.loads(r["data"]) for r in rows]


def _head(ps: ProcStation) -> int:
    return int(ps.query("SELECT COALESCE(MAX(seq), 0) n FROM events")[0]["n"])


def test_bad_unicode_from_a_device_is_counted_within_the_budget_and_never_a_traceback(tmp_path: Path) -> None:
    with ProcStation(tmp_path) as ps:
        ps.start()
        sid, device = ps.config.station.id, "shelf-1"
        cases = _bad_unicode(device)
        rounds = 12
        pub = Publisher(ps.broker.port)
        mark = _head(ps)
        started = time.monotonic()
        for _ in range(rounds):
            for channel, payload in cases:
                pub.publish(env.topic(sid, device, channel), payload)
        sent = rounds * len(cases)
        # the flood spent the budget; once a token has come back, one more bad message is
        # reported with the count of those suppressed since the last report
        until(lambda: len(_bad_messages(ps, device, mark)) >= BAD_BURST, 20, "the burst reported")
        time.sleep(1.5 / BAD_PER_S)  # the budget's own refill, not a wait for the station
        pub.publish(env.topic(sid, device, "evt"), b"not json")
        sent += 1
        reported = until(lambda: (lambda r: r if sum(1 + e["suppressed"] for e in r) >= sent else None)(
            _bad_messages(ps, device, mark)), 20, "every bad message accounted for")
        elapsed = time.monotonic() - started
        pub.close()

        # every message counted, none twice
        assert sum(1 + e["suppressed"] for e in reported) == sent
        # within the budget: the burst, then the refill over the time it took
        assert BAD_BURST + 1 <= len(reported) <= BAD_BURST + int(BAD_PER_S * elapsed) + 1, (
            len(reported), elapsed)
        assert {e["reason"] for e in reported} == {"malformed"}
        assert ps.running and ps.http.get("/api/health").status_code == 200
        assert ps.verify_log().returncode == 0
        log = ps.log_tail(2_000_000)
        assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]
        assert "device link failed" not in log


def _count(ps: ProcStation, sql: str, args: tuple[Any, ...] = ()) -> int:
    return int(ps.query(sql, args)[0][0])


def test_a_captured_device_event_replayed_after_a_restart_is_taken_once(tmp_path: Path) -> None:
    with ProcStation(tmp_path) as ps:
        ps.start()
        sid, door = ps.config.station.id, ps.config.doors.entry
        spy = Recorder(ps.broker.port, env.topic(sid, door, "evt"))
        ctrl = ps.controller(door)
        ctrl.hal.open_contact()  # forced: nobody unlocked it
        until(lambda: spy.of_kind("door.forced_open") and spy.of_kind("door.opened"), 10, "captured")
        ctrl.hal.close_contact()
        forced_sql = "SELECT COUNT(*) FROM events WHERE type = 'door.forced_open' AND subject = ?"
        alarm_sql = "SELECT COUNT(*) FROM alarms WHERE kind = 'door.forced_open' AND subject = ?"
        until(lambda: _count(ps, forced_sql, (door,)) == 1 and _count(ps, alarm_sql, (door,)) == 1,
              10, "the forced opening logged and alarmed")
        opened_sql = "SELECT COUNT(*) FROM events WHERE type = 'door.opened' AND subject = ?"
        until(lambda: _count(ps, opened_sql, (door,)) == 1, 10, "the opening logged")
        captured = spy.of_kind("door.forced_open")[0], spy.of_kind("door.opened")[0]
        spy.close()

        ps.kill()
        ps.start()
        pub = Publisher(ps.broker.port)
        for _ in range(3):
            for payload in captured:
                pub.publish(env.topic(sid, door, "evt"), payload)
        # a marker behind them on the same device: once it is logged, they were handled
        mark = _head(ps)
        pub.publish(env.topic(sid, door, "evt"), b"marker")
        until(lambda: _bad_messages(ps, door, mark), 15, "the marker logged")
        pub.close()

        assert _count(ps, forced_sql, (door,)) == 1
        assert _count(ps, alarm_sql, (door,)) == 1
        assert _count(ps, opened_sql, (door,)) == 1
        assert ps.verify_log().returncode == 0


CONFIRM_S = 1.0  # mqtt.offline_confirm_s for these tests: an "offline" is judged after it


def _events_of(ps: ProcStation, kinds: tuple[str, ...], subject: str, after_seq: int) -> list[str]:
    marks = ",".join("?" * len(kinds))
    return [r["type"] for r in ps.query(
        f"SELECT type FROM events WHERE type IN ({marks}) AND subject = ? AND seq > ? ORDER BY seq",
        (*kinds, subject, after_seq))]


def _open_alarms(ps: ProcStation, subject: str) -> list[str]:
    return [r["kind"] for r in ps.query(
        "SELECT kind FROM alarms WHERE subject = ? AND acknowledged_at IS NULL ORDER BY raised_at",
        (subject,))]


def _flood(ps: ProcStation, device: str, n: int, retain: bool = False) -> float:
    """Publish `n` availability messages, alternating offline/online, as fast as the broker
    takes them; then a marker, and wait until the station has read it. Returns how long
    it took from the first message to the station's reading of the last."""
    topic = env.topic(ps.config.station.id, device, "avail")
    pub = Publisher(ps.broker.port)
    mark = _head(ps)
    started = time.monotonic()
    infos = [pub.client.publish(topic, b"offline" if i % 2 == 0 else b"online", qos=1, retain=retain)
             for i in range(n)]
    for info in infos:
        info.wait_for_publish(30)
    pub.publish(topic, b"marker")  # a bad avail: logged (budget), and behind every other one
    until(lambda: _bad_messages(ps, device, mark), 30, "the flood read to its end")
    took = time.monotonic() - started
    pub.publish(topic, b"online", retain=True)  # leave the retained topic as a device would
    pub.close()
    return took


AVAIL = ("device.online", "device.offline", "device.offline_disputed")


def test_an_availability_flood_at_a_live_door_writes_a_bounded_trace_and_no_alarm(tmp_path: Path) -> None:
    with ProcStation(tmp_path, mqtt={"offline_confirm_s": CONFIRM_S}) as ps:
        ps.start()
        door = ps.config.doors.entry
        mark = _head(ps)
        took = _flood(ps, door, 1001)
        until(lambda: _events_of(ps, AVAIL, door, mark), 30, "the claims judged")
        time.sleep(CONFIRM_S + 0.5)  # a claim opened by the last messages: its window
        seen = _events_of(ps, AVAIL, door, mark)
        # the door never stopped talking (each claim was answered by its signed ping ack):
        # no availability change at all, and one dispute per window at most
        assert "device.offline" not in seen and "device.online" not in seen, seen
        assert 1 <= len(seen) <= 1 + math.floor(took / CONFIRM_S), (len(seen), took)
        assert _open_alarms(ps, door) == []
        assert door in ps.online_devices()
        assert "Traceback" not in ps.log_tail(2_000_000)


def test_an_availability_flood_at_a_dead_door_changes_nothing_and_alarms_once(tmp_path: Path) -> None:
    with ProcStation(tmp_path, mqtt={"offline_confirm_s": CONFIRM_S}) as ps:
        ps.start()
        parcels = shelve(ps, [("SF0000000000001", "13900000001")])
        door = ps.config.doors.entry
        mark = _head(ps)
        ps.controller(door).stop()  # really gone: says "offline" and then nothing
        until(lambda: door not in ps.online_devices(), 10, "the door seen offline")
        _flood(ps, door, 1001)
        time.sleep(CONFIRM_S + 0.5)  # the last claim's window
        # customers turned away meanwhile: each refused, one alarm for all of them
        for _ in range(5):
            res = ps.api("post", "/api/kiosk/code", "kiosk", json={"code": parcels["SF0000000000001"]["code"]})
            assert res.status_code == 503 and res.json()["error"] == "door_offline", res.text
        assert _events_of(ps, AVAIL, door, mark) == ["device.offline"]  # exactly the real one
        assert sorted(_open_alarms(ps, door)) == ["device.offline", "door.offline"]
        assert door not in ps.online_devices()


def test_a_forged_offline_for_a_talking_door_refuses_no_customer(tmp_path: Path) -> None:
    with ProcStation(tmp_path, mqtt={"offline_confirm_s": CONFIRM_S}) as ps:
        ps.start()
        parcels = shelve(ps, [(f"SF{n:013d}", f"1390000{n:04d}") for n in range(1, 5)])
        codes = [p["code"] for p in parcels.values()]
        door, sid = ps.config.doors.entry, ps.config.station.id
        mark = _head(ps)
        stop = threading.Event()

        def forge() -> int:  # what a stolen client id makes the broker say, again and again
            pub, n = Publisher(ps.broker.port, "forger"), 0
            while not stop.is_set():
                pub.publish(env.topic(sid, door, "avail"), b"offline", retain=True)
                n += 1
                time.sleep(0.05)
            pub.close()
            return n

        def enter(i: int) -> tuple[int, str]:
            res = ps.api("post", "/api/kiosk/code", "kiosk", json={"code": codes[i % len(codes)]})
            return res.status_code, res.json().get("error") or res.json().get("door")

        with ThreadPoolExecutor(8) as pool:
            forger = pool.submit(forge)
            until(lambda: forger.running(), 5)
            deadline = time.monotonic() + 4 * CONFIRM_S
            answers: list[tuple[int, str]] = []
            while time.monotonic() < deadline:
                answers += list(pool.map(enter, range(len(answers), len(answers) + 4)))
            stop.set()
            forged = forger.result(30)
        assert forged >= 20 and len(answers) >= 8
        assert all(a == (200, "unlocked") for a in answers), [a for a in answers if a != (200, "unlocked")]
        seen = _events_of(ps, AVAIL, door, mark)
        assert "device.offline" not in seen, seen
        assert "device.offline_disputed" in seen
        assert "door.offline" not in _open_alarms(ps, door)
        assert not ps.query("SELECT 1 FROM events WHERE type = 'entry.refused' AND seq > ?", (mark,))

        # the same retained "offline", and now the door really is silent: believed in time
        ps.controller(door).crash()  # no goodbye of its own; the forged word is all there is
        until(lambda: door not in ps.online_devices(), 15 * CONFIRM_S + 15, "the silent door offline")
        res = ps.api("post", "/api/kiosk/code", "kiosk", json={"code": codes[0]})
        assert res.status_code == 503 and res.json()["error"] == "door_offline", res.text
