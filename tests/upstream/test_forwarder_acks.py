"""The forwarder's ack bookkeeping without a broker: a fake paho client hands out packet ids
and the test decides when each PUBACK arrives."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from station.store.db import Store
from station.store.eventlog import Event
from station.upstream import UpstreamForwarder, _Link


class FakeClient:
    def __init__(self) -> None:
        self.published: list[tuple[int, str]] = []  # (mid, topic)
        self._lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> Any:
        with self._lock:
            mid = len(self.published) + 1
            self.published.append((mid, topic))
        info = mqtt.MQTTMessageInfo(mid)
        info.rc = mqtt.MQTT_ERR_SUCCESS
        return info

    def events(self, topic: str) -> list[int]:
        with self._lock:
            return [mid for mid, t in self.published if t == topic]


class AckBox:
    """`link.acks` whose PUBACKs arrive together: the loop drains all of them or none."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mids: list[int] = []

    def put_all(self, mids: list[int]) -> None:
        with self._lock:
            self._mids.extend(mids)

    def get_nowait(self) -> int:
        import queue

        with self._lock:
            if not self._mids:
                raise queue.Empty
            return self._mids.pop(0)


def wait_until(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_two_acks_of_one_resent_seq_arriving_together_still_move_the_cursor_on(tmp_path: Path) -> None:
    """A resend request (ADR 0113) for seqs still in flight publishes them a second time, so
    each is in the publish order twice and gets two PUBACKs. When both PUBACKs of a seq came
    in one drain, a set counted them once: the second copy waited at the head for an ack that
    had come already, and the cursor stood still for the rest of the connection (and the
    publish order grew without end)."""
    store = Store(tmp_path / "station.db").open()
    for n in range(3):
        store.append(Event("test.event", "s", "test", {"n": n}))
    forwarder = UpstreamForwarder(store, "st-acks", "127.0.0.1", 1, poll_s=30.0,
                                  head_every_s=3600.0, resend_min_interval_s=0.0)
    client, acks = FakeClient(), AckBox()
    link = _Link(client)  # type: ignore[arg-type]
    link.acks = acks  # type: ignore[assignment]
    pump = threading.Thread(target=forwarder._pump, args=(link,), daemon=True)
    pump.start()
    try:
        first = store.last_seq
        assert wait_until(lambda: len(client.events(forwarder.topic)) == 3)
        link.resend_from = 1  # the fleet asks again while all three are in flight
        forwarder._wake.set()
        assert wait_until(lambda: len(client.events(forwarder.topic)) == 6)
        acks.put_all(client.events(forwarder.topic))  # all six PUBACKs at once
        forwarder._wake.set()
        assert wait_until(lambda: forwarder.cursor == first)

        store.append(Event("test.event", "s", "test", {"n": 3}))
        forwarder._wake.set()
        assert wait_until(lambda: len(client.events(forwarder.topic)) == 7)
        acks.put_all(client.events(forwarder.topic)[6:])
        forwarder._wake.set()
        assert wait_until(lambda: forwarder.cursor == first + 1)
    finally:
        forwarder._stopping.set()
        forwarder._wake.set()
        pump.join(5)
        store.close()
