"""Common device runtime: MQTT session, command authentication, acks, events, state, time.

One `DeviceRuntime` per device. Subclasses (`ShelfController`, `DoorController`) declare their
ops and their state snapshot and do their periodic work in `tick`. Everything that touches
device state runs under one lock: the paho network thread (commands) and the tick thread
(timers, sensors) never interleave half-done changes.

Command checks, in order (docs/mqtt.md, "What a device refuses"):
size -> JSON -> shape -> signature -> device -> duplicate cmd_id (resend the first ack) ->
time.sync (nonce) -> seq > last accepted (else `replayed`) -> the station's clock (anchor,
epoch, expiry, issue: `firmware_stubs.anchor`) -> op known -> args valid -> persist seq
(write-ahead) -> execute -> ack + state.
Every refusal gets a negative ack and a `command.refused` event; nothing raises out of a
callback, so no payload can stop the device.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import re
import secrets as pysecrets
import signal
import socket
import sys
import threading
import tomllib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from station.devices import envelope as env
from station.devices.envelope import EnvelopeError

from .anchor import Anchor, host_anchor, judge
from .hal import Clock
from .nvstore import FileNvStore, MemoryNvStore

log = logging.getLogger("firmware")

# A simulated network layer: called with ("in"|"out", topic, payload, deliver). The default
# calls deliver(payload) at once; a fault injector may drop (never call), duplicate (call
# twice) or delay (call later, from any thread) each message.
NetHook = Callable[[str, str, bytes, Callable[[bytes], None]], None]


def passthrough(direction: str, topic: str, payload: bytes, deliver: Callable[[bytes], None]) -> None:
    """The real network: deliver every message once, now."""
    deliver(payload)


@dataclass(frozen=True)
class Op:
    """One command handler: `validate(args)` raises EnvelopeError('malformed') or returns the
    parsed args; `execute(parsed)` changes the device and returns the ack's result."""

    validate: Callable[[dict[str, Any]], Any]
    execute: Callable[[Any], dict[str, Any]]


