"""The MQTT side of the ingest: a shared subscription in, batches to PostgreSQL, a PUBACK for
each message only after the transaction that holds it has committed (ADR 0111).

paho's network thread only queues what arrives. One worker thread takes a batch (up to
`batch_max` messages, waiting at most `batch_wait_s` for more), writes it in one
transaction (fleet.store.ingest_batch) and then acknowledges every message of it. If the
database is down the batch is kept and retried, nothing is acknowledged, and the broker
stops sending once `receive_maximum` messages are unacknowledged; if this process dies, the
broker sends everything unacknowledged again to the same client id (a persistent MQTT 5
session) or to another member of the share group. Repeats are dropped by (station, seq).
"""

from __future__ import annotations

import json
import logging
import queue
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet.core import BadMessage, Head, Incoming, parse_head, parse_message, station_of_topic
from fleet.schema import create_schema
from fleet.store import BatchResult, connect, ingest_batch
from station.upstream import resend_topic, set_nodelay

log = logging.getLogger("fleet.ingest")


@dataclass
class IngestStats:
    messages: int = 0
    batches: int = 0
    inserted: int = 0
    duplicates: int = 0
    forks: int = 0
    rejected: int = 0
    restores: int = 0
    db_errors: int = 0
    acked: int = 0
    resend_requests: int = 0
    last_error: str = ""
    alarms: list[str] = field(default_factory=list)

    def add(self, r: BatchResult) -> None:
        self.batches += 1
        self.inserted += r.inserted
        self.duplicates += r.duplicates
        self.forks += r.forks
        self.rejected += r.rejected
        self.restores += r.restores
        self.alarms.extend(r.alarms)


@dataclass(frozen=True)
class _Msg:
    mid: int
    topic: str
    payload: bytes
    received: float


