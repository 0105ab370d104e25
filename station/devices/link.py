"""The station end of the device link: the one owner of the station's MQTT connection.

`DeviceLink` signs and sends commands, tracks each by cmd_id until an ack or its expiry (never
after), keeps the desired lights per shelf and brings a device back to them when it returns,
answers device time challenges, and turns everything devices say into `DeviceEvent`s handed to
`on_event` exactly once (the service writes them to the event log).

Threads: paho's network thread runs the message callbacks; one timer thread retries, expires
and reconciles. Both change link state under one lock and queue events; a third thread,
`devicelink-events`, hands them to `on_event` outside the lock, in order, so `on_event` may
call back into the link (but must not `wait()` on a handle). The flows `on_event` runs (a
placement's commit, its lights) therefore never hold up the network thread: the ack a door
or an HTTP request waits for is read while a placement commits (docs/adr/0165).

Commands to one device are sent one at a time, in order (docs/adr/0013): a retry can then
never overtake a newer command, and a replay window cannot open. Lights commands waiting
behind the one in flight are folded into one replace of the shelf's desired lights (docs/adr/
0016): under load a shelf gets the newest picture once, not every picture in between.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from station.clocks import StationClock
from station.config import Secrets, StationConfig

from . import envelope as env
from .envelope import EnvelopeError
from .messages import AckMsg, DoorState, ShelfState, parse_event, parse_state

log = logging.getLogger("station.devices")

Slot = tuple[int, int]
PATTERNS = ("solid", "blink", "alternate")
# the device and the station disagree about time: the device asks for a time.sync and the
# station retries the same command after answering it (docs/adr/0090), never a final failure
TRANSIENT_REASONS = frozenset({"no_trusted_time", "clock_skew"})
LIGHT_OPS = frozenset({"lights.set", "lights.clear"})
# the shortest wait for a command's ack before it is sent again, however quick the device's
# round trips: below it a late ack (a busy broker, a device's flash write) costs a resend
MIN_RETRY_S = 0.1


@dataclass(frozen=True)
class Light:
    """What one slot should show: up to 4 colours ("#RRGGBB"), a pattern and a time to live
    after which the device turns it off by itself."""

    colours: tuple[str, ...]
    pattern: Literal["solid", "blink", "alternate"] = "solid"
    ttl_s: float = 600.0

    def __post_init__(self) -> None:
        if not 1 <= len(self.colours) <= 4 or not all(
            isinstance(c, str) and len(c) == 7 and c[0] == "#" and _is_hex(c[1:])
            for c in self.colours
        ):
            raise ValueError(f"colours must be 1-4 '#RRGGBB' strings, not {self.colours!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}")
        if not 0 < self.ttl_s <= 86400:
            raise ValueError("ttl_s must be in (0, 86400]")


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class DeviceEvent:
    """Something a device did or the link observed; `ts` is the station's receive time (the
    device's own time, if it had trusted time, is `data['device_ts']`)."""

    device: str
    kind: str
    data: dict[str, Any]
    ts: float


@dataclass(frozen=True)
class CommandOutcome:
    """How a command ended: `acked` (the device did it), `refused` (with the device's reason)
    or `expired` (no ack before its expiry: it will never run)."""

    status: Literal["acked", "refused", "expired"]
    reason: str | None
    cmd_id: str
    device: str
    op: str
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "acked"


