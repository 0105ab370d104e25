"""What the demo, the simulator and the tests need from the station's side: the firmware of
every device on the in-memory HAL, and the demo's console sender that shows codes.

The demo itself (`make demo`, `shelf-sim demo`) is the simulator's: shelf_sim/demo.py. The
station never imports the simulator, and `station run` has none of its pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from station.config import NotifySection


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
