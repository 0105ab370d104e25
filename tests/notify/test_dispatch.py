"""The dispatcher against real ways out: a local HTTP gateway and a real Mosquitto."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from station.mosquitto import MosquittoProcess
from station.notify import Dispatcher, MqttSender, Notification, Outbox, StationInfo, WebhookSender
from station.store.db import Store
from station.store.eventlog import Event, verify_chain

from .conftest import FakeClock
from .helpers import PHONE, pickup
from .receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
STATION = StationInfo("Riverside Parcel Room", "12 Riverside Road", "Asia/Shanghai")


def _webhook(receiver: WebhookReceiver) -> WebhookSender:
    return WebhookSender(receiver.url, STATION, timeout_s=5)


def _shelve(store: Store, outbox: Outbox, n: int, subject: str | None = None) -> str:
    with store.transaction() as tx:
        tx.emit(Event("test.parcel.shelved", subject=subject or f"p{n}"))
        return outbox.enqueue(tx, "webhook", subject or f"p{n}", pickup(n))


def _sent_events(store: Store) -> list[str]:
    rows = store.query("SELECT data FROM events WHERE type = 'notify.sent' ORDER BY seq")
    return [json.loads(r["data"])["outbox_id"] for r in rows]


def test_notification_is_delivered_to_the_webhook(
    store: Store, outbox: Outbox, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    row_id = _shelve(store, outbox, 1)
    report = Dispatcher(outbox, [_webhook(receiver)]).run_once(clock())
    assert report.sent == 1
    (body,) = receiver.bodies
    assert body["to"] == PHONE and body["code"] == "1-2-03-48210001"
    assert body["qr"] == "PS1:st-test:1020348210001" and body["deadline"] == "2026-12-01T10:00:00Z"
    assert body["station"] == "Riverside Parcel Room" and "取件码" in body["text"]
    assert receiver.headers[0]["Idempotency-Key"] == row_id
    row = outbox.get(row_id)
    assert row is not None and row.state == "delivered" and row.payload == b""
    assert _sent_events(store) == [row_id]


def test_non_2xx_answer_is_a_failure_and_the_row_stays(
    store: Store, outbox: Outbox, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    row_id = _shelve(store, outbox, 1)
    receiver.status = 503
    report = Dispatcher(outbox, [_webhook(receiver)], rng=random.Random(0)).run_once(clock())
    assert report.failed == 1 and report.sent == 0
    row = outbox.get(row_id)
    assert row is not None and row.state == "pending" and row.attempts == 1
    assert row.last_error == "webhook: HTTP 503" and row.next_at > clock()
    assert _sent_events(store) == []


def test_gateway_down_for_a_while_then_up_loses_nothing(
    store: Store, outbox: Outbox, receiver: WebhookReceiver, clock: FakeClock
) -> None:
    receiver.stop()  # connection refused: the gateway is down
    ids = [_shelve(store, outbox, n) for n in range(20)]
    later = _shelve(store, outbox, 99, subject="p3")  # a second message about p3
    dispatcher = Dispatcher(outbox, [_webhook(receiver)], retry_initial_s=1, retry_max_s=30,
                            rng=random.Random(1))
    for _ in range(6):  # a few minutes of outage
        dispatcher.run_once(clock.advance(31))
    assert receiver.bodies == [] and outbox.pending_count() == 21
    receiver.start()
    for _ in range(20):
        dispatcher.run_once(clock.advance(31))
        if outbox.pending_count() == 0:
            break
    assert outbox.pending_count() == 0
    got = receiver.ids()
    assert set(got) == set(ids) | {later}  # every one at least once
    assert got.index(ids[3]) < got.index(later)  # p3's messages in order
    assert sorted(_sent_events(store)) == sorted(ids + [later])  # one delivery fact each
    assert verify_chain(store.conn).ok


def test_running_dispatcher_catches_up_after_gateway_outage(
    tmp_path: Path, key: bytes
) -> None:
    receiver = WebhookReceiver().start()
    store = Store(tmp_path / "live.db").open()
    outbox = Outbox(store, key)
    dispatcher = Dispatcher(outbox, [_webhook(receiver)], retry_initial_s=0.02,
                            retry_max_s=0.1, idle_poll_s=0.5)
    dispatcher.start()
    try:
        first = {_shelve(store, outbox, n) for n in range(10)}
        assert receiver.wait_for_ids(first)
        receiver.stop()
        second = {_shelve(store, outbox, n) for n in range(10, 30)}
        # the dispatcher has met the outage before the gateway returns
        deadline = time.monotonic() + 10
        while not store.query("SELECT 1 FROM events WHERE type = 'notify.failed'"):
            assert time.monotonic() < deadline, "no failed attempt seen"
            time.sleep(0.01)
        receiver.start()
        assert receiver.wait_for_ids(first | second)
    finally:
        dispatcher.stop()
        receiver.stop()
    assert outbox.pending_count() == 0
    store.close()


def test_crash_mid_send_is_delivered_by_the_next_dispatcher(
    db_path: Path, key: bytes, receiver: WebhookReceiver
) -> None:
    store = Store(db_path).open()
    outbox = Outbox(store, key)
    row_id = _shelve(store, outbox, 5)
    store.close()
    receiver.hold.set()  # take the request, never answer: the sender is mid-flight
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.notify.crash_child", str(db_path), key.hex(), receiver.url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert receiver.wait_for(1, timeout=20), child.stderr.read() if child.poll() else ""
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    receiver.hold.clear()
    receiver.release.set()

    store = Store(db_path).open()  # the station comes back
    outbox = Outbox(store, key)
    row = outbox.get(row_id)
    assert row is not None and row.state == "pending"
    Dispatcher(outbox, [_webhook(receiver)]).run_once()
    assert receiver.ids() == [row_id, row_id]  # at least once: the gateway de-duplicates by id
    assert _sent_events(store) == [row_id]
    assert verify_chain(store.conn).ok
    store.close()


def test_mqtt_sender_publishes_qos1_on_the_station_broker(
    broker: MosquittoProcess, store: Store, outbox: Outbox, clock: FakeClock
) -> None:
    topic = "ps/v1/st-test/station/notify"
    received: list[dict[str, object]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-notify-sub")
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda c, u, m: received.append(json.loads(m.payload))
    sub.connect(broker.host, broker.port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ps-st-test-notify")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        assert subscribed.wait(10)
        deadline = time.monotonic() + 10
        while not pub.is_connected():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with store.transaction() as tx:
            row_id = outbox.enqueue(tx, "mqtt", "p1", Notification.one_time_code(
                phone=PHONE, otp="123456", ttl_s=300))
        assert Dispatcher(outbox, [MqttSender(pub, topic, STATION)]).run_once(clock()).sent == 1
        deadline = time.monotonic() + 10
        while not received:
            assert time.monotonic() < deadline, "nothing arrived on the broker"
            time.sleep(0.01)
        assert received[0]["id"] == row_id and received[0]["code"] == "123456"
        assert received[0]["kind"] == "otp" and received[0]["to"] == PHONE
    finally:
        for client in (sub, pub):
            client.disconnect()
            client.loop_stop()


def test_mqtt_sender_offline_keeps_the_row(
    store: Store, outbox: Outbox, clock: FakeClock
) -> None:
    offline = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="never-connected")
    row_id = _shelve(store, outbox, 1)
    sender = MqttSender(offline, "t", STATION)
    report = Dispatcher(outbox, [sender], rng=random.Random(0)).run_once(clock())
    assert report.failed == 1
    row = outbox.get(row_id)
    assert row is not None and row.state == "pending" and row.last_error == "mqtt: not connected"
