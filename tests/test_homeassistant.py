"""Home Assistant MQTT discovery over a real Mosquitto (issue 17): a client subscribes as
Home Assistant does, every discovery document has the keys HA's documentation requires for
its component, the templates (rendered with Jinja2, as HA renders them) find what they read
in the state topic, HA's birth message brings the documents back, an entity the station no
longer has is removed, and nothing announced can command anything."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.stack import LiveStation, wait_until

PHONE = "13800001111"
PREFIX = "homeassistant"
# https://www.home-assistant.io/integrations/{sensor,binary_sensor,event}.mqtt/: required keys
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"},
            "event": {"state_topic", "event_types"}}
# keys that would let Home Assistant send something back
COMMANDS = {"command_topic", "command_template", "json_attributes_topic_command"}


class FakeHomeAssistant:
    """Subscribes like HA's MQTT integration: discovery under the prefix, and the topics the
    documents name. Keeps the last payload per topic and every event message."""

    def __init__(self, port: int) -> None:
        self.last: dict[str, bytes] = {}
        self.events: list[dict[str, Any]] = []
        self.cleared: set[str] = set()
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fake-ha")
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(f"{PREFIX}/#", 1), ("ps/v1/+/ha/#", 1)])
        self.client.loop_start()

    def _message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.last[msg.topic] = msg.payload
            if not msg.payload:
                self.cleared.add(msg.topic)
            if msg.topic.endswith("/ha/event"):
                self.events.append(json.loads(msg.payload))

    def configs(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {t: json.loads(p) for t, p in self.last.items() if t.endswith("/config") and p}

    def state(self, topic: str) -> dict[str, Any] | None:
        with self._lock:
            raw = self.last.get(topic)
        return json.loads(raw) if raw else None

    def forget(self) -> None:
        with self._lock:
            self.last.clear()

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _render(template: str, payload: dict[str, Any]) -> str:
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(
        value_json=payload).strip()


def test_the_station_appears_in_home_assistant_read_only(tmp_path: Path) -> None:
    with LiveStation(tmp_path, sections={"home_assistant": {"enabled": True, "refresh_s": 1.0}}) as ls:
        ha = FakeHomeAssistant(ls.broker.port)
        try:
            cfg = ls.config
            expected = 5 + 2 * 2 + len(cfg.device_ids)   # 4 sensors + events, 2 per door, 1 per device
            docs = wait_until(lambda: (d := ha.configs()) and len(d) >= expected and d, 15)
            assert len(docs) == expected, sorted(docs)
            node = f"ps_{cfg.station.id}".replace("-", "_")
            for topic, doc in docs.items():
                prefix, component, doc_node, object_id, last = topic.split("/")
                assert (prefix, doc_node, last) == (PREFIX, node, "config"), topic
                assert REQUIRED[component] <= set(doc), (topic, REQUIRED[component] - set(doc))
                assert not COMMANDS & set(doc), f"{topic} could command something"
                assert doc["unique_id"].startswith(node) and doc["device"]["identifiers"] == [node]
            avail = next(iter(docs.values()))["availability_topic"]
            assert wait_until(lambda: ha.last.get(avail) == b"online", 10)

            # every template finds what it reads in the state document
            state_topic = f"ps/v1/{cfg.station.id}/ha/state"
            # (the first state may predate the devices' own "online")
            state = wait_until(lambda: (st := ha.state(state_topic)) and all(st["devices"].values()) and st, 10)
            rendered = {doc["unique_id"]: _render(doc["value_template"], state)
                        for doc in docs.values() if "value_template" in doc}
            entry = cfg.doors.entry.replace("-", "_")
            assert rendered[f"{node}_{entry}_lock"] == "OFF"        # locked: HA's lock class is ON when open
            assert rendered[f"{node}_{entry}_contact"] == "OFF"
            for device in cfg.device_ids:
                assert rendered[f"{node}_{device.replace('-', '_')}_online"] == "ON"
            assert rendered[f"{node}_parcels_waiting"] == "0"
            event_doc = next(d for d in docs.values() if "event_types" in d)

            # a shelved parcel shows in the state and as an event entity's event
            core = ls.core
            core.couriers.add("c1", "SF", "Li", "1234")
            s = core.shelving.open_session("c1")
            r = core.shelving.scan(s["session_id"], "SF1234567890123", PHONE, "S")
            ls.put(r.slot)
            ls.wait_code_for(PHONE)
            wait_until(lambda: (st := ha.state(state_topic)) and st["parcels_waiting"] == 1, 10)
            shelved = wait_until(lambda: [e for e in ha.events if e["event_type"] == "parcel.shelved"], 10)
            assert set(shelved[0]) == {"event_type", "seq", "ts"}  # nothing personal
            assert all(e["event_type"] in event_doc["event_types"] for e in ha.events)

            # Home Assistant restarts: its birth message brings every document back
            ha.forget()
            ha.client.publish(f"{PREFIX}/status", b"online", qos=1)
            again = wait_until(lambda: (d := ha.configs()) and len(d) >= expected and d, 10)
            assert again == docs

            # an entity this station announced once and no longer has is removed
            stale = f"{PREFIX}/binary_sensor/{node}/shelf_9_online/config"
            ha.client.publish(stale, json.dumps({"state_topic": state_topic}), qos=1, retain=True)
            wait_until(lambda: stale in ha.cleared, 10)
            assert stale not in ha.configs()
        finally:
            ha.stop()
