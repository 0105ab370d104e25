"""Command round trip over a real Mosquitto: raw paho echo (the floor) beside DeviceLink.

baseline: paho publish -> echo client -> paho publish back, QoS 1, TCP_NODELAY everywhere.
ours:     DeviceLink.set_lights -> sign -> shelf firmware (verify, seq, NV write, LED) ->
          signed ack -> DeviceLink resolves the handle.
Both against the same broker in the same run. `run(n)` returns the figures (ms) so
bench/run_all.py can collect them; `python -m bench.bench_mqtt_roundtrip [N]` prints them.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware_stubs.nvstore import FileNvStore
from firmware_stubs.shelf import ShelfController
from station.config import load_config, load_secrets, write_new_secrets
from station.devices.link import DeviceLink, Light
from station.mosquitto import MosquittoProcess

ROOT = Path(__file__).resolve().parents[1]


def _nodelay(client: mqtt.Client) -> None:
    sock = client.socket()
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _raw_roundtrip(broker: MosquittoProcess, n: int) -> list[float]:
    got = threading.Event()
    ready = threading.Barrier(3)

    def connect(name: str, topic: str, on_message: Any) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)

        def on_connect(c: mqtt.Client, *_: Any) -> None:
            _nodelay(c)
            c.subscribe(topic, qos=1)

        client.on_connect = on_connect
        client.on_subscribe = lambda *_: ready.wait()
        client.on_message = on_message
        client.connect(broker.host, broker.port)
        client.loop_start()
        return client

    echo = connect("bench-echo", "bench/cmd",
                   lambda c, u, m: c.publish("bench/ack", m.payload, qos=1))
    station = connect("bench-station", "bench/ack", lambda c, u, m: got.set())
    ready.wait()
    times = []
    for i in range(n):
        got.clear()
        t0 = time.perf_counter()
        station.publish("bench/cmd", b'{"i":%d}' % i, qos=1)
        if not got.wait(5):
            raise RuntimeError("raw echo lost a message")
        times.append((time.perf_counter() - t0) * 1000)
    for client in (echo, station):
        client.disconnect()
        client.loop_stop()
    return times


def _link_roundtrip(broker: MosquittoProcess, n: int, workdir: Path, durable_nv: bool) -> list[float]:
    secrets = load_secrets(write_new_secrets(workdir / f"secrets-{durable_nv}.toml"), env={})
    base = load_config(ROOT / "examples" / "station.toml")
    cfg = base.model_copy(update={
        "station": base.station.model_copy(update={"id": f"bench-{int(durable_nv)}"}),
        "mqtt": base.mqtt.model_copy(update={"host": broker.host, "port": broker.port}),
    })
    key = secrets.device_key(cfg.station.id, "shelf-1")
    shelf = ShelfController(cfg.station.id, "shelf-1", 5, 10, key, broker.url,
                            nv=FileNvStore(workdir / f"nv-{durable_nv}.json", durable=durable_nv))
    shelf.start()
    link = DeviceLink(cfg, secrets, lambda e: None, seq_path=workdir / f"seq-{durable_nv}").start()
    try:
        if not link.wait_online(["shelf-1"], 10) or not link.wait_reported(
                "shelf-1", lambda s: s["time"]["trusted"], 10):
            raise RuntimeError("shelf did not come online")
        colours = ("#FF0000",), ("#00FF00",)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            out = link.set_lights("shelf-1", {(1 + i % 5, 1 + i % 10): Light(colours[i % 2])}).wait(5)
            times.append((time.perf_counter() - t0) * 1000)
            if not out.ok:
                raise RuntimeError(f"command failed: {out}")
        return times
    finally:
        link.stop()
        shelf.stop()


def run(n: int = 500) -> dict[str, Any]:
    """Round-trip figures in milliseconds: raw paho echo vs DeviceLink -> firmware -> ack,
    the latter with the NV record fsync'd per command (real) and without (RAM-like NV)."""
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp, \
            MosquittoProcess(workdir=Path(tmp) / "broker") as broker:
        raw = _raw_roundtrip(broker, n)
        link_nv = _link_roundtrip(broker, n, Path(tmp), durable_nv=True)
        link_ram = _link_roundtrip(broker, n, Path(tmp), durable_nv=False)
    out: dict[str, Any] = {"n": n}
    for name, values in (("raw_paho", raw), ("devicelink_fsync_nv", link_nv),
                         ("devicelink_ram_nv", link_ram)):
        out[name] = {"p50_ms": round(_pct(values, 50), 3), "p99_ms": round(_pct(values, 99), 3)}
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    figures = run(n)
    print(f"MQTT command round trip, n={n}, same Mosquitto, loopback")
    print(f"{'path':<24}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("raw_paho", "devicelink_fsync_nv", "devicelink_ram_nv"):
        print(f"{name:<24}{figures[name]['p50_ms']:>10.3f}{figures[name]['p99_ms']:>10.3f}")


if __name__ == "__main__":
    main()
