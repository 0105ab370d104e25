"""`make demo`: a broker, the station and the simulated room on embedded defaults.

Everything lives under var/demo (database, secrets, device NV stores); run it twice and it
carries on where it stopped. The simulator, when present, adds virtual people."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from station.api.auth import make_token
from station.config import NotifySection, load_config, load_secrets, write_new_secrets
from station.mosquitto import MosquittoProcess, free_port

console = Console(soft_wrap=True)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_devices(config: Any, secrets: Any, broker_url: str, nv_dir: Path) -> list[Any]:
    """The firmware of every shelf and door on the in-memory HAL (no people)."""
    from firmware_stubs.door import DoorController
    from firmware_stubs.shelf import ShelfController

    sid = config.station.id
    devices: list[Any] = []
    for shelf in config.shelves:
        devices.append(ShelfController(sid, shelf.device, shelf.rows, shelf.columns,
                                       secrets.device_key(sid, shelf.device), broker_url,
                                       nv_path=str(nv_dir / f"{shelf.device}.json"),
                                       trust_host_clock=True))
    for door in (config.doors.entry, config.doors.exit):
        devices.append(DoorController(sid, door, secrets.device_key(sid, door), broker_url,
                                      nv_path=str(nv_dir / f"{door}.json"),
                                      pulse_s=config.doors.unlock_pulse_s, trust_host_clock=True))
    for d in devices:
        d.start()
    return devices


def demo_notify(notify: NotifySection) -> NotifySection:
    """The demo's console senders show the codes (its stand-in for the SMS a customer would
    get); only here, never in `station run` (ADR 0081)."""
    senders = [s.model_copy(update={"show_codes": True}) if s.kind == "console" else s
               for s in notify.senders]
    return notify.model_copy(update={"senders": senders})


def run_demo(args: argparse.Namespace) -> int:
    import uvicorn

    from station.bootstrap import build_station

    base = Path("var/demo")
    base.mkdir(parents=True, exist_ok=True)
    secrets_path = base / "secrets.toml"
    if not secrets_path.exists():
        write_new_secrets(secrets_path)
    secrets = load_secrets(args.secrets or secrets_path)
    config = load_config(args.config)
    broker = MosquittoProcess(workdir=base / "mosquitto").start()
    config = config.model_copy(update={
        "station": config.station.model_copy(update={
            "database": str(base / "station.db"), "snapshots_dir": str(base / "snapshots")}),
        "mqtt": config.mqtt.model_copy(update={"port": broker.port}),
        "notify": demo_notify(config.notify),
        # the demo shows itself to a Home Assistant pointed at its broker (read-only)
        "home_assistant": config.home_assistant.model_copy(update={"enabled": True}),
    })
    devices = start_devices(config, secrets, broker.url, base)
    station = build_station(config, secrets)
    station.start()
    port = args.port or free_port()
    if not _port_free(port):
        port = free_port()
    key = secrets.token_key
    op = make_token(key, "operator", "demo-operator", 7 * 86400)
    kiosk = make_token(key, "kiosk", "kiosk-1", 7 * 86400)
    url = f"http://127.0.0.1:{port}"
    console.print(f"\n[bold green]Parcel station demo[/] ({config.station.name})")
    console.print(f"  API        {url}/docs")
    console.print(f"  operator   {url}/operator?token={op}")
    console.print(f"  kiosk      {url}/kiosk?token={kiosk}")
    console.print(f"  courier    {url}/courier")
    console.print(f"  broker     {broker.url}   database {config.station.database}\n")
    sim = None
    if not args.no_sim:
        try:
            from shelf_sim.demo import start_demo_people  # type: ignore[import-not-found]

            sim = start_demo_people(config, secrets, broker.url, url, kiosk, op, speed=args.speed,
                                    station=station, devices=devices)
        except ImportError:
            console.print("[yellow]simulator not available: devices only[/]")
    try:
        uvicorn.run(station.app, host="127.0.0.1", port=port, log_level="warning")
    finally:
        if sim is not None:
            sim.stop()
        station.stop()
        for d in devices:
            d.stop()
        broker.stop()
    return 0