class Ingest:
    def __init__(
        self,
        dsn: str,
        host: str,
        port: int,
        *,
        client_id: str = "fleet-ingest-1",
        group: str = "fleet",
        topic: str = "ps/v1/+/station/events",
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        batch_max: int = 500,
        batch_wait_s: float = 0.02,
        receive_maximum: int = 1000,
        session_expiry_s: int = 7 * 86400,
        keepalive_s: int = 30,
        retry_min_s: float = 0.2,
        retry_max_s: float = 10.0,
        resend_grace_s: float = 5.0,
        resend_every_s: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._host, self._port = host, port
        self.client_id = client_id
        self.subscription = f"$share/{group}/{topic}"
        self.head_subscription = f"$share/{group}/ps/v1/+/station/head"
        self._resend_grace_s, self._resend_every_s = resend_grace_s, resend_every_s
        self._behind_since: dict[str, float] = {}
        self._asked_at: dict[str, float] = {}
        self._batch_max = batch_max
        self._batch_wait_s = batch_wait_s
        self._retry_min_s, self._retry_max_s = retry_min_s, retry_max_s
        self._inbox: queue.SimpleQueue[_Msg] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self.stats = IngestStats()
        self.subscribed = threading.Event()
        self._idle = threading.Condition()
        self._rng = random.Random()

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        client.manual_ack_set(True)
        client.reconnect_delay_set(1, 5)
        if username:
            client.username_pw_set(username, password)
        if tls_context is not None:
            client.tls_set_context(tls_context)
        self._props = Properties(PacketTypes.CONNECT)
        self._props.SessionExpiryInterval = session_expiry_s
        self._props.ReceiveMaximum = receive_maximum
        self._keepalive_s = keepalive_s
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: self.subscribed.set()
        self.client = client

    @classmethod
    def from_config(cls, config: Any, secrets: Any) -> Ingest:
        from fleet.config import dsn_with_password, tls_context

        b, i = config.broker, config.ingest
        ctx = tls_context(b.ca_file, b.cert_file, b.key_file) if b.tls else None
        return cls(dsn_with_password(config.database.dsn, secrets.db_password), b.host, b.port,
                   client_id=b.client_id, group=b.group, topic=b.topic, username=b.username,
                   password=secrets.broker_password, tls_context=ctx, batch_max=i.batch_max,
                   batch_wait_s=i.batch_wait_s, receive_maximum=i.receive_maximum,
                   session_expiry_s=b.session_expiry_s, keepalive_s=b.keepalive_s,
                   resend_grace_s=i.resend_grace_s, resend_every_s=i.resend_every_s)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Ingest:
        conn = self._connect_db(wait=True)
        assert conn is not None  # wait=True raises instead
        create_schema(conn)
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="fleet-ingest", daemon=True)
        self._thread.start()
        self.client.connect_async(self._host, self._port, keepalive=self._keepalive_s,
                                  clean_start=False, properties=self._props)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(15)
        self.client.disconnect()
        self.client.loop_stop()
        if self._conn is not None:
            self._conn.close()

    def wait_idle(self, timeout: float) -> bool:
        """Nothing queued and nothing in hand (tests)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while not (self._inbox.empty() and not self._busy):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    _busy = False

    # --- paho's thread: queue only -------------------------------------------------------------

    def _on_connect(self, c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.stats.last_error = f"broker refused: {reason}"
            log.error("fleet broker refused the ingest: %s", reason)
            return
        set_nodelay(c.socket())
        c.subscribe([(self.subscription, 1), (self.head_subscription, 1)])

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put(_Msg(msg.mid, msg.topic, bytes(msg.payload), time.monotonic()))

    # --- worker --------------------------------------------------------------------------------

    def _take_batch(self) -> list[_Msg]:
        try:
            first = self._inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._batch_wait_s
        while len(batch) < self._batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self._inbox.get_nowait() if left <= 0 else self._inbox.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._idle:
                self._busy = False
                self._idle.notify_all()
            batch = self._take_batch()
            if not batch:
                continue
            self._busy = True
            events, rejects, heads = _parse(batch)
            result = self._commit(events, rejects, heads)
            if result is None:
                return  # not committed: nothing acknowledged, the broker sends it again
            for m in batch:
                if m.mid:
                    self.client.ack(m.mid, 1)
            self.stats.acked += len(batch)
            self.stats.messages += len(batch)
            self._ask_resends(result.behind)

    def _ask_resends(self, behind: dict[str, int | None]) -> None:
        """A station the fleet has been missing events of for a while (a gap that does not
        fill, or a head beyond the chain: a broker that lost what it had acknowledged) is
        asked to send again from the fleet's verified head (ADR 0113)."""
        now = time.monotonic()
        for sid, seq in behind.items():
            if seq is None:
                self._behind_since.pop(sid, None)
                continue
            since = self._behind_since.setdefault(sid, now)
            if now - since < self._resend_grace_s or now - self._asked_at.get(sid, -1e9) < self._resend_every_s:
                continue
            self._asked_at[sid] = now
            self.stats.resend_requests += 1
            log.info("fleet misses %s from seq %d: asking for a resend", sid, seq)
            self.client.publish(resend_topic(sid), json.dumps({"from_seq": seq}), qos=1)

    def _commit(self, events: list[Incoming], rejects: list[tuple[str, str, str]],
                heads: list[Head]) -> BatchResult | None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect_db(wait=False)
                    if self._conn is None:
                        raise psycopg.OperationalError("database unreachable")
                result = ingest_batch(self._conn, events, rejects, heads)
                self.stats.add(result)
                return result
            except psycopg.OperationalError as exc:
                failures += 1
                self.stats.db_errors += 1
                self.stats.last_error = f"database: {type(exc).__name__}"
                log.warning("fleet database unavailable (%s); batch of %d kept, retrying",
                            type(exc).__name__, len(events))
                if self._conn is not None:
                    try:
                        self._conn.close()
                    except psycopg.Error:
                        pass
                    self._conn = None
                delay = min(self._retry_max_s, self._retry_min_s * 2 ** min(failures, 10))
                self._stopping.wait(delay * (0.5 + 0.5 * self._rng.random()))
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
                continue
        return None

    def _connect_db(self, wait: bool) -> psycopg.Connection | None:
        deadline = time.monotonic() + (60 if wait else 0)
        while True:
            try:
                return connect(self._dsn)
            except psycopg.OperationalError:
                if time.monotonic() >= deadline or self._stopping.is_set():
                    if wait:
                        raise
                    return None
                time.sleep(0.5)


def _parse(batch: list[_Msg]) -> tuple[list[Incoming], list[tuple[str, str, str]], list[Head]]:
    events: list[Incoming] = []
    rejects: list[tuple[str, str, str]] = []
    heads: list[Head] = []
    for m in batch:
        station = station_of_topic(m.topic)
        head_of = station_of_topic(m.topic, "head") if station is None else None
        if station is None and head_of is None:
            rejects.append(("?", "unexpected topic", m.topic[:200]))
            continue
        try:
            if head_of is not None:
                heads.append(parse_head(m.payload, head_of))
            else:
                events.append(parse_message(m.payload, station))
        except BadMessage as exc:
            rejects.append(_reject(m, station or head_of, str(exc)))
        except Exception as exc:  # a payload the parser did not foresee: counted, never a dead worker
            log.warning("fleet ingest: unreadable message on %s", m.topic[:200], exc_info=True)
            rejects.append(_reject(m, station or head_of, f"unreadable ({type(exc).__name__})"))
    return events, rejects, heads


def _reject(m: _Msg, station: str | None, reason: str) -> tuple[str, str, str]:
    """(station, reason, sample) for the `rejected` table; PostgreSQL's text holds no NUL."""
    sample = m.payload[:300].decode("utf-8", "replace").replace("\x00", "\ufffd")
    return (station or "?")[:64], reason, sample
