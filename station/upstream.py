"""Forward the station's event log to the fleet's MQTT broker (issue 8, ADR 0031).

The event log itself is the outbox: every event already has a durable, gap-free sequence
number, so the forwarder keeps only a cursor (`upstream_cursor`), the highest seq below
which the upstream broker has acknowledged everything. It publishes in seq order, QoS 1,
and moves the cursor only on PUBACK. After an outage of any length, or a crash, it starts
again from the cursor: delivery is at least once and the receiver drops repeats by `seq`
(the payload also carries `hash` and `prev_hash`, so the fleet can verify the chain).

One worker thread owns the whole exchange; paho's network thread only queues PUBACK mids
and sets an event. Each connection gets a fresh paho client, so a message id from a dead
connection can never be mistaken for an acknowledgement on the next one.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import socket
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from station.store.db import Store
from station.store.eventlog import Event, EventRecord, canonical_json, iter_events

if TYPE_CHECKING:
    from station.config import Secrets, StationConfig

log = logging.getLogger("station.upstream")


def default_topic(station_id: str) -> str:
    return f"ps/v1/{station_id}/station/events"


def head_topic(station_id: str) -> str:
    """Where the station says how far its log goes (ADR 0113), so the fleet sees a lost tail."""
    return f"ps/v1/{station_id}/station/head"


def resend_topic(station_id: str) -> str:
    """Where the fleet asks the station to send again from a seq (ADR 0113)."""
    return f"ps/v1/{station_id}/station/resend"


def event_payload(station_id: str, event: EventRecord, epoch: tuple[int, int] = (0, 1)) -> bytes:
    """The upstream message: the log row as stored (seq, hash and all) plus the station and
    the incarnation it was written in (`epoch`, and `epoch_seq`, the epoch's first seq)."""
    body: dict[str, Any] = event.as_dict()
    body["station"] = station_id
    body["epoch"], body["epoch_seq"] = epoch
    return canonical_json(body).encode()


# --- incarnations (#22.6, ADR 0112) ------------------------------------------------------------
#
# A restored backup goes back to an older seq and then writes new, different events under
# seqs the fleet already holds. So that the fleet can tell that declared restore from a
# silent rewrite, every event is forwarded with the epoch it was written in; a restore starts
# a new epoch at the next seq. The list lives in `meta` (key `upstream_epochs`, JSON
# [[epoch, first_seq], ...], first_seq increasing), so it travels inside every backup.

EPOCHS_KEY = "upstream_epochs"


def log_epochs(conn: Any) -> list[tuple[int, int]]:
    """[(epoch, first_seq), ...] of this database; [(0, 1)] before any restore."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (EPOCHS_KEY,)).fetchone()
    if row is None:
        return [(0, 1)]
    try:
        pairs = [(int(e), int(s)) for e, s in json.loads(row[0])]
    except (ValueError, TypeError):
        return [(0, 1)]
    return pairs or [(0, 1)]


def epoch_of(epochs: Sequence[tuple[int, int]], seq: int) -> tuple[int, int]:
    """The incarnation a seq was written in: the last epoch starting at or before it."""
    found = (0, 1)
    for epoch, first in epochs:
        if first <= seq:
            found = (epoch, first)
    return found


def current_epoch(conn: Any) -> int:
    return max(e for e, _ in log_epochs(conn))


def declare_restore(store: Store, *, source: str = "", previous_epoch: int = 0,
                    clock: Callable[[], float] = time.time) -> int:
    """Call right after a backup has been restored into `store` (before the station runs):
    starts a new epoch at the next seq and logs `station.restored` as its first event, in
    one transaction. `previous_epoch`: the replaced database's `current_epoch`, when it
    could still be read. The new epoch is above every one known and at least the wall
    clock's seconds, so two restores of the same backup never reuse an epoch."""
    with store.transaction() as tx:
        epochs = log_epochs(tx.conn)
        first_seq = store.last_seq + 1
        kept = [(e, s) for e, s in epochs if s < first_seq]
        known = max([e for e, _ in epochs] + [previous_epoch])
        epoch = max(known + 1, int(clock()))
        kept.append((epoch, first_seq))
        tx.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                   (EPOCHS_KEY, json.dumps(kept)))
        tx.emit(Event("station.restored", "station", "operator",
                      {"epoch": epoch, "first_seq": first_seq,
                       "restored_last_seq": first_seq - 1, "source": source[:200]}))
    return epoch


def set_nodelay(sock: Any) -> None:
    """DESIGN §7: without TCP_NODELAY every QoS 1 exchange waits for a delayed ACK."""
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


@dataclass
class _Link:
    """One connection's private state; discarded with it."""

    client: mqtt.Client
    acks: queue.SimpleQueue[int] = field(default_factory=queue.SimpleQueue)
    connected: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    refused: str = ""
    resend_from: int | None = None  # the fleet asked for events from this seq on again


def fleet_password(config: StationConfig, secrets: Secrets) -> str | None:
    """The fleet broker's password for `[upstream] username` (None without a username)."""
    if not config.upstream.username:
        return None
    if not secrets.upstream_password:
        from station.config import ConfigError

        raise ConfigError("upstream.username is set but the secrets have no upstream_password")
    return secrets.upstream_password


