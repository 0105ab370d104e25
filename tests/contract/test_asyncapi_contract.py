"""Both ends against docs/asyncapi.yaml: examples, and every message seen on a live broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from station.devices import envelope as env
from station.devices import messages
from station.devices.link import Light
from tests.devices.conftest import Sniffer, mosquitto_pub, wait_until

DOC = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml").read_text())


def validator(name: str) -> Draft202012Validator:
    root = {"components": DOC["components"], "$ref": f"#/components/schemas/{name}"}
    return Draft202012Validator(root)


SCHEMAS = {name: validator(name) for name in ("Command", "Ack", "Event", "ShelfState", "DoorState", "Avail")}


def schema_for(channel: str, obj: object) -> str:
    if channel == "state":
        return "DoorState" if isinstance(obj, dict) and obj.get("kind") == "door" else "ShelfState"
    return {"cmd": "Command", "ack": "Ack", "evt": "Event", "avail": "Avail"}[channel]


def errors(name: str, obj: object) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in SCHEMAS[name].iter_errors(obj)]


def test_the_document_itself_is_sound():
    Draft202012Validator.check_schema({"components": DOC["components"]})
    for channel in DOC["channels"].values():
        assert channel["address"].startswith("ps/v1/{station}/{device}/")
    for name, message in DOC["components"]["messages"].items():
        assert message.get("examples"), f"{name} has no example"


@pytest.mark.parametrize("name", list(DOC["components"]["messages"]))
def test_every_example_matches_its_schema_and_the_station_models(name):
    message = DOC["components"]["messages"][name]
    schema = message["payload"]["$ref"].rsplit("/", 1)[1]
    for example in message["examples"]:
        assert errors(schema, example["payload"]) == [], example["name"]
        payload = example["payload"]
        if schema == "Ack":
            messages.AckMsg.model_validate(payload)
        elif schema == "Event":
            messages.parse_event(payload)
        elif schema in ("ShelfState", "DoorState"):
            messages.parse_state(payload)


def test_schemas_reject_what_the_firmware_refuses():
    cmd = env.build_command(key=b"k" * 32, device="shelf-1", seq=1, op="lights.set",
                            args={"slots": [{"row": 1, "col": 1, "colours": ["red"], "ttl_s": 5}]},
                            ttl_s=5)
    assert errors("Command", cmd)
    assert errors("Command", {k: v for k, v in cmd.items() if k != "sig"})
    assert errors("Avail", "maybe")


def test_firmware_key_derivation_matches_the_station(secrets):
    assert env.derive_device_key(secrets.device_master_key, "st-x", "door-exit") == \
        secrets.device_key("st-x", "door-exit")


def test_live_traffic_of_both_ends_matches_the_contract(cfg, secrets, broker, fleet, make_link, events):
    sniffer = Sniffer(broker, cfg.station.id)
    try:
        shelf = fleet.shelf("shelf-1")
        door = fleet.door("door-entry")
        link = make_link(cfg, secrets)
        assert link.wait_online(["shelf-1", "door-entry"], 5)
        red = Light(("#FF0000",), "blink", 30)
        assert link.set_lights("shelf-1", {(1, 1): red, (1, 2): Light(("#00FF00", "#0000FF"), "alternate", 30)}).wait(5).ok
        assert link.set_lights("shelf-1", {(1, 1): None, (1, 2): red}).wait(5).ok
        assert link.set_lights("shelf-1", {(1, 2): None}).wait(5).ok
        assert link.replace_lights("shelf-1", {(3, 3): red}).wait(5).ok
        shelf.hal.sensor(3, 3).put()
        events.wait("placement", "shelf-1")
        assert link.unlock("door-entry", pulse_s=0.1).wait(5).ok
        door.hal.open_contact()
        events.wait("door.opened", "door-entry")
        door.hal.close_contact()
        events.wait("door.closed", "door-entry")
        events.wait("door.locked", "door-entry")
        door.hal.open_contact()
        events.wait("door.forced_open", "door-entry")
        events.wait("door.held_open", "door-entry")
        door.hal.close_contact()
        door.hal.press_emergency()
        events.wait("door.emergency_release", "door-entry")
        door.hal.release_emergency()
        events.wait("door.emergency_reset", "door-entry")
        assert link.lock("door-entry").wait(5).ok
        injected = b"garbage"
        mosquitto_pub(broker, env.topic(cfg.station.id, "door-entry", "cmd"), injected)
        events.wait("device.command_refused", "door-entry")
        door.stop()  # orderly offline
        wait_until(lambda: any(p == b"offline" for t, p, _ in sniffer.messages), 5, "offline")
    finally:
        sniffer.close()

    seen: dict[str, set[str]] = {}
    for topic, payload, _ in sniffer.messages:
        parsed = env.parse_topic(topic)
        assert parsed is not None, topic
        _, _device, channel = parsed
        if channel == "cmd" and payload == injected:
            continue
        obj: object = payload.decode() if channel == "avail" else json.loads(payload)
        assert errors(schema_for(channel, obj), obj) == [], (topic, obj)
        label = obj if isinstance(obj, str) else obj.get("op") or obj.get("kind") or str(obj.get("ok"))
        seen.setdefault(channel, set()).add(label)
    assert {"lights.set", "lights.clear", "unlock", "lock", "time.sync"} <= seen["cmd"]
    assert {"placement", "door.unlocked", "door.locked", "door.opened", "door.closed",
            "door.forced_open", "door.held_open", "door.emergency_release",
            "door.emergency_reset", "command.refused"} <= seen["evt"]
    assert {"True", "False"} <= seen["ack"]
    assert {"shelf", "door"} <= seen["state"]
    assert {"online", "offline"} <= seen["avail"]