class DeviceRuntime:
    """The protocol half of a device; see the module docstring for the command pipeline."""

    kind = "device"
    ACK_CACHE = 256

    def __init__(
        self,
        station_id: str,
        device_id: str,
        key: bytes,
        broker_url: str,
        *,
        clock: Clock | None = None,
        nv: MemoryNvStore | None = None,
        nv_path: Path | str | None = None,
        trust_host_clock: bool = False,
        heartbeat_s: float = 30.0,
        net: NetHook | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        tick_s: float = 0.01,
        state_min_interval_s: float = 0.1,
        time_sync_window_s: float = 30.0,
        resync_s: float = 3600.0,
        sync_precision_s: float = 0.5,
        resync_min_s: float = 0.5,
        wall_tolerance_s: float = 5.0,
    ) -> None:
        self.station_id = station_id
        self.device_id = device_id
        self._key = key
        self.broker_url = broker_url
        self.clock = clock or Clock()
        if nv is None:
            nv = FileNvStore(nv_path) if nv_path else MemoryNvStore()
        self.nv = nv
        self.trust_host_clock = trust_host_clock
        self.heartbeat_s = heartbeat_s
        self.net: NetHook = net or passthrough
        self.tick_s = tick_s
        self.state_min_interval_s = state_min_interval_s
        self.time_sync_window_s = time_sync_window_s
        self.resync_s = resync_s
        # a time.sync that answered a challenge older than this is kept but asked again at once
        self.sync_precision_s = sync_precision_s
        self.resync_min_s = resync_min_s  # at most one challenge of our own per this
        self.wall_tolerance_s = wall_tolerance_s  # wall clocks this far apart: re-sync
        self._auth = (username, password)
        self._ca_file = ca_file
        self._lock = threading.RLock()
        self._acks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._ops: dict[str, Op] = {}
        self._stop = threading.Event()
        self._tick_thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self.boot_id = ""
        self._evt_seq = 0
        self._boot_mono = self.clock.monotonic()
        self._wall_base: tuple[float, float] | None = None  # (station wall time, our monotonic)
        self._anchor: Anchor | None = None  # the station's monotonic clock: judges expiry
        self._nonce: str | None = None
        self._nonce_mono = 0.0
        self._want_challenge = False  # ask for a time.sync at the next tick (after the ack)
        self._last_heartbeat = 0.0
        self._state_dirty = False
        self.connected = threading.Event()
        self.register("time.sync", Op(self._validate_time_sync, self._exec_time_sync))
        # does nothing but answer (signed, with its cmd_id): the station asks when `avail`
        # says we are gone
        self.register("ping", Op(lambda args: None, lambda _: {}))

    # --- subclass interface ---------------------------------------------------------------

    def register(self, name: str, op: Op) -> None:
        """Add a command handler (subclasses call this in __init__)."""
        self._ops[name] = op

    def snapshot(self) -> dict[str, Any]:
        """Device-specific part of the retained state (called under the lock)."""
        return {}

    def tick(self, mono: float) -> None:
        """Periodic work every `tick_s` (called under the lock): timers, sensors."""

    # --- topics, time ---------------------------------------------------------------------

    def topic(self, channel: str) -> str:
        return env.topic(self.station_id, self.device_id, channel)

    @property
    def client_id(self) -> str:
        """Deterministic (DESIGN §5): a random id would race our own last will."""
        return f"ps-{self.station_id}-{self.device_id}"

    def now(self) -> float | None:
        """Trusted wall time, or None before the first accepted time.sync."""
        if self.trust_host_clock:
            return self.clock.host_wall()
        if self._wall_base is None:
            return None
        station_time, mono = self._wall_base
        return station_time + (self.clock.monotonic() - mono)

    @property
    def time_trusted(self) -> bool:
        """We can judge a command's age (we know the station's monotonic clock)."""
        return self._anchor is not None

    def uptime(self) -> float:
        return self.clock.monotonic() - self._boot_mono

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> DeviceRuntime:
        """Boot: new boot id (counter from NV), connect in the background, start the tick."""
        counter = self.nv.next_boot()
        self.boot_id = f"{counter}-{pysecrets.token_hex(4)}"
        self._boot_mono = self.clock.monotonic()
        self._evt_seq = 0
        self._stop.clear()
        self._wall_base, self._anchor, self._nonce = None, None, None
        if self.trust_host_clock:  # simulation: the station runs on this machine's clock
            self._anchor = host_anchor(env.host_clock_epoch(), self.clock.monotonic())
        else:
            self._new_nonce()
        url = urlparse(self.broker_url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True
        )
        if self._auth[0]:
            client.username_pw_set(self._auth[0], self._auth[1])
        if url.scheme == "mqtts" or self._ca_file:
            client.tls_set(ca_certs=self._ca_file)
        client.will_set(self.topic("avail"), env.OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=0.1, max_delay=2)  # type: ignore[arg-type]
        client.max_queued_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(url.hostname or "127.0.0.1", url.port or 1883, keepalive=10)
        client.loop_start()
        self._tick_thread = threading.Thread(
            target=self._tick_loop, name=f"tick-{self.device_id}", daemon=True
        )
        self._tick_thread.start()
        return self

    def stop(self) -> None:
        """Orderly shutdown: say `offline` ourselves (the will only fires on a lost link)."""
        self._stop.set()
        client = self._client
        if client is not None:
            if self.connected.is_set():
                info = client.publish(self.topic("avail"), env.OFFLINE, qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout=1.0)
                except (RuntimeError, ValueError):
                    pass
            client.disconnect()
            client.loop_stop()
        if self._tick_thread is not None:
            self._tick_thread.join(timeout=2)
        self.connected.clear()

    def crash(self) -> None:
        """Power cut for the simulator: drop the TCP link without DISCONNECT, so the broker
        publishes our last will, and stop everything. RAM state (lights, caches) is lost with
        the object; the NV store survives if the caller keeps it."""
        self._stop.set()
        client = self._client
        if client is not None:
            sock = client.socket()
            client.loop_stop()
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        if self._tick_thread is not None:
            self._tick_thread.join(timeout=2)
        self.connected.clear()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                with self._lock:
                    mono = self.clock.monotonic()
                    self.tick(mono)
                    self._time_tick(mono)
                    if (self._state_dirty and mono - self._last_heartbeat >= self.state_min_interval_s) \
                            or mono - self._last_heartbeat >= self.heartbeat_s:
                        # the retained state is a summary (events and acks carry the facts):
                        # under load one snapshot per interval, not one per change
                        self.publish_state()
            except Exception:  # a bug in one tick must not stop the device
                log.exception("%s: tick failed", self.device_id)

    # --- MQTT callbacks -------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.warning("%s: connect refused: %s", self.device_id, rc)
            return
        sock = client.socket()
        if sock is not None:  # DESIGN §7: Nagle turns a 0.5 ms round trip into 44-88 ms
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
            except OSError:
                pass
        client.subscribe(self.topic("cmd"), qos=1)
        client.publish(self.topic("avail"), env.ONLINE, qos=1, retain=True)
        with self._lock:
            self.publish_state()
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self.topic("cmd"):
            return
        try:
            self.net("in", msg.topic, bytes(msg.payload), self.handle_command)
        except Exception:
            log.exception("%s: network hook failed", self.device_id)

    # --- outgoing -------------------------------------------------------------------------

    def _publish(self, channel: str, obj: dict[str, Any], retain: bool = False) -> None:
        client = self._client
        if client is None:
            return
        name = self.topic(channel)

        def deliver(payload: bytes) -> None:
            client.publish(name, payload, qos=1, retain=retain)

        try:
            self.net("out", name, env.encode(obj), deliver)
        except Exception:
            log.exception("%s: network hook failed", self.device_id)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Publish one event; (boot_id, evt_seq) lets the station drop redeliveries."""
        with self._lock:
            self._evt_seq += 1
            evt = env.build_event(
                key=self._key,
                device=self.device_id,
                boot_id=self.boot_id,
                evt_seq=self._evt_seq,
                kind=kind,
                data=data,
                ts=self.now(),
                uptime_s=self.uptime(),
            )
            self._publish("evt", evt)

    def publish_state(self) -> None:
        """Retained full snapshot; also our heartbeat (every `heartbeat_s`)."""
        with self._lock:
            self._state_dirty = False
            self._last_heartbeat = self.clock.monotonic()
            body = {
                "kind": self.kind,
                "last_seq": self.nv.last_seq,
                "time": {"trusted": self.time_trusted, "nonce": self._nonce},
                **self.snapshot(),
            }
            state = env.build_state(
                key=self._key,
                device=self.device_id,
                boot_id=self.boot_id,
                ts=self.now(),
                uptime_s=self.uptime(),
                body=body,
            )
            self._publish("state", state, retain=True)

    def _ack(self, cmd_id: str, seq: int, ok: bool, reason: str | None = None,
             result: dict[str, Any] | None = None) -> dict[str, Any]:
        ack = env.build_ack(
            key=self._key, device=self.device_id, cmd_id=cmd_id, seq=seq, boot_id=self.boot_id,
            ok=ok, reason=reason, result=result, ts=self.now(),
        )
        self._publish("ack", ack)
        return ack

    def _refuse(self, reason: str, detail: str, cmd_id: str, seq: int, op: str) -> None:
        log.info("%s: refused %s %s: %s %s", self.device_id, op, cmd_id, reason, detail)
        # a replay refusal says what we took last, so an honest station can get above it
        self._ack(cmd_id, seq, False, reason,
                  result={"last_seq": self.nv.last_seq} if reason == "replayed" else None)
        self.emit(
            "command.refused",
            {"cmd_id": cmd_id, "op": op, "seq": seq, "reason": reason, "detail": detail[:200]},
        )

    # --- the command pipeline -------------------------------------------------------------

    def handle_command(self, payload: bytes) -> None:
        """Authenticate, check and run one command; never raises."""
        try:
            with self._lock:
                self._handle(payload)
        except Exception:
            log.exception("%s: command handler failed", self.device_id)

    def _handle(self, payload: bytes) -> None:
        try:
            cmd = env.parse_command(payload, self._key)
        except EnvelopeError as exc:
            cmd_id, seq, op = _best_effort_ids(payload)
            self._refuse(exc.reason, exc.detail, cmd_id, seq, op)
            return
        cmd_id, seq, op = cmd["cmd_id"], cmd["seq"], cmd["op"]
        if cmd["device"] != self.device_id:
            self._refuse("wrong_device", cmd["device"], cmd_id, seq, op)
            return
        cached = self._acks.get(cmd_id)
        if cached is not None:  # a retry or a transport duplicate: same answer, no effect
            self._publish("ack", cached)
            return
        if op in ("time.sync", "ping"):  # ping does nothing: no seq, no trusted time needed
            self._run(cmd, check_seq=False)
            return
        if seq <= self.nv.last_seq:
            self._refuse("replayed", f"seq {seq} <= {self.nv.last_seq}", cmd_id, seq, op)
            return
        mono = self.clock.monotonic()
        verdict = judge(self._anchor, cmd["mono"], mono)
        if verdict is not None:
            self._refuse(*verdict, cmd_id, seq, op)
            # we may be the one who is wrong: ask for a time.sync; the station retries a
            # command that is still fresh on its clock (docs/adr/0090)
            self._want_challenge = True
            return
        self._check_wall(cmd, mono)
        self._run(cmd, check_seq=True)

    def _run(self, cmd: dict[str, Any], check_seq: bool) -> None:
        cmd_id, seq, op_name = cmd["cmd_id"], cmd["seq"], cmd["op"]
        op = self._ops.get(op_name)
        if op is None:
            self._refuse("unknown_op", op_name, cmd_id, seq, op_name)
            return
        try:
            parsed = op.validate({**cmd["args"], "_cmd": cmd})
        except EnvelopeError as exc:
            self._refuse(exc.reason, exc.detail, cmd_id, seq, op_name)
            return
        except (TypeError, ValueError, KeyError) as exc:
            self._refuse("malformed", str(exc), cmd_id, seq, op_name)
            return
        if check_seq:
            self.nv.set_last_seq(seq)  # write-ahead: a crash after this never re-runs it
        result = op.execute(parsed)
        ack = self._ack(cmd_id, seq, True, result=result)
        self._acks[cmd_id] = ack
        while len(self._acks) > self.ACK_CACHE:
            self._acks.popitem(last=False)
        self._state_dirty = True  # the tick publishes it: the ack leaves first, unhindered

    # --- time -----------------------------------------------------------------------------

    def _new_nonce(self) -> None:
        self._nonce = pysecrets.token_hex(8)
        self._nonce_mono = self.clock.monotonic()

    def _time_tick(self, mono: float) -> None:
        anchor = self._anchor
        if self._nonce is not None:
            self._want_challenge = False  # one is open already
            if mono - self._nonce_mono > self.time_sync_window_s and (
                    anchor is None or anchor.source == "sync"):
                self._new_nonce()  # an old challenge must not be answerable for ever
                self.publish_state()
            elif mono - self._nonce_mono > self.time_sync_window_s:
                self._nonce = None  # a host-clock device asked, nobody answered: keep the host
                self.publish_state()
        elif anchor is not None and anchor.source == "sync" and mono - anchor.local > self.resync_s:
            self._new_nonce()  # ask for a fresh beacon; we stay trusted meanwhile
            self.publish_state()
        elif self._want_challenge and mono - self._nonce_mono >= self.resync_min_s:
            self._want_challenge = False
            self._new_nonce()
            self.publish_state()

    def _check_wall(self, cmd: dict[str, Any], mono: float) -> None:
        """The station's wall clock differs from ours (it stepped since our last sync): our
        reported `ts` is off, so ask for a time.sync. The command still runs; its age was
        judged on the monotonic clocks."""
        now, anchor = self.now(), self._anchor
        if self.trust_host_clock or now is None or anchor is None:
            return
        station_wall = cmd["issued_at"] + (anchor.station_now(mono) - cmd["mono"]["issued"])
        if abs(station_wall - now) > self.wall_tolerance_s:
            self._want_challenge = True

    def _validate_time_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        cmd: dict[str, Any] = args["_cmd"]
        nonce = args.get("nonce")
        if not isinstance(nonce, str):
            raise EnvelopeError("malformed", "time.sync needs a nonce")
        if self._nonce is None or nonce != self._nonce:
            raise EnvelopeError("replayed", "nonce is not the current challenge")
        if self.clock.monotonic() - self._nonce_mono > self.time_sync_window_s:
            raise EnvelopeError("expired", "challenge too old")
        return cmd

    def _exec_time_sync(self, cmd: dict[str, Any]) -> dict[str, Any]:
        mono, station_time = self.clock.monotonic(), float(cmd["issued_at"])
        # the station read its clock after it saw our challenge: anchored at the challenge,
        # our bound on its clock is never low (firmware_stubs.anchor)
        self._anchor = Anchor(cmd["mono"]["epoch"], float(cmd["mono"]["issued"]), self._nonce_mono,
                              "sync")
        self._wall_base = (station_time, mono)
        self._nonce = None
        if mono - self._nonce_mono > self.sync_precision_s:
            self._want_challenge = True  # answered late: ask again for a tighter anchor
        return {"time": station_time}


def _best_effort_ids(payload: bytes) -> tuple[str, int, str]:
    """cmd_id/seq/op for the negative ack of a payload we could not accept ('' / 0 if none)."""
    try:
        obj = env.decode(payload)
    except EnvelopeError:
        return "", 0, ""

    def pick(name: str) -> str:
        value = obj.get(name)
        return value if isinstance(value, str) and len(value) <= 64 else ""

    seq = obj.get("seq")
    seq = seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else 0
    return pick("cmd_id"), seq, pick("op")


# --- args helpers -------------------------------------------------------------------------


def require_number(args: dict[str, Any], name: str, lo: float, hi: float, default: float | None = None) -> float:
    """A finite number within [lo, hi]; raises EnvelopeError('malformed')."""
    value = args.get(name, default)
    if value is None or not env._is_num(value) or not lo <= float(value) <= hi:
        raise EnvelopeError("malformed", f"{name} must be a number in [{lo}, {hi}]")
    return float(value)


# --- process entry point ------------------------------------------------------------------


def read_secrets(secrets_path: str | None) -> tuple[bytes, str | None]:
    """(master key, MQTT password) from the secrets TOML or $PS_SECRET_*; the device derives
    and keeps only its own key from the master key."""
    text = os.environ.get("PS_SECRET_DEVICE_MASTER_KEY")
    password = os.environ.get("PS_SECRET_MQTT_PASSWORD")
    path = secrets_path or os.environ.get("PS_SECRETS_FILE")
    if path:
        data = tomllib.loads(Path(path).read_text("utf-8"))
        text = text or data.get("device_master_key")
        password = password or data.get("mqtt_password")
    if not isinstance(text, str):
        raise SystemExit("no device_master_key: pass --secrets FILE or set PS_SECRETS_FILE")
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text), password
    raw = base64.b64decode(text, validate=True)
    if len(raw) != 32:
        raise SystemExit("device_master_key must be 32 bytes")
    return raw, password


def common_args(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="station TOML")
    parser.add_argument("--device", required=True, help="device id in that config")
    parser.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://...")
    parser.add_argument("--secrets", help="secrets TOML (default $PS_SECRETS_FILE)")
    parser.add_argument("--nv-dir", default="var/nv", help="where the NV record lives")
    parser.add_argument("--trust-host-clock", action="store_true",
                        help="simulation/tests only: trust the host clock, skip time.sync")
    parser.add_argument("--heartbeat-s", type=float, default=30.0)
    parser.add_argument("--ca-file")
    return parser


def process_options(args: Any, conf: dict[str, Any], station_id: str) -> dict[str, Any]:
    """What every device process takes from its command line, the station config and its
    secrets: its own key (derived, never the master), NV path, clock trust, broker login."""
    master, password = read_secrets(args.secrets)
    mqtt_conf = conf.get("mqtt", {})
    return {
        "key": env.derive_device_key(master, station_id, args.device),
        "nv_path": f"{args.nv_dir}/{args.device}.json",
        "trust_host_clock": args.trust_host_clock,
        "heartbeat_s": args.heartbeat_s,
        "username": mqtt_conf.get("username"),
        "password": password,
        "ca_file": args.ca_file or mqtt_conf.get("ca_file"),
    }


def run_process(device: DeviceRuntime) -> None:
    """Run until SIGTERM/SIGINT, then stop cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    device.start()
    print(f"{device.device_id} running, boot {device.boot_id}", file=sys.stderr, flush=True)
    done.wait()
    device.stop()


def load_toml(path: str) -> dict[str, Any]:
    return tomllib.loads(Path(path).read_text("utf-8"))
