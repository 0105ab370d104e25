"""The link's inbound half without a broker: messages are fed to its paho callback and the
PUBACKs it sends are recorded, so each test can say exactly which packet id was acknowledged
and when (#22.4, docs/adr/0085)."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt

from station.config import Secrets, StationConfig
from station.devices import envelope as env
from station.devices.link import DeviceEvent, DeviceLink, Light


class FakeClient:
    """What the link calls on paho: publishes and PUBACKs are only recorded."""

    def __init__(self) -> None:
        self.acks: list[int] = []
        self.published: list[str] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append(topic)


def offline_link(config: StationConfig, secrets: Secrets, on_event: Any) -> tuple[DeviceLink, FakeClient]:
    link = DeviceLink(config, secrets, on_event)  # not started: no threads, no broker
    client = FakeClient()
    link._client = client  # type: ignore[assignment]
    link.connected.set()
    return link, client


def deliver(link: DeviceLink, mid: int, device: str, evt_seq: int, kind: str = "door.opened",
            boot_id: str = "1-abc") -> None:
    evt = env.build_event(key=link._keys[device], device=device, boot_id=boot_id, evt_seq=evt_seq,
                          kind=kind, data={}, ts=None, uptime_s=1.0)
    msg = mqtt.MQTTMessage(mid=mid, topic=env.topic(link.station_id, device, "evt").encode())
    msg.payload = env.encode(evt)
    msg.qos = 1
    link._on_message(link._client, None, msg)  # type: ignore[arg-type]


def test_on_event_calling_back_into_the_link_takes_each_event_once_in_order(config, secrets):
    """The module's promise: on_event may call back into the link. A lights command sent from
    inside on_event (its _flush runs re-entrantly) must not offer the event being taken a
    second time, nor pop the one behind it untaken."""
    taken: list[tuple[str, int]] = []
    link: DeviceLink

    def on_event(ev: DeviceEvent) -> None:
        taken.append((ev.kind, ev.data.get("evt_seq", 0)))
        if ev.kind == "door.opened":  # e.g. a flow lighting a slot on a door report
            link.set_lights("shelf-1", {(1, 1): Light(("#00FF00",))})

    link, client = offline_link(config, secrets, on_event)
    link._devices["door-entry"].boot_id = "1-abc"
    deliver(link, 7, "door-entry", 1)
    deliver(link, 8, "door-entry", 2, kind="door.closed")
    door = [t for t in taken if t[0].startswith("door.")]
    assert door == [("door.opened", 1), ("door.closed", 2)]
    assert client.acks == [7, 8]


def test_a_duplicate_on_the_same_connection_leaves_the_first_packet_acknowledged(config, secrets):
    """A device that reconnects sends its unacknowledged event again: the broker forwards a
    second copy, with a packet id of its own, on the station's same connection. While the
    first copy is held (the store refuses it), both packet ids must still be acknowledged in
    the end: a packet id never acknowledged holds one of the broker's in-flight slots for the
    station until the station reconnects, and enough of them stop every delivery to it."""
    refuse = [True]
    taken: list[int] = []

    def on_event(ev: DeviceEvent) -> None:
        if refuse[0]:
            raise OSError("disk full")
        taken.append(ev.data["evt_seq"])

    link, client = offline_link(config, secrets, on_event)
    deliver(link, 11, "door-entry", 1)
    assert link.held == 1 and client.acks == []
    deliver(link, 12, "door-entry", 1)  # the device's resend, same connection
    refuse[0] = False
    link._held_retry_at = 0.0
    link._flush()
    assert taken == [1]
    assert link.held == 0
    assert sorted(client.acks) == [11, 12]


def test_a_duplicate_on_a_new_connection_takes_over_the_held_first_copys_ack(config, secrets):
    """The first copy's packet id died with its connection: the PUBACK, once the event is
    taken, goes to the redelivered copy, once, and the first is never acknowledged."""
    refuse = [True]

    def on_event(ev: DeviceEvent) -> None:
        if refuse[0]:
            raise OSError("disk full")

    link, client = offline_link(config, secrets, on_event)
    deliver(link, 21, "door-entry", 1)
    link._on_disconnect(client, None, None, None, None)  # type: ignore[arg-type]
    deliver(link, 5, "door-entry", 1)  # the broker's redelivery on the new connection
    assert client.acks == []
    refuse[0] = False
    link._held_retry_at = 0.0
    link._flush()
    assert client.acks == [5]


def test_a_sequence_mark_that_cannot_be_saved_never_loses_a_command(config, secrets, tmp_path, monkeypatch):
    """The .devseq beside the database shares its disk: when that disk is full, saving the
    mark fails. Before, the OSError escaped the link after the command had left its queue:
    the caller got a traceback instead of an unlock, and a command popped by the timer (or
    the handles folded into it) never got an outcome. Now the command goes out; the mark is
    saved by the first number after the disk has room again."""
    link = DeviceLink(config, secrets, lambda ev: None, seq_path=tmp_path / "x.devseq")
    client = FakeClient()
    link._client = client  # type: ignore[assignment]
    link.connected.set()
    real = link._seq._persist

    def full(value: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(link._seq, "_persist", full)
    handle = link.unlock("door-entry")
    assert client.published == [env.topic(link.station_id, "door-entry", "cmd")]
    assert link._devices["door-entry"].inflight is not None
    assert not (tmp_path / "x.devseq").exists()
    first = link._devices["door-entry"].inflight.seq

    monkeypatch.setattr(link._seq, "_persist", real)
    link._devices["door-entry"].inflight = None  # as if acked
    link.lock("door-entry")
    assert link._devices["door-entry"].inflight.seq > first
    assert int((tmp_path / "x.devseq").read_text()) > link._devices["door-entry"].inflight.seq
    assert not handle.done()  # still waiting for its ack or expiry, like any command