def fleet_tls_context(config: StationConfig) -> ssl.SSLContext | None:
    """The TLS of every connection to the fleet broker (the forwarder's and the bundle
    listener's): the server verified against `ca_file` (or the system's store), TLS 1.2 at
    least, the client certificate when configured. A file that cannot be read is said here,
    before any thread starts, not by a traceback from the first connect."""
    up = config.upstream
    if not up.tls:
        return None
    try:
        ctx = ssl.create_default_context(cafile=up.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if up.cert_file:
            ctx.load_cert_chain(up.cert_file, up.key_file)
    except (OSError, ssl.SSLError) as exc:
        from station.config import ConfigError

        raise ConfigError(f"[upstream] ca_file/cert_file/key_file: {exc}") from None
    return ctx


class UpstreamForwarder:
    """Ships every event of the log, in order, to the upstream broker; see module doc."""

    def __init__(
        self,
        store: Store,
        station_id: str,
        host: str,
        port: int,
        topic: str | None = None,
        *,
        cursor_name: str = "upstream",
        window: int = 100,
        poll_s: float = 1.0,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        keepalive_s: int = 30,
        connect_timeout_s: float = 5.0,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        client_id: str | None = None,
        head_every_s: float = 30.0,
        resend_min_interval_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._station_id = station_id
        self._host = host
        self._port = port
        self.topic = topic or default_topic(station_id)
        self._cursor_name = cursor_name
        self._window = max(1, window)
        self._poll_s = poll_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = max(reconnect_max_s, reconnect_min_s)
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._username = username
        self._password = password
        self._tls_context = tls_context
        self.client_id = client_id or f"ps-{station_id}-upstream"
        self._head_every_s = head_every_s
        self._resend_min_interval_s = resend_min_interval_s
        self.resends = 0  # resend requests followed (tests, metrics)
        self._rng = rng or random.Random()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._cursor = self._load_cursor()
        self._connected = False
        self.last_error = ""

    @classmethod
    def from_config(cls, store: Store, config: StationConfig, secrets: Secrets,
                    **options: Any) -> UpstreamForwarder:
        """The `[upstream]` section with its own credentials and TLS (#14.5)."""
        up = config.upstream
        if not up.enabled or not up.host:
            raise ValueError("upstream is not enabled")
        return cls(store, config.station.id, up.host, up.port, up.topic,
                   password=fleet_password(config, secrets), username=up.username,
                   tls_context=fleet_tls_context(config), client_id=up.client_id, **options)

    # --- status ----------------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        """Every event up to this seq has been acknowledged by the upstream broker."""
        return self._cursor

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_forwarded(self, seq: int, timeout: float) -> bool:
        """Block until the cursor reaches `seq` (shutdown drains, tests) or the timeout."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._cursor < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._progress.wait(left)
        return True

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._store.subscribe(self._on_commit)
        self._thread = threading.Thread(target=self._run, name="upstream-forwarder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop publishing; what was sent but not acknowledged goes again next time."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._store.unsubscribe(self._on_commit)
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)

    def _on_commit(self, events: Sequence[EventRecord]) -> None:
        self._wake.set()  # runs on the writer's thread: no work here

    # --- worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            link = self._connect()
            if link is None:
                failures += 1
                self._stopping.wait(self._reconnect_delay(failures))
                continue
            failures = 0
            self._connected = True
            log.info("upstream %s:%d connected, resuming after seq %d",
                     self._host, self._port, self._cursor)
            try:
                self._pump(link)
            except Exception:
                log.exception("upstream forwarding failed; reconnecting")
                self.last_error = "internal error"
            finally:
                self._connected = False
                self._teardown(link)
            if not self._stopping.is_set():
                failures = 1
                self._stopping.wait(self._reconnect_delay(failures))

    def _reconnect_delay(self, failures: int) -> float:
        base = min(self._reconnect_max_s,
                   self._reconnect_min_s * (2 ** min(max(failures - 1, 0), 30)))
        return base * (0.5 + 0.5 * self._rng.random())

    def _connect(self) -> _Link | None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            reconnect_on_failure=False,  # reconnecting is ours, with a fresh client
        )
        link = _Link(client)
        client.max_inflight_messages_set(self._window)
        client.max_queued_messages_set(0)
        client.connect_timeout = self._connect_timeout_s
        if self._username:
            client.username_pw_set(self._username, self._password)
        if self._tls_context is not None:
            client.tls_set_context(self._tls_context)

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                link.refused = str(reason)
                link.lost.set()
            else:
                set_nodelay(c.socket())
                c.subscribe(resend_topic(self._station_id), qos=1)
                link.connected.set()
            self._wake.set()

        def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            """A resend request: {"from_seq": N}. Anything else is ignored (never a traceback)."""
            try:
                body = json.loads(msg.payload)
                from_seq = body["from_seq"]
            except (ValueError, TypeError, KeyError, RecursionError):  # never out into paho's loop
                return
            if isinstance(from_seq, int) and not isinstance(from_seq, bool) and from_seq >= 1:
                current = link.resend_from
                link.resend_from = from_seq if current is None else min(current, from_seq)
                self._wake.set()

        def on_publish(c: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            link.acks.put(mid)
            self._wake.set()

        def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                          props: Any) -> None:
            link.lost.set()
            self._wake.set()

        client.on_connect = on_connect
        client.on_publish = on_publish
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        try:
            client.connect(self._host, self._port, keepalive=self._keepalive_s)
        except (OSError, ValueError) as exc:
            self.last_error = f"connect: {type(exc).__name__}"
            return None
        set_nodelay(client.socket())  # after each connect, before the first publish
        client.loop_start()
        deadline = time.monotonic() + self._connect_timeout_s
        while not (link.connected.is_set() or link.lost.is_set()):
            if self._stopping.is_set() or time.monotonic() > deadline:
                break
            self._wake.wait(0.05)
            self._wake.clear()
        if not link.connected.is_set() or link.lost.is_set():
            self.last_error = f"connect: {link.refused or 'no CONNACK'}"
            self._teardown(link)
            return None
        self.last_error = ""
        return link

    def _teardown(self, link: _Link) -> None:
        link.client.disconnect()  # also ends paho's thread if the link is already dead
        link.client.loop_stop()

    def _pump(self, link: _Link) -> None:
        """Publish from the cursor on, keep up to `window` unacknowledged, advance on acks."""
        next_seq = self._cursor + 1
        inflight: dict[int, int] = {}  # mid -> seq
        sent: deque[int] = deque()  # seqs in publish order, not yet below the cursor
        # PUBACKs per seq not yet matched to `sent`: a resent seq is in `sent` twice and is
        # acknowledged twice, maybe in one drain, so this counts rather than marks
        acked: Counter[int] = Counter()
        last_head = -1e9
        last_resend = -1e9
        while not self._stopping.is_set() and not link.lost.is_set():
            self._wake.clear()
            asked, link.resend_from = link.resend_from, None
            now = time.monotonic()
            if asked is not None and asked < next_seq and now - last_resend >= self._resend_min_interval_s:
                # the fleet misses events the broker already acknowledged (a broker that lost
                # them): send again from there; the cursor stays, nothing is counted twice
                last_resend = now
                self.resends += 1
                log.info("upstream: the fleet asks for events from seq %d again", asked)
                next_seq = asked
            if now - last_head >= self._head_every_s:
                last_head = now
                self._publish_head(link)
            while True:
                try:
                    mid = link.acks.get_nowait()
                except queue.Empty:
                    break
                seq = inflight.pop(mid, None)
                if seq is not None:
                    acked[seq] += 1
            new_cursor = self._cursor
            while sent and acked[sent[0]] > 0:
                done = sent.popleft()
                acked[done] -= 1
                if not acked[done]:
                    del acked[done]
                new_cursor = max(new_cursor, done)  # a resent seq may sit below the cursor
            if new_cursor > self._cursor:
                self._save_cursor(new_cursor)
            room = self._window - len(inflight)
            published = 0
            if room > 0:
                with self._store.reading() as conn:
                    batch = list(iter_events(conn, after_seq=next_seq - 1, limit=room))
                    epochs = log_epochs(conn) if batch else []
                for event in batch:
                    payload = event_payload(self._station_id, event, epoch_of(epochs, event.seq))
                    info = link.client.publish(self.topic, payload, qos=1, retain=False)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        link.lost.set()  # resend from the cursor on the next connection
                        self.last_error = f"publish: {mqtt.error_string(info.rc)}"
                        return
                    inflight[info.mid] = event.seq
                    sent.append(event.seq)
                    next_seq = event.seq + 1
                    published += 1
            if published == 0:
                self._wake.wait(self._poll_s)

    def _publish_head(self, link: _Link) -> None:
        """How far the log goes (seq, hash, epoch): lets the fleet see that it is missing a
        tail the broker lost, and that a quiet station is alive."""
        with self._store.reading() as conn:
            row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            epochs = log_epochs(conn)
        seq, digest = (int(row[0]), str(row[1])) if row else (0, "")
        epoch, epoch_seq = epoch_of(epochs, seq)
        body = {"station": self._station_id, "seq": seq, "hash": digest, "epoch": epoch,
                "epoch_seq": epoch_seq}
        link.client.publish(head_topic(self._station_id), canonical_json(body).encode(), qos=1,
                            retain=False)

    # --- cursor ----------------------------------------------------------------------------

    def _load_cursor(self) -> int:
        row = self._store.query_one(
            "SELECT seq FROM upstream_cursor WHERE name = ?", (self._cursor_name,)
        )
        return int(row["seq"]) if row else 0

    def _save_cursor(self, seq: int) -> None:
        with self._store.transaction() as tx:
            tx.execute(
                "INSERT INTO upstream_cursor(name, seq) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET seq = excluded.seq"
                " WHERE excluded.seq > upstream_cursor.seq",
                (self._cursor_name, seq),
            )
        with self._progress:
            self._cursor = seq
            self._progress.notify_all()
