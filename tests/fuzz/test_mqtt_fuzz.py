"""MQTT fuzzing of every topic the station listens to (ack, state, evt, avail of each device,
and of a device it does not know), against `station run` as a child process.

Payloads: messages generated from the JSON schemas of docs/asyncapi.yaml, as they are or with
one thing broken, unsigned, forged, or correctly signed with the device's own key (so they
reach the checks behind the signature); plus garbage bytes, wrong JSON types, NaN, deep
nesting, 1 MB, and retained junk that the station meets again when it restarts.

Afterwards: the process still runs and answers /api/health, the log verifies, the parcels
are exactly what they were, and a customer still gets in and finds the right slots lit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from station.devices import envelope as env
from tests.fuzz.schema_strategies import from_schema, mutated, schema
from tests.reliability.harness import ProcStation, shelve, until

EXAMPLES = 250  # per test; publishing is fast, the station's checks are the cost


class Publisher:
    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self.sent += 1
        if self.sent % 50 == 0:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.publish("ps/fuzz/flush", b"", qos=1).wait_for_publish(10)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcStation, dict[str, Any]]]:
    with ProcStation(tmp_path_factory.mktemp("mqtt-fuzz")) as ps:
        ps.start()
        parcels = shelve(ps, [("SF0000000000001", "13900000001"), ("SF0000000000002", "13900000002")])
        yield ps, parcels


def _parcels(ps: ProcStation) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in ps.query("SELECT id, waybill, slot, state, code_digest FROM parcels ORDER BY id")]


def _still_whole(ps: ProcStation, parcels: dict[str, Any], before: list[tuple[Any, ...]]) -> None:
    assert ps.running, f"the station died:\n{ps.log_tail()}"
    assert ps.http.get("/api/health").status_code == 200
    verify = ps.verify_log()
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert _parcels(ps) == before, "fuzzed device messages changed the parcels"
    # the devices say who they are again, as after any reconnect: fuzzed `avail` and retained
    # `state` junk is unsigned by design of MQTT availability (see docs/threat-model.md)
    pub = Publisher(ps.broker.port)
    for d in ps.devices:
        pub.publish(env.topic(ps.config.station.id, d.device_id, "avail"), b"offline", retain=True)
        pub.publish(env.topic(ps.config.station.id, d.device_id, "avail"), b"online", retain=True)
        d.publish_state()
    pub.close()
    until(lambda: set(ps.config.device_ids) <= ps.online_devices(), 15, "devices online again")
    first = parcels["SF0000000000001"]
    res = ps.api("post", "/api/kiosk/code", "kiosk", json={"code": first["code"]})
    assert res.status_code == 200 and res.json()["door"] == "unlocked", res.text
    until(lambda: first["slot"] in ps.lit(), 10, "the customer's slot lit")
    ps.lights_match(20)


CHANNEL_SCHEMAS = {
    "ack": ["Ack"],
    "evt": ["Event"],
    "state": ["ShelfState", "DoorState"],
}


@st.composite
def device_message(draw: Any, devices: list[str], keys: dict[str, bytes]) -> tuple[str, str, bytes, bool]:
    device = draw(st.sampled_from(devices + ["shelf-404"]))
    channel = draw(st.sampled_from(["ack", "evt", "state", "avail"]))
    retain = channel in ("state", "avail") and draw(st.booleans())
    if channel == "avail":
        payload = draw(st.one_of(st.sampled_from([b"online", b"offline", b"", b"ONLINE", b"online\x00"]),
                                 st.binary(max_size=64)))
        return device, channel, payload, retain
    kind = draw(st.sampled_from(["signed-valid", "signed-valid", "schema", "schema", "garbage", "json"]))
    if kind == "garbage":
        payload = draw(st.binary(max_size=512))
    elif kind == "json":
        payload = json.dumps(draw(st.one_of(st.integers(), st.text(max_size=30), st.lists(st.integers(), max_size=5),
                                            st.none(), st.floats(allow_nan=False)))).encode()
    else:
        name = draw(st.sampled_from(CHANNEL_SCHEMAS[channel]))
        if kind == "signed-valid":  # authentic in form and signature: reaches the flows
            obj = draw(from_schema(schema(name)))
            how = "signed"
        else:
            obj = draw(mutated(from_schema(schema(name))))
            how = draw(st.sampled_from(["as-is", "signed", "unsigned", "forged"]))
        if isinstance(obj, dict):
            if how == "signed" and device in keys:
                obj["device"] = device
                obj.pop("sig", None)
                obj = env.sign(obj, keys[device])
            elif how == "unsigned":
                obj.pop("sig", None)
            elif how == "forged":
                obj["device"] = device
                obj["sig"] = "0" * 64
        try:
            payload = json.dumps(obj).encode()
        except (TypeError, ValueError):
            payload = repr(obj).encode()
    return device, channel, payload, retain


def test_fuzzed_device_messages_leave_the_station_running_and_its_data_whole(station) -> None:  # type: ignore[no-untyped-def]
    ps, parcels = station
    before = _parcels(ps)
    sid = ps.config.station.id
    devices = list(ps.config.device_ids)
    keys = {d: ps.secrets.device_key(sid, d) for d in devices}
    pub = Publisher(ps.broker.port)
    seen: dict[str, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(device_message(devices, keys))
    def fuzz(msg: tuple[str, str, bytes, bool]) -> None:
        device, channel, payload, retain = msg
        seen[channel] = seen.get(channel, 0) + 1
        pub.publish(env.topic(sid, device, channel), payload, retain=retain)

    fuzz()
    pub.close()
    assert set(seen) == {"ack", "evt", "state", "avail"}, seen
    _still_whole(ps, parcels, before)


def test_hand_picked_hostile_payloads_and_retained_junk_across_a_restart(station) -> None:  # type: ignore[no-untyped-def]
    ps, parcels = station
    before = _parcels(ps)
    sid = ps.config.station.id
    key = ps.secrets.device_key(sid, "shelf-1")
    hostile: list[bytes] = [
        b"\x00" * (1024 * 1024),                       # 1 MB of zeros
        b"{" + b'"a":' * 200_000 + b"1" + b"}" * 200_000,  # too large anyway
        b"[" * 30_000 + b"]" * 30_000,                 # deep nesting under the size limit
        b'{"v": NaN}', b'{"v": Infinity}', b'{"v": 1e999}',
        b'{"v": 1, "t": "evt"' + b"\xff\xfe" + b"}",
        b"{\"v\": \"\\ud800\"}",
        json.dumps({"v": 1, "t": "evt", "device": "shelf-1", "sig": "a" * 64, "kind": "placement",
                    "data": {"row": 10**30, "col": -1, "action": "put"}}).encode(),
        env.encode(env.sign({"v": 1, "t": "evt", "msg_id": "m", "device": "shelf-1", "boot_id": "b",
                             "evt_seq": 1, "ts": None, "uptime_s": 1.0, "kind": "placement",
                             "data": {"row": 99, "col": 99, "action": "put", "count": 1,
                                      "occupied": True}}, key)),  # signed, but no such slot
        env.encode(env.sign({"v": 1, "t": "state", "device": "shelf-1", "boot_id": "b", "ts": None,
                             "uptime_s": 1.0, "last_seq": 0, "time": {"trusted": True, "nonce": None},
                             "kind": "door", "locked": False, "open": True, "emergency": True,
                             "held_open_alarm": True, "relock_in_s": None}, key)),  # a shelf claiming to be a door
    ]
    pub = Publisher(ps.broker.port)
    for payload in hostile:
        for channel in ("ack", "evt", "state"):
            pub.publish(env.topic(sid, "shelf-1", channel), payload)
    # retained junk that will greet the station when it comes back
    pub.publish(env.topic(sid, "shelf-2", "state"), b"\xde\xad\xbe\xef" * 100, retain=True)
    pub.publish(env.topic(sid, "shelf-404", "state"), b"{}", retain=True)
    pub.publish(env.topic(sid, "door-exit", "avail"), b"maybe", retain=True)
    pub.close()
    assert ps.running and ps.http.get("/api/health").status_code == 200

    ps.kill()
    ps.start(wait_devices=False)  # shelf-2's retained state is junk until it publishes again
    assert ps.http.get("/api/health").status_code == 200
    _still_whole(ps, parcels, before)
    log = ps.log_tail(2_000_000)
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]


@pytest.mark.parametrize("name", ["Ack", "Event", "ShelfState", "DoorState"])
def test_every_message_the_contract_allows_the_station_accepts(name: str) -> None:
    """Generated from docs/asyncapi.yaml, checked valid by jsonschema, then parsed by the
    station's own models (station/devices/messages.py): the document never promises a
    message the station would refuse as malformed, and the generator above really produces
    contract-valid messages (else the fuzzing of signed messages would be shallow)."""
    from jsonschema import Draft202012Validator

    from station.devices.messages import AckMsg, parse_event, parse_state
    from tests.fuzz.schema_strategies import document

    parse = {"Ack": AckMsg.model_validate, "Event": parse_event}.get(name, parse_state)
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                      "components": document()["components"]})

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(from_schema(schema(name)))
    def check(obj: Any) -> None:
        obj = json.loads(json.dumps(obj))  # as it travels
        errors = [e.message for e in validator.iter_errors(obj)]
        assert not errors, f"the generator made an invalid {name}: {errors[:2]}"
        parse(obj)

    check()