class CommandHandle:
    """A sent command; `wait()` returns its outcome, which always comes by its expiry."""

    def __init__(self, cmd_id: str, device: str, op: str, expires_at: float) -> None:
        self.cmd_id, self.device, self.op, self.expires_at = cmd_id, device, op, expires_at
        self._done = threading.Event()
        self._outcome: CommandOutcome | None = None

    def _resolve(self, outcome: CommandOutcome) -> bool:
        if self._outcome is not None:
            return False
        self._outcome = outcome
        self._done.set()
        return True

    def done(self) -> bool:
        return self._done.is_set()

    @property
    def outcome(self) -> CommandOutcome | None:
        return self._outcome

    def wait(self, timeout: float | None = None) -> CommandOutcome:
        """Block until acked/refused/expired; TimeoutError if `timeout` ends first."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.op} {self.cmd_id} to {self.device}: no outcome yet")
        assert self._outcome is not None
        return self._outcome


class SeqSource:
    """Per-device command sequence numbers that only ever grow, across station restarts.

    seq = max(last + 1, microseconds since the epoch). A durable high-water mark, reserved 10 s
    ahead with one fsync, guards against a clock that steps back after a restart. What the
    devices report (`observe`: the `last_seq` of their signed state, a `replayed` refusal)
    lifts it too: a lost or restored file, after a clock that once ran fast, would otherwise
    have every device refuse every command as `replayed` (#22.5).
    """

    RESERVE_US = 10_000_000
    MAX_OBSERVED = 2**53  # a JSON-safe integer (year 2255 in µs): above is a lie, not a clock

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._reserved = 0
        if self.path and self.path.exists():
            self._reserved = int(self.path.read_text().strip() or 0)
        self._last = self._reserved
        self._unsaved = False  # the last write of the mark failed

    def next(self) -> int:
        with self._lock:
            seq = max(self._last + 1, time.time_ns() // 1000)
            if self.path and seq > self._reserved:
                self._reserve(seq + self.RESERVE_US)
            self._last = seq
            return seq

    def observe(self, seq: int) -> bool:
        """A device has accepted `seq`: every later number is above it. False (and nothing
        changes) for a value no honest device can report."""
        if not 0 <= seq < self.MAX_OBSERVED:
            return False
        with self._lock:
            if seq > self._last:
                self._last = seq
                if self.path and seq >= self._reserved:
                    self._reserve(seq + self.RESERVE_US)
        return True

    def _reserve(self, value: int) -> None:
        """Move the durable mark to `value`. A write that fails (a full disk) leaves the mark
        where it was, to be tried again by the next number, and never stops a command: the
        numbers stay above everything taken in this run, and after a restart a device's
        `replayed` with its `last_seq` lifts us past what it took (`observe`)."""
        try:
            self._persist(value)
        except OSError as exc:
            if not self._unsaved:
                log.error("cannot save the command sequence mark to %s (%s); commands still go out",
                          self.path, exc)
            self._unsaved = True
            return
        if self._unsaved:
            log.warning("the command sequence mark is saved again")
        self._unsaved = False
        self._reserved = value

    def _persist(self, value: int) -> None:
        """Write, fsync, rename, fsync the directory: the rename itself survives a power cut."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(str(value))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class _Pending:
    cmd_id: str
    op: str
    args: dict[str, Any]
    deadline: float  # on the station's monotonic clock: the command never runs after it
    handle: CommandHandle
    seq: int = 0
    issued_at: float = 0.0  # wall clock, for people and the device's reported time
    expires_at: float = 0.0  # wall clock, ditto
    mono_issued: float = 0.0
    resynced: bool = False  # an `expired` from the device was answered with a time.sync once
    tries: int = 0
    next_retry: float = 0.0
    # handles of lights commands folded into this one before they were sent (their outcome
    # is this command's)
    riders: list[CommandHandle] = field(default_factory=list)
    bumped: bool = False  # a `replayed` was answered once with a seq above the device's


@dataclass
class _Inbound:
    """One message from the broker, PUBACKed only once every event it caused has been taken
    by `on_event` (committed), never before: what the broker was told arrived is never lost
    (#22.4, docs/adr/0085). `gen` is the connection it came on: a packet id means nothing
    on another connection."""

    mid: int
    qos: int
    gen: int
    pending: int = 0  # events emitted for it and not yet taken
    closed: bool = False  # its handler has finished (no more events can come)
    acked: bool = False  # PUBACK sent, or handed to a redelivered copy of the same message


@dataclass
class _Device:
    id: str
    kind: Literal["shelf", "door"]
    rows: int = 0
    cols: int = 0
    online: bool | None = None
    boot_id: str | None = None
    reported: dict[str, Any] | None = None
    desired: dict[Slot, tuple[Light, float]] = field(default_factory=dict)  # light, mono expiry
    queue: deque[_Pending] = field(default_factory=deque)
    inflight: _Pending | None = None
    reconcile: bool = False
    nonce: str | None = None  # current time challenge from the device
    nonce_answered: float = -math.inf  # monotonic time we last answered it
    sync_cmd_id: str | None = None  # our last time.sync: its ack means "retry now"
    trusted: bool = False  # the device said it has trusted time
    bad_budget: float = 20.0
    bad_refill: float = 0.0
    bad_suppressed: int = 0
    # availability (docs/adr/0087): an unsigned `avail` is a claim, believed only as the
    # device's own signed messages bear it out
    claim: bool | None = None  # what the pending claim says (True online, False offline)
    claim_at: float = 0.0  # monotonic time it arrived
    alive_at: float = -math.inf  # monotonic time of the last fresh signed word from it
    uptime: float | None = None  # the highest uptime_s its states reported in this boot
    # the boot the station's log last knew (the `devices` projection), for the first state
    # after a start: a shelf that rebooted while the station was down is a reboot too
    last_boot: str | None = None
    evt_high: int = 0  # the highest evt_seq seen in this boot
    probe_cmd_id: str | None = None  # our last `ping`: its ack is proof of life
    probes: int = 0  # sent for the pending claim
    echo_at: float | None = None  # when our echo beside the last probe came back
    # round trips of commands acked at the first send (RFC 6298's estimator, Karn's rule),
    # for the time a command waits for its ack before it is sent again (docs/adr/0167)
    srtt: float | None = None
    rttvar: float = 0.0

    def measured(self, rtt: float) -> None:
        """One round trip of a command acked at its first send."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def retry_after(self, tries: int, ceiling: float) -> float:
        """How long the `tries`-th send waits for its ack: the smoothed round trip plus four
        deviations, doubled for each send already unanswered, between MIN_RETRY_S and
        `ceiling` (`ceiling` until a round trip is known). One command is in flight per
        device, so a lost ack stalls every command queued behind it for this long; a resend
        is harmless (the device answers a repeated cmd_id with its first ack)."""
        if self.srtt is None:
            return ceiling
        floor = min(MIN_RETRY_S, ceiling)
        return min(ceiling, max(floor, self.srtt + 4 * self.rttvar) * 2 ** (tries - 1))


class DeviceLink:
    """Owns the MQTT connection to every configured shelf and door (see module docstring)."""

    def __init__(
        self,
        config: StationConfig,
        secrets: Secrets,
        on_event: Callable[[DeviceEvent], None],
        *,
        client_id: str | None = None,
        seq_path: Path | str | None = None,
        retry_s: float = 0.5,
        tick_s: float = 0.02,
        clock: StationClock | None = None,
        known_boots: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        # durations on `mono`, stamps on `wall`; `boot` names the monotonic clock (ADR 0090)
        self._clock = clock or StationClock()
        self.station_id = config.station.id
        self._secrets = secrets
        self._on_event = on_event
        self.client_id = client_id or f"ps-{self.station_id}-station"
        self._seq = SeqSource(seq_path)
        self.retry_s = retry_s
        self.tick_s = tick_s
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._deliver_lock = threading.RLock()  # on_event may call set_lights -> _flush
        self._delivering = False  # a _flush is running on the thread holding _deliver_lock
        self._outbox: deque[tuple[DeviceEvent, _Inbound | None]] = deque()
        # events on_event refused (the store could not commit them): retried, in order, before
        # anything newer, and their messages stay unacknowledged meanwhile
        self._held: deque[tuple[DeviceEvent, _Inbound | None]] = deque()
        self._held_retry_at = 0.0
        self._held_logged = 0.0
        self._inbound: _Inbound | None = None  # the message being handled (under the lock)
        self._gen = 0  # connection generation
        self._seen_evts: OrderedDict[tuple[str, str, int], _Inbound | None] = OrderedDict()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._wake = threading.Event()  # events are queued: the delivery thread takes them
        self._deliverer: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self.connected = threading.Event()
        self._ever_connected = False
        self._devices: dict[str, _Device] = {}
        self._keys: dict[str, bytes] = {}
        for shelf in config.shelves:
            self._devices[shelf.device] = _Device(shelf.device, "shelf", shelf.rows, shelf.columns)
        for door in (config.doors.entry, config.doors.exit):
            self._devices[door] = _Device(door, "door")
        for device in self._devices:
            self._keys[device] = secrets.device_key(self.station_id, device)
            self._devices[device].last_boot = (known_boots or {}).get(device)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> DeviceLink:
        """Connect in the background (retrying with backoff) and start the timer thread."""
        mq = self.config.mqtt
        # a persistent session: placement events published while the station is down wait at
        # the broker (QoS 1) instead of being lost; duplicates are dropped by evt_seq and by
        # the slot.sensed check in the flows
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=not self.config.mqtt.persistent_session,
                             manual_ack=True)  # PUBACK after the commit (#22.4)
        if mq.username:
            client.username_pw_set(mq.username, self._secrets.mqtt_password)
        if mq.tls:
            client.tls_set(ca_certs=mq.ca_file)
        avail = env.topic(self.station_id, "station", "avail")
        client.will_set(avail, env.OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=0.1, max_delay=2)  # type: ignore[arg-type]
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self._stop.clear()
        client.connect_async(mq.host, mq.port, keepalive=mq.keepalive_s)
        client.loop_start()
        self._timer = threading.Thread(target=self._timer_loop, name="devicelink-timer", daemon=True)
        self._timer.start()
        self._deliverer = threading.Thread(target=self._delivery_loop, name="devicelink-events",
                                           daemon=True)
        self._deliverer.start()
        return self

    def stop(self) -> None:
        """Disconnect cleanly; pending commands are left to expire on the devices' side."""
        self._stop.set()
        client = self._client
        if client is not None:
            if self.connected.is_set():
                info = client.publish(
                    env.topic(self.station_id, "station", "avail"), env.OFFLINE, qos=1, retain=True
                )
                try:
                    info.wait_for_publish(timeout=1.0)
                except (RuntimeError, ValueError):
                    pass
            client.disconnect()
            client.loop_stop()
        if self._timer is not None:
            self._timer.join(timeout=2)
        deliverer, self._deliverer = self._deliverer, None
        if deliverer is not None:
            self._wake.set()
            deliverer.join(timeout=5)
            self._flush()  # what the last messages queued (their outcomes' events) is taken here
        self.connected.clear()

    def __enter__(self) -> DeviceLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- queries --------------------------------------------------------------------------

    @property
    def devices(self) -> list[str]:
        return list(self._devices)

    def is_online(self, device: str) -> bool:
        return bool(self._dev(device).online)

    @property
    def held(self) -> int:
        """Device events on_event has refused so far and that wait, unacknowledged, for
        another try (a full disk)."""
        with self._lock:
            return len(self._held)

    def reported(self, device: str) -> dict[str, Any] | None:
        """The device's last retained state snapshot (validated and signed), or None."""
        with self._lock:
            rep = self._dev(device).reported
            return dict(rep) if rep is not None else None

    def desired_lights(self, device: str) -> dict[Slot, Light]:
        """The lights this shelf should show now (expired ones are gone)."""
        now = self._clock.mono()
        with self._lock:
            return {rc: light for rc, (light, exp) in self._shelf(device).desired.items() if exp > now}

    def wait_online(self, devices: list[str] | None = None, timeout: float = 10.0) -> bool:
        """True once every listed device (default: all) is online."""
        names = devices if devices is not None else self.devices
        return self._wait(lambda: all(self._dev(d).online for d in names), timeout)

    def wait_reported(
        self, device: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any] | None:
        """The first reported state that satisfies `predicate`, or None after `timeout`."""
        def check() -> bool:
            rep = self._dev(device).reported
            return rep is not None and predicate(rep)

        return self.reported(device) if self._wait(check, timeout) else None

    def _wait(self, check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    # --- commands -------------------------------------------------------------------------

    def set_lights(self, device: str, lights: Mapping[Slot, Light | None]) -> CommandHandle:
        """Merge into the shelf's desired lights (None = off) and send just that change."""
        dev = self._shelf(device)
        now = self._clock.mono()
        slots = []
        for rc in lights:
            self._check_slot(dev, rc)
        with self._lock:
            for rc, light in lights.items():
                if light is None:
                    dev.desired.pop(rc, None)
                    slots.append({"row": rc[0], "col": rc[1], "colours": [], "pattern": "solid",
                                  "ttl_s": 1})
                else:
                    dev.desired[rc] = (light, now + light.ttl_s)
                    slots.append(_light_args(rc, light, light.ttl_s))
            if slots and all(not s["colours"] for s in slots):
                handle = self._submit(dev, "lights.clear", {
                    "slots": [{"row": s["row"], "col": s["col"]} for s in slots]})
            else:
                handle = self._submit(dev, "lights.set", {"slots": slots, "replace": False})
        self._flush()
        return handle

    def replace_lights(self, device: str, lights: Mapping[Slot, Light]) -> CommandHandle:
        """The shelf's desired lights become exactly `lights`; every other slot goes dark."""
        dev = self._shelf(device)
        now = self._clock.mono()
        for rc in lights:
            self._check_slot(dev, rc)
        with self._lock:
            dev.desired = {rc: (light, now + light.ttl_s) for rc, light in lights.items()}
            handle = self._submit(dev, "lights.set", self._replace_args(dev))
        return handle  # no _flush: callers hold ctx.lock (tests/sim/test_station_deadlock.py)

    def unlock(self, door: str, pulse_s: float | None = None) -> CommandHandle:
        """Release the bolt for a pulse. The ack is not "door opened": watch for door.opened."""
        dev = self._door(door)
        args: dict[str, Any] = {} if pulse_s is None else {"pulse_s": float(pulse_s)}
        with self._lock:
            handle = self._submit(dev, "unlock", args)
        self._flush()
        return handle

    def lock(self, door: str) -> CommandHandle:
        """Engage the bolt now (an emergency release still wins on the device)."""
        with self._lock:
            handle = self._submit(self._door(door), "lock", {})
        self._flush()
        return handle

    # --- internals: registry --------------------------------------------------------------

    def _dev(self, device: str) -> _Device:
        try:
            return self._devices[device]
        except KeyError:
            raise KeyError(f"no device {device!r} in the station config") from None

    def _shelf(self, device: str) -> _Device:
        dev = self._dev(device)
        if dev.kind != "shelf":
            raise ValueError(f"{device} is a {dev.kind}, not a shelf")
        return dev

    def _door(self, device: str) -> _Device:
        dev = self._dev(device)
        if dev.kind != "door":
            raise ValueError(f"{device} is a {dev.kind}, not a door")
        return dev

    @staticmethod
    def _check_slot(dev: _Device, rc: Slot) -> None:
        if not (1 <= rc[0] <= dev.rows and 1 <= rc[1] <= dev.cols):
            raise ValueError(f"{dev.id} has no slot {rc}")

    def _replace_args(self, dev: _Device) -> dict[str, Any]:
        now = self._clock.mono()
        slots = [_light_args(rc, light, exp - now)
                 for rc, (light, exp) in sorted(dev.desired.items()) if exp - now > 0.001]
        return {"slots": slots, "replace": True}

    # --- internals: sending ---------------------------------------------------------------

    def _submit(self, dev: _Device, op: str, args: dict[str, Any]) -> CommandHandle:
        ttl = self.config.mqtt.command_ttl_s
        cmd_id = env.new_id()
        deadline = self._clock.mono() + ttl
        riders: list[CommandHandle] = []
        if op in LIGHT_OPS and any(p.op in LIGHT_OPS for p in dev.queue):
            # `dev.desired` already holds every queued change: one replace carries them all,
            # and never later than the earliest of their expiries
            for p in [p for p in dev.queue if p.op in LIGHT_OPS]:
                dev.queue.remove(p)
                riders += [p.handle, *p.riders]
                deadline = min(deadline, p.deadline)
            op, args = "lights.set", self._replace_args(dev)
        handle = CommandHandle(cmd_id, dev.id, op,
                               self._clock.wall() + deadline - self._clock.mono())
        dev.queue.append(_Pending(cmd_id, op, args, deadline, handle, riders=riders))
        self._pump(dev)
        return handle

    def _pump(self, dev: _Device) -> None:
        """Send the next queued command if none is in flight (one at a time per device)."""
        while dev.inflight is None and dev.queue:
            pending = dev.queue.popleft()
            mono, wall = self._clock.mono(), self._clock.wall()
            if mono >= pending.deadline:
                self._resolve(dev, pending, "expired", None)
                continue
            pending.seq = self._seq.next()
            pending.mono_issued, pending.issued_at = mono, wall
            pending.expires_at = wall + (pending.deadline - mono)
            dev.inflight = pending
            self._transmit(dev, pending)

    def _transmit(self, dev: _Device, pending: _Pending) -> None:
        """(Re)send: same cmd_id, seq and expiry every time, a new msg_id."""
        pending.tries += 1
        pending.next_retry = self._clock.mono() + dev.retry_after(pending.tries, self.retry_s)
        cmd = env.build_command(
            key=self._keys[dev.id], device=dev.id, seq=pending.seq, op=pending.op,
            args=pending.args, ttl_s=0, cmd_id=pending.cmd_id, issued_at=pending.issued_at,
            expires_at=pending.expires_at, epoch=self._clock.boot,
            mono_issued=pending.mono_issued, mono_expires=pending.deadline,
        )
        self._publish(dev.id, cmd)

    def _publish(self, device: str, cmd: dict[str, Any]) -> None:
        """Hand a command to paho only while connected: paho would keep it and send it after a
        reconnect, when the station may have given it up (#22.2). The retry loop resends a
        command that is still fresh once the link is back."""
        client = self._client
        if client is not None and self.connected.is_set():
            # never retained: a reconnect must not replay a command
            client.publish(env.topic(self.station_id, device, "cmd"), env.encode(cmd), qos=1,
                           retain=False)

    def _send_time_sync(self, dev: _Device) -> None:
        """Answer the device's time challenge (outside the command queue: docs/adr/0011)."""
        if dev.nonce is None:
            return
        mono = dev.nonce_answered = self._clock.mono()
        ttl = self.config.mqtt.command_ttl_s
        cmd = env.build_command(
            key=self._keys[dev.id], device=dev.id, seq=self._seq.next(), op="time.sync",
            args={"nonce": dev.nonce}, ttl_s=ttl, issued_at=self._clock.wall(),
            epoch=self._clock.boot, mono_issued=mono, mono_expires=mono + ttl,
        )
        dev.sync_cmd_id = cmd["cmd_id"]
        self._publish(dev.id, cmd)

    def _resolve(self, dev: _Device, pending: _Pending, status: str, reason: str | None,
                 result: dict[str, Any] | None = None) -> None:
        outcome = CommandOutcome(status, reason, pending.cmd_id, dev.id, pending.op,  # type: ignore[arg-type]
                                 result or {})
        if not pending.handle.done():  # (under the lock: one outcome, one event)
            # queued before the waiters wake: whoever waited can then wait for it to be taken
            data: dict[str, Any] = {
                "cmd_id": pending.cmd_id, "op": pending.op, "seq": pending.seq,
                "reason": reason, "tries": pending.tries, "result": result or {},
            }
            if pending.riders:
                data["superseded"] = [h.cmd_id for h in pending.riders]
            self._emit(dev.id, f"command.{status}", data)
        for rider in pending.riders:
            rider._resolve(outcome)
        pending.handle._resolve(outcome)

    # --- internals: timer -----------------------------------------------------------------

    def _timer_loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                with self._lock:
                    self._tick()
                self._flush()
            except Exception:
                log.exception("device link timer failed")

    def _tick(self) -> None:
        mono = self._clock.mono()
        for dev in self._devices.values():
            pending = dev.inflight
            if pending is not None:
                if mono >= pending.deadline:  # never after its expiry
                    dev.inflight = None
                    self._resolve(dev, pending, "expired", None)
                elif mono >= pending.next_retry and self.connected.is_set():
                    self._transmit(dev, pending)
            if dev.nonce is not None and mono - dev.nonce_answered > max(1.0, 4 * self.retry_s):
                self._send_time_sync(dev)  # our answer was lost: its state still asks
            self._judge_claim(dev, mono)
            if dev.reconcile and dev.online:
                dev.reconcile = False
                self._reconcile(dev)
            self._pump(dev)

    def _reconcile(self, dev: _Device) -> None:
        """Bring a returning shelf to the desired lights; doors get nothing (never unlock)."""
        if dev.kind != "shelf":
            return
        args = self._replace_args(dev)
        self._submit(dev, "lights.set", args)
        self._emit(dev.id, "device.reconciled", {"slots": len(args["slots"])})

    # --- internals: receiving -------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.warning("broker refused the station: %s", rc)
            return
        client.drop_out_messages()  # what paho kept from before may be given up (#22.2)
        sock = client.socket()
        if sock is not None:  # DESIGN §7: after every connect, or Nagle adds 44-88 ms
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
            except OSError:
                pass
        subs = [(env.topic(self.station_id, d, ch), 1)
                for d in self._devices for ch in ("ack", "state", "evt", "avail")]
        subs.append((self._echo_topic, 1))
        client.subscribe(subs)
        client.publish(env.topic(self.station_id, "station", "avail"), env.ONLINE, qos=1, retain=True)
        with self._lock:
            for dev in self._devices.values():
                if dev.inflight is not None:  # resend now rather than at the next retry
                    dev.inflight.next_retry = 0.0
                if self._ever_connected:  # we were away: devices may have lost what we sent
                    dev.reconcile = True
            self._ever_connected = True
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()
        with self._lock:
            self._gen += 1  # packet ids of the old connection must not be acknowledged on a new one

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            token = _Inbound(msg.mid, msg.qos, self._gen)
        try:
            with self._lock:
                self._inbound = token
                try:
                    self._handle(msg.topic, bytes(msg.payload))
                finally:
                    self._inbound = None
                self._changed.notify_all()
        except Exception:
            log.exception("device link failed on %s", msg.topic)
        with self._lock:
            token.closed = True
        self._flush()
        self._ack_if_done(token)

    def _ack_if_done(self, token: _Inbound | None) -> None:
        """PUBACK a message whose events have all been taken (on its own connection only)."""
        with self._lock:
            if token is None or token.acked or not token.closed or token.pending > 0:
                return
            token.acked = True
            current = token.gen == self._gen
        client = self._client
        if current and client is not None and token.qos > 0:
            client.ack(token.mid, token.qos)

    @property
    def _echo_topic(self) -> str:
        """Where the station sends itself a word beside each probe (docs/adr/0087)."""
        return f"{env.TOPIC_ROOT}/{self.station_id}/station/echo"

    def _handle(self, topic_name: str, payload: bytes) -> None:
        if topic_name == self._echo_topic:
            token = payload[:64].decode("ascii", "replace")
            for dev in self._devices.values():
                if dev.probe_cmd_id == token and dev.echo_at is None:
                    dev.echo_at = self._clock.mono()
            return
        parsed = env.parse_topic(topic_name)
        if parsed is None or parsed[0] != self.station_id or parsed[1] not in self._devices:
            return
        _, device, channel = parsed
        dev = self._devices[device]
        if channel == "avail":
            text = payload[:16].decode("utf-8", "replace")
            if text not in (env.ONLINE, env.OFFLINE):
                self._bad(dev, channel, "malformed", "avail must be online or offline", payload)
                return
            self._claim(dev, text == env.ONLINE)
            return
        try:
            obj = env.decode(payload)
            if obj.get("sig") in (None, ""):
                raise EnvelopeError("unsigned")
            if channel == "ack":
                model: Any = AckMsg.model_validate(obj)
            elif channel == "evt":
                model = parse_event(obj)
            else:
                model = parse_state(obj)
            env.check_signature(obj, self._keys[device])
            if model.device != device:
                raise EnvelopeError("wrong_device", model.device)
        except EnvelopeError as exc:
            self._bad(dev, channel, exc.reason, exc.detail, payload)
            return
        except ValidationError as exc:
            self._bad(dev, channel, "malformed", str(exc.errors()[0])[:200], payload)
            return
        if channel == "ack":
            self._on_ack(dev, model)
        elif channel == "evt":
            self._on_evt(dev, model)
        else:
            self._on_state(dev, model, obj)

    def _bad(self, dev: _Device, channel: str, reason: str, detail: str, payload: bytes) -> None:
        """Report an unusable message, at most ~2/s per device so a flood cannot drown the log."""
        mono = time.monotonic()
        dev.bad_budget = min(20.0, dev.bad_budget + (mono - dev.bad_refill) * 2.0)
        dev.bad_refill = mono
        if dev.bad_budget < 1.0:
            dev.bad_suppressed += 1
            return
        dev.bad_budget -= 1.0
        suppressed, dev.bad_suppressed = dev.bad_suppressed, 0
        self._emit(dev.id, "device.bad_message", {
            "channel": channel, "reason": reason, "detail": _printable(detail[:200]), "size": len(payload),
            "suppressed": suppressed,
        })

    def _claim(self, dev: _Device, online: bool) -> None:
        """An `avail` message: anyone who can publish (or take over the device's client id)
        can send it, and the broker's last will says "offline" for a device whose session
        was stolen. So it is a claim to check. "offline" holds for `offline_confirm_s`,
        absorbing every further claim; halfway through, the device is probed, and the claim
        is believed only if the device said nothing signed in the second half (a device
        that stops answers for a moment after its own "offline", then is silent). "online"
        for a device believed offline
        waits for fresh signed word from it (a returning device sends its state at once).
        Only the first word about a device, at start, is taken as it is (#14.6, #14.10)."""
        if dev.claim is not None or dev.online is online:
            return  # one claim at a time; nothing new
        if dev.online is None and online:
            self._set_online(dev, True)
            return
        dev.claim, dev.claim_at = online, self._clock.mono()
        dev.probes = 0

    def _send_probe(self, dev: _Device) -> None:
        """A `ping` outside the command queue (it does nothing, so it needs no seq and no
        trusted time on the device): its signed ack, carrying this fresh cmd_id, is proof
        that the device is there now."""
        mono = self._clock.mono()
        ttl = self.config.mqtt.command_ttl_s
        cmd = env.build_command(
            key=self._keys[dev.id], device=dev.id, seq=self._seq.next(), op="ping", args={},
            ttl_s=ttl, issued_at=self._clock.wall(), epoch=self._clock.boot,
            mono_issued=mono, mono_expires=mono + ttl,
        )
        dev.probe_cmd_id, dev.probes, dev.echo_at = cmd["cmd_id"], dev.probes + 1, None
        client = self._client
        if client is not None and self.connected.is_set():
            # first a word to ourselves: when it is back, whatever the broker had queued for
            # us before it (a flood, say) has been read, and the probe's ack is right behind
            client.publish(self._echo_topic, cmd["cmd_id"].encode(), qos=1, retain=False)
        self._publish(dev.id, cmd)

    def _alive(self, dev: _Device) -> None:
        """Fresh signed word from the device: it is there, whatever `avail` said."""
        dev.alive_at = self._clock.mono()
        if dev.claim is False:
            return  # judged at its deadline, so a flood of claims costs one probe per window
        dev.claim = None
        self._set_online(dev, True)

    def _judge_claim(self, dev: _Device, mono: float) -> None:
        if dev.claim is None:
            return
        window = self.config.mqtt.offline_confirm_s
        half = dev.claim_at + window / 2
        if mono < dev.claim_at + window:
            if dev.claim is False and dev.probes == 0 and mono >= half:
                self._send_probe(dev)
            return
        if dev.claim is False and dev.alive_at < half and mono < dev.claim_at + window + \
                self.config.mqtt.command_ttl_s and (dev.echo_at is None or mono < dev.echo_at + window / 2):
            return  # our inbox is behind (the probe's echo is not back, or only just): wait
        claim, dev.claim = dev.claim, None
        if claim is True:
            return  # nothing signed came: still not online
        if dev.alive_at >= half:
            self._emit(dev.id, "device.offline_disputed", {
                "alive_after_s": round(dev.alive_at - dev.claim_at, 3)})
            # it may really have been away for a moment (a broker restart, a reboot whose new
            # state we have not seen yet): bring it to the desired state, as after a return
            dev.reconcile = dev.online is True
            self._set_online(dev, True)
        else:
            self._set_online(dev, False)

    def _fresh_state(self, dev: _Device, state: ShelfState | DoorState) -> bool:
        """A state newer than any seen: a new boot, or more uptime in this one. A retained
        copy seen again, or an old state replayed, is not."""
        if dev.boot_id is None:
            dev.uptime = state.uptime_s
            return False  # the first one (retained, maybe old) is where we start
        if state.boot_id != dev.boot_id:
            if _boot_counter(state.boot_id) < _boot_counter(dev.boot_id):
                return False
            dev.uptime, dev.evt_high = state.uptime_s, 0
            return True
        if dev.uptime is None or state.uptime_s > dev.uptime:
            dev.uptime = state.uptime_s
            return True
        return False

    def _set_online(self, dev: _Device, online: bool) -> None:
        if dev.online == online:
            return
        first = dev.online is None
        dev.online = online
        data: dict[str, Any] = {"first_seen": first}
        if online and dev.boot_id is not None:
            data["boot_id"] = dev.boot_id  # kept in the `devices` projection for the next start
        self._emit(dev.id, "device.online" if online else "device.offline", data)
        if online:
            if not first:
                dev.reconcile = True
            if dev.inflight is not None:
                dev.inflight.next_retry = 0.0

    def _on_ack(self, dev: _Device, ack: AckMsg) -> None:
        pending = dev.inflight
        if ack.cmd_id and ack.cmd_id in (dev.sync_cmd_id, dev.probe_cmd_id,
                                          pending.cmd_id if pending else None):
            self._alive(dev)  # it answered what we sent just now: nobody can replay that
        if ack.cmd_id and ack.cmd_id == dev.sync_cmd_id:
            if ack.ok and pending is not None:  # the device has our time now: retry at once
                pending.next_retry = -math.inf
            return
        if pending is None or ack.cmd_id != pending.cmd_id:
            return  # a duplicate, or an answer to someone else's message
        if ack.ok:
            dev.inflight = None
            if pending.tries == 1:  # an ack of a resent command may answer any of its sends
                dev.measured(self._clock.mono() - pending.mono_issued)
            self._resolve(dev, pending, "acked", None, ack.result)
        elif ack.reason in TRANSIENT_REASONS or self._resync_expired(pending, ack.reason):
            # the device opens a new time challenge; we answer it (from its state) and retry
            if self._clock.mono() - dev.nonce_answered > self.retry_s / 2:
                self._send_time_sync(dev)
        elif ack.reason == "replayed" and self._bump_past(dev, pending, ack):
            return
        else:
            dev.inflight = None
            self._resolve(dev, pending, "refused", ack.reason)
        self._pump(dev)

    def _bump_past(self, dev: _Device, pending: _Pending, ack: AckMsg) -> bool:
        """A `replayed` refusal of a command we sent once: the device has accepted a higher
        seq than ours (a restored or lost .devseq). Send it again, once, above what the
        device says it took; a second `replayed` is final (#22.5)."""
        if pending.bumped:
            return False
        pending.bumped = True
        reported = ack.result.get("last_seq")
        if isinstance(reported, int) and not isinstance(reported, bool):
            self._seq.observe(reported)
        self._seq.observe(pending.seq)
        pending.seq = self._seq.next()
        self._emit(dev.id, "device.seq_bumped", {"cmd_id": pending.cmd_id, "seq": pending.seq,
                                                 "reported": reported})
        self._transmit(dev, pending)
        return True

    def _resync_expired(self, pending: _Pending, reason: str | None) -> bool:
        """An `expired` for a command still fresh on our clock means the device's idea of our
        time is off (an imprecise sync, a timer that jumped): re-sync and retry it once."""
        if reason != "expired" or pending.resynced:
            return False
        pending.resynced = True
        return self._clock.mono() < pending.deadline - self.retry_s

    def _on_evt(self, dev: _Device, evt: Any) -> None:
        key = (dev.id, evt.boot_id, evt.evt_seq)
        if key in self._seen_evts:  # QoS 1 redelivery
            first, token = self._seen_evts[key], self._inbound
            if first is not None and not first.acked and token is not None \
                    and first.gen != token.gen:
                # the first copy is still held (not committed) and its packet id died with
                # its connection: its PUBACK, when it comes, goes to this copy, on the
                # connection it arrived on. On the same connection (a device's resend) the
                # first's own PUBACK still guards the event, so this copy is acknowledged
                # as it is: a packet id never acknowledged holds a broker in-flight slot.
                first.mid, first.qos, first.gen = token.mid, token.qos, token.gen
                token.acked = True
            return
        self._seen_evts[key] = self._inbound
        while len(self._seen_evts) > 8192:
            self._seen_evts.popitem(last=False)
        if evt.boot_id == dev.boot_id and evt.evt_seq > dev.evt_high:
            dev.evt_high = evt.evt_seq
            self._alive(dev)
        kind = "device.command_refused" if evt.kind == "command.refused" else evt.kind
        self._emit(dev.id, kind, {**evt.data, "boot_id": evt.boot_id, "evt_seq": evt.evt_seq,
                                  "device_ts": evt.ts})

    def _on_state(self, dev: _Device, state: ShelfState | DoorState, obj: dict[str, Any]) -> None:
        if dev.kind != state.kind:
            self._bad(dev, "state", "malformed", f"{dev.id} is a {dev.kind}", b"")
            return
        previous = dev.boot_id
        if previous is None and dev.last_boot is not None and state.boot_id != dev.last_boot \
                and _boot_counter(state.boot_id) > _boot_counter(dev.last_boot):
            # the first state since the station started is of a boot after the one its log
            # knew: the shelf rebooted while the station was down, and what the old boot never
            # sent (or what changed while it was off) is only in what the new one senses
            previous = dev.last_boot
        dev.last_boot = None
        fresh = self._fresh_state(dev, state)
        dev.reported = {k: v for k, v in obj.items() if k != "sig"}
        if previous is not None and state.boot_id != previous:
            dev.boot_id = state.boot_id
            data: dict[str, Any] = {"boot_id": state.boot_id, "previous": previous}
            if isinstance(state, ShelfState):
                # what the new boot senses: changes the old one never sent, or made while
                # it was off, are only here (core.py takes the difference)
                data["occupied"] = [o.model_dump() for o in state.occupied]
            self._emit(dev.id, "device.rebooted", data)
            dev.reconcile = True
        dev.boot_id = state.boot_id
        self._seq.observe(state.last_seq)  # our next command must be above it (#22.5)
        nonce = state.time.nonce
        if nonce is not None and nonce != dev.nonce:
            dev.nonce = nonce
            self._send_time_sync(dev)
        elif nonce is None:
            dev.nonce = None
        if state.time.trusted and not dev.trusted and dev.inflight is not None:
            dev.inflight.next_retry = 0.0  # it may have been refused for want of time
        dev.trusted = state.time.trusted
        if fresh and previous is not None and state.boot_id != previous and dev.claim is False:
            dev.claim = None  # a new boot proves the "offline": it was down, and is back
            self._set_online(dev, False)
        if fresh:
            self._alive(dev)

    # --- internals: events ----------------------------------------------------------------

    def _emit(self, device: str, kind: str, data: dict[str, Any]) -> None:
        token = self._inbound
        if token is not None:
            token.pending += 1
        self._outbox.append((DeviceEvent(device, kind, data, time.time()), token))

    def _flush(self) -> None:
        """Have the queued events taken: by the delivery thread while the link runs (this
        returns at once), here and now on a link that was never started or has stopped."""
        deliverer = self._deliverer
        if deliverer is not None and deliverer is not threading.current_thread():
            if self._outbox or self._held:  # the timer calls every tick: no wake-up for nothing
                self._wake.set()
            return
        self._take_events()

    def _delivery_loop(self) -> None:
        # a held event is retried from the timer's _flush, at most every tick
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                self._take_events()
            except Exception:
                log.exception("device event delivery failed")

    def _take_events(self) -> None:
        """Hand queued events to on_event, in order, outside the state lock.

        An event on_event refuses (raises: its transaction did not commit) is held and offered
        again every `HOLD_RETRY_S`, before anything newer; its message is acknowledged to the
        broker only once it is taken.

        Called back from on_event (set_lights, unlock), it returns at once: the event being
        taken is still at the head of its queue, and the running loop takes whatever the call
        queued behind it."""
        with self._deliver_lock:
            if self._delivering:
                return
            self._delivering = True
            try:
                self._deliver()
            finally:
                self._delivering = False

    def _deliver(self) -> None:
        """The loop of `_take_events` (under `_deliver_lock`, not re-entered)."""
        while True:
            with self._lock:
                if self._held:
                    if time.monotonic() < self._held_retry_at:
                        return
                    source = self._held
                elif self._outbox:
                    source = self._outbox
                else:
                    return
                event, token = source[0]
            try:
                self._on_event(event)
            except Exception:
                self._hold(source, event)
                return
            with self._lock:
                source.popleft()
                if token is not None:
                    token.pending -= 1
                if source is self._held and not self._held:
                    log.warning("device events are taken again")
            self._ack_if_done(token)

    HOLD_RETRY_S = 0.5

    def _hold(self, source: deque[tuple[DeviceEvent, _Inbound | None]], event: DeviceEvent) -> None:
        mono = time.monotonic()
        with self._lock:
            if source is self._outbox:
                self._held.append(self._outbox.popleft())
            self._held_retry_at = mono + self.HOLD_RETRY_S
            say = mono - self._held_logged >= 30.0
            if say:
                self._held_logged = mono
        if say:  # once in a while, not once a retry: a full disk may last
            log.warning("could not take %s %s (%d held, not acknowledged to the broker); "
                        "trying again", event.device, event.kind, len(self._held), exc_info=True)


def _light_args(rc: Slot, light: Light, ttl_s: float) -> dict[str, Any]:
    return {"row": rc[0], "col": rc[1], "colours": [c.upper() for c in light.colours],
            "pattern": light.pattern, "ttl_s": round(max(ttl_s, 0.001), 3)}


def _printable(text: str) -> str:
    """A device's words as they may enter the log: what UTF-8 cannot carry (a lone surrogate
    from a JSON escape) written as its escape, so the store never refuses the report."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _boot_counter(boot_id: str) -> int:
    """The NV boot counter a boot id starts with ("17-9f3a..."), or -1."""
    head = boot_id.split("-", 1)[0]
    return int(head) if head.isdigit() and len(head) < 19 else -1
