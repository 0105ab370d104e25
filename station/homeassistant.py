"""Home Assistant MQTT discovery: the station appears on an operator's existing dashboard.

Read-only by construction. Every entity is a sensor, a binary sensor or an event entity: none
has a command topic, and the station subscribes to nothing of Home Assistant's but its birth
message. Even a command topic would open nothing: doors and lights obey only commands signed
with a device key, which Home Assistant never has (docs/threat-model.md).

Discovery documents are retained under `<prefix>/<component>/<node>/<object>/config` and sent
again when Home Assistant announces itself (`<prefix>/status` = `online`), since HA forgets
entities whose documents it has not seen after its restart when the broker lost them. An
entity this station announced before and no longer has (a shelf taken out of the config) is
removed by an empty retained document: the bridge subscribes to its own node's documents and
clears every one it does not announce now, so no list of past entities needs keeping.

The state is one retained JSON document the entities' templates read from; it is sent on
every commit (at most every `min_interval_s`) and every `refresh_s`. Events of a few types
go to an `event` entity with nothing personal in them: the type, the seq and the time, and
for an alarm its kind. The bridge has its own MQTT client id and user name: with
`use_username_as_clientid` a second connection under the station's user would take over the
station's own session."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from station.store.db import Store
from station.store.eventlog import EventRecord, iter_events
from station.upstream import set_nodelay

log = logging.getLogger("station.homeassistant")

# what an operator's automations may want to react to; nothing in them is personal
EVENT_TYPES = ("parcel.shelved", "parcel.picked_up", "pickup.opened", "exit.passed", "exit.refused",
               "alarm.raised", "alarm.acknowledged", "door.forced_open", "station.started")
AVAILABLE, NOT_AVAILABLE = "online", "offline"
BATCH = 1000


def _object_id(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text).lower()


class HomeAssistantBridge:
    def __init__(self, *, station_id: str, station_name: str, host: str, port: int, prefix: str,
                 store: Store, device_ids: Sequence[str], doors: Sequence[str], shelves: Sequence[str],
                 state: Callable[[], dict[str, Any]], username: str | None = None,
                 password: str | None = None, tls: bool = False, ca_file: str | None = None,
                 min_interval_s: float = 0.5, refresh_s: float = 30.0, version: str = "0.1.0") -> None:
        self.station_id = station_id
        self.station_name = station_name
        self.prefix = prefix.rstrip("/")
        self.node = _object_id(f"ps_{station_id}")
        self.base = f"ps/v1/{station_id}/ha"
        self.state_topic = f"{self.base}/state"
        self.event_topic = f"{self.base}/event"
        self.avail_topic = f"{self.base}/avail"
        self.store = store
        self.device_ids = list(device_ids)
        self.doors = list(doors)
        self.shelves = list(shelves)
        self.state = state
        self.min_interval_s = min_interval_s
        self.refresh_s = refresh_s
        self.version = version
        self._host, self._port = host, port
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_seq = store.last_seq
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ps-{station_id}-ha",
                                  clean_session=True)
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=ca_file)
        self.client.will_set(self.avail_topic, NOT_AVAILABLE, qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 30)

    # --- what is announced ------------------------------------------------------------------

    def _device(self) -> dict[str, Any]:
        return {"identifiers": [self.node], "name": self.station_name or self.station_id,
                "manufacturer": "parcel-station", "model": "edge controller", "sw_version": self.version}

    def _entity(self, component: str, object_id: str, name: str, **extra: Any) -> tuple[str, dict[str, Any]]:
        uid = f"{self.node}_{object_id}"
        doc = {"name": name, "unique_id": uid, "object_id": uid, "device": self._device(),
               "availability_topic": self.avail_topic, "payload_available": AVAILABLE,
               "payload_not_available": NOT_AVAILABLE, **extra}
        return f"{self.prefix}/{component}/{self.node}/{object_id}/config", doc

    def discovery(self) -> dict[str, dict[str, Any]]:
        """Topic -> discovery document for every entity the station has now."""
        st = self.state_topic
        docs = dict([
            self._entity("sensor", "parcels_waiting", "Parcels waiting", state_topic=st,
                         value_template="{{ value_json.parcels_waiting }}", state_class="measurement",
                         unit_of_measurement="parcels", icon="mdi:package-variant"),
            self._entity("sensor", "places_free", "Free shelf places", state_topic=st,
                         value_template="{{ value_json.places_free }}", state_class="measurement",
                         unit_of_measurement="places", icon="mdi:bookshelf"),
            self._entity("sensor", "customers_inside", "Customers in the room", state_topic=st,
                         value_template="{{ value_json.customers_inside }}", state_class="measurement",
                         unit_of_measurement="people", icon="mdi:account-group"),
            self._entity("sensor", "alarms_open", "Open alarms", state_topic=st,
                         value_template="{{ value_json.alarms_open }}", state_class="measurement",
                         icon="mdi:alarm-light"),
            self._entity("event", "events", "Station events", state_topic=self.event_topic,
                         event_types=list(EVENT_TYPES), icon="mdi:timeline-text"),
        ])
        for door in self.doors:
            oid = _object_id(door)
            docs.update([
                # device_class lock: ON means unlocked (HA's convention)
                self._entity("binary_sensor", f"{oid}_lock", f"{door} lock", state_topic=st,
                             device_class="lock", payload_on="ON", payload_off="OFF",
                             value_template=(f"{{{{ 'OFF' if value_json.doors['{door}'].locked "
                                             "else 'ON' }}"),
                             ),
                self._entity("binary_sensor", f"{oid}_contact", f"{door} contact", state_topic=st,
                             device_class="door", payload_on="ON", payload_off="OFF",
                             value_template=(f"{{{{ 'ON' if value_json.doors['{door}'].open "
                                             "else 'OFF' }}")),
            ])
        for device in self.device_ids:
            oid = _object_id(device)
            docs.update([self._entity(
                "binary_sensor", f"{oid}_online", f"{device} online", state_topic=st,
                device_class="connectivity", payload_on="ON", payload_off="OFF",
                value_template=f"{{{{ 'ON' if value_json.devices['{device}'] else 'OFF' }}}}")])
        return docs

    # --- MQTT -------------------------------------------------------------------------------

    def start(self) -> HomeAssistantBridge:
        self.client.connect_async(self._host, self._port, keepalive=30)
        self.client.loop_start()
        self.store.subscribe(self._on_commit)
        self._thread = threading.Thread(target=self._run, name="homeassistant", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.store.unsubscribe(self._on_commit)
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.client.publish(self.avail_topic, NOT_AVAILABLE, qos=1, retain=True).wait_for_publish(2)
        except (RuntimeError, ValueError):
            pass
        self.client.disconnect()
        self.client.loop_stop()

    def announce(self) -> None:
        for topic, doc in self.discovery().items():
            self.client.publish(topic, json.dumps(doc, sort_keys=True), qos=1, retain=True)
        self.client.publish(self.avail_topic, AVAILABLE, qos=1, retain=True)
        self._wake.set()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("home assistant bridge: broker refused the connection: %s", reason)
            return
        set_nodelay(client.socket())
        client.subscribe([(f"{self.prefix}/status", 1), (f"{self.prefix}/+/{self.node}/+/config", 1)])
        self.announce()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == f"{self.prefix}/status":
            if msg.payload == b"online":
                self.announce()
            return
        if msg.payload and msg.topic not in self.discovery():
            # an entity announced before that this station no longer has
            client.publish(msg.topic, b"", qos=1, retain=True)

    # --- state and events -------------------------------------------------------------------

    def _on_commit(self, events: Sequence[EventRecord]) -> None:
        self._wake.set()

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self._wake.wait(self.refresh_s)
            if self._stop.is_set():
                return
            wait = self.min_interval_s - (time.monotonic() - last)
            if wait > 0 and self._stop.wait(wait):
                return
            self._wake.clear()
            last = time.monotonic()
            if not self.client.is_connected():
                continue
            try:
                self.client.publish(self.state_topic, json.dumps(self.state(), sort_keys=True), qos=1,
                                    retain=True)
                self._publish_events()
            except Exception:  # noqa: BLE001 - the bridge is a view: it never stops the station
                log.exception("home assistant bridge: publishing the state failed")

    def _publish_events(self) -> None:
        """The events of EVENT_TYPES since the last call, up to a head read first (so none
        committed meanwhile is stepped over)."""
        with self.store.reading() as conn:
            head = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
            rows = list(iter_events(conn, after_seq=self._last_seq, until_seq=head, limit=BATCH,
                                    types=list(EVENT_TYPES)))
        for e in rows:
            data: dict[str, Any] = {"event_type": e.type, "seq": e.seq, "ts": e.ts}
            if e.type == "alarm.raised":
                data["kind"] = e.data.get("kind")
            self.client.publish(self.event_topic, json.dumps(data), qos=1, retain=False)
        self._last_seq = rows[-1].seq if len(rows) == BATCH else max(head, self._last_seq)
        if len(rows) == BATCH:
            self._wake.set()
