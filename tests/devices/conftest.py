"""Device-link fixtures: a per-test station id (the session broker keeps retained messages),
short expiries, an event collector, in-process firmware on the in-memory HAL, and firmware run
as real processes."""

from __future__ import annotations

import os
import secrets as pysecrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_stubs.door import DoorController
from firmware_stubs.hal import DoorHal, ShelfHal
from firmware_stubs.shelf import ShelfController
from station.config import Secrets, StationConfig
from station.devices.link import DeviceEvent, DeviceLink
from station.mosquitto import MosquittoProcess

ROOT = Path(__file__).resolve().parents[2]


class EventLog:
    """Collects DeviceEvents from on_event; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[DeviceEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: DeviceEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of(self, kind: str, device: str | None = None) -> list[DeviceEvent]:
        with self._cond:
            return [e for e in self.events
                    if e.kind == kind and (device is None or e.device == device)]

    def wait(self, kind: str, device: str | None = None,
             pred: Callable[[DeviceEvent], bool] = lambda e: True, timeout: float = 5.0,
             after: int = 0) -> DeviceEvent:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events[after:]:
                    if e.kind == kind and (device is None or e.device == device) and pred(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {kind} event for {device}; saw {[(e.device, e.kind) for e in self.events]}")
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self.events)


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def taken(link: Any, timeout: float = 5.0) -> None:
    """Every event the link has queued so far has been handed to on_event: they are taken on
    the link's delivery thread, a moment after the waiters on a command's outcome woke."""
    wait_until(lambda: not link._outbox, timeout, "the link's queued events taken")


def link_config(config: StationConfig, broker: MosquittoProcess, **mqtt: Any) -> StationConfig:
    """The example config on this broker, a unique station id, short expiries and pulses."""
    station = config.station.model_copy(update={"id": f"t-{pysecrets.token_hex(4)}"})
    mq = config.mqtt.model_copy(update={"host": broker.host, "port": broker.port,
                                        "command_ttl_s": 2.0, "light_ttl_s": 60.0,
                                        "keepalive_s": 5, "offline_confirm_s": 1.0, **mqtt})
    doors = config.doors.model_copy(update={"unlock_pulse_s": 0.3, "held_open_alarm_s": 0.4})
    return config.model_copy(update={"station": station, "mqtt": mq, "doors": doors})


@pytest.fixture
def cfg(config: StationConfig, broker: MosquittoProcess) -> StationConfig:
    return link_config(config, broker)


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def make_link(events: EventLog, tmp_path: Path) -> Iterator[Callable[..., DeviceLink]]:
    links: list[DeviceLink] = []

    def make(cfg: StationConfig, secrets: Secrets, **kw: Any) -> DeviceLink:
        kw.setdefault("seq_path", tmp_path / f"seq-{len(links)}")
        kw.setdefault("retry_s", 0.2)
        link = DeviceLink(cfg, secrets, kw.pop("on_event", events), **kw).start()
        links.append(link)
        return link

    yield make
    for link in links:
        link.stop()


class Fleet:
    """In-process firmware for the config's devices on the in-memory HAL."""

    def __init__(self, cfg: StationConfig, secrets: Secrets, broker_url: str, nv_dir: Path) -> None:
        self.cfg, self.secrets, self.url, self.nv_dir = cfg, secrets, broker_url, nv_dir
        self.running: dict[str, Any] = {}
        self.hals: dict[str, Any] = {}

    def key(self, device: str) -> bytes:
        return self.secrets.device_key(self.cfg.station.id, device)

    def shelf(self, device: str = "shelf-1", **kw: Any) -> ShelfController:
        conf = self.cfg.shelf_devices[device]
        hal = self.hals.setdefault(device, ShelfHal(conf.rows, conf.columns))
        dev = ShelfController(self.cfg.station.id, device, conf.rows, conf.columns, self.key(device),
                              self.url, hal, str(self.nv_dir / f"{device}.json"), **kw)
        self.running[device] = dev.start()
        return dev

    def door(self, device: str = "door-entry", **kw: Any) -> DoorController:
        hal = self.hals.setdefault(device, DoorHal())
        kw.setdefault("pulse_s", self.cfg.doors.unlock_pulse_s)
        kw.setdefault("held_open_s", self.cfg.doors.held_open_alarm_s)
        dev = DoorController(self.cfg.station.id, device, self.key(device), self.url, hal,
                             str(self.nv_dir / f"{device}.json"), **kw)
        self.running[device] = dev.start()
        return dev

    def stop(self) -> None:
        for dev in self.running.values():
            dev.stop()
        self.running.clear()


@pytest.fixture
def fleet(cfg: StationConfig, secrets: Secrets, broker: MosquittoProcess, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(cfg, secrets, broker.url, tmp_path / "nv")
    yield f
    f.stop()


def write_config(cfg: StationConfig, path: Path) -> Path:
    """The firmware processes read TOML; write the few keys they need."""
    shelves = "".join(
        f'[[shelves]]\nnumber = {s.number}\nrows = {s.rows}\ncolumns = {s.columns}\n'
        f'row_sizes = {list(s.row_sizes)!r}\ndevice = "{s.device}"\n\n'.replace("'", '"')
        for s in cfg.shelves)
    path.write_text(
        f'[station]\nid = "{cfg.station.id}"\nname = "test"\n\n'
        f'[doors]\nentry = "{cfg.doors.entry}"\nexit = "{cfg.doors.exit}"\n'
        f'unlock_pulse_s = {cfg.doors.unlock_pulse_s}\nheld_open_alarm_s = {cfg.doors.held_open_alarm_s}\n\n'
        + shelves)
    return path


@pytest.fixture
def spawn(cfg: StationConfig, secrets_file: Path, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python -m firmware_stubs.<kind>` as a real process; killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    conf_path = write_config(cfg, tmp_path / "fw.toml")

    def start(kind: str, device: str, broker_url: str, *extra: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{device}-{len(procs)}.log", "wb")  # noqa: SIM115 (child keeps it)
        proc = subprocess.Popen(
            [sys.executable, "-m", f"firmware_stubs.{kind}", "--config", str(conf_path),
             "--device", device, "--broker", broker_url, "--secrets", str(secrets_file),
             "--nv-dir", str(tmp_path / "nv-proc"), *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


class Sniffer:
    """A raw paho client that records every message under ps/v1/{station}/#."""

    def __init__(self, broker: MosquittoProcess, station_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"sniffer-{pysecrets.token_hex(4)}")
        ready = threading.Event()
        self.client.on_connect = lambda c, *a: (c.subscribe(f"ps/v1/{station_id}/#", qos=1))
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(5), "sniffer did not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def json(self, suffix: str) -> list[dict[str, Any]]:
        import json
        out = []
        with self._cond:
            for topic, payload, _ in self.messages:
                if topic.endswith("/" + suffix):
                    try:
                        out.append(json.loads(payload))
                    except ValueError:
                        pass
        return out

    def wait_json(self, suffix: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for obj in self.json(suffix):
                    if pred(obj):
                        return obj
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching {suffix} message")
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sniffer(cfg: StationConfig, broker: MosquittoProcess) -> Iterator[Sniffer]:
    s = Sniffer(broker, cfg.station.id)
    yield s
    s.close()


def mosquitto_pub(broker: MosquittoProcess, topic: str, payload: bytes) -> None:
    """Publish with the real `mosquitto_pub` binary (payload via stdin: 1 MB fits)."""
    subprocess.run(
        ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-s"],
        input=payload, check=True, timeout=10, capture_output=True,
    )
