"""A whole station on fakes: real store and flows, FakeDevices/FakeOutbox, a fake clock.

Shared by the flow tests and the store's replay test."""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.config import Secrets, StationConfig, parse_config
from station.domain.codes import PickupCode
from station.domain.layout import SlotAddress
from station.domain.lights import LightSpec
from station.flows.context import Ctx
from station.flows.core import StationCore
from station.store.db import Store
from tests.conftest import EXAMPLE_CONFIG
from tests.support.fakes import FakeDevices, FakeOutbox

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeClock:
    """The wall clock (call it) and the steady clock (`mono`): `advance` moves both, as time
    passing does; `step` moves the wall clock alone, as NTP or an operator does."""

    def __init__(self, t: float = T0) -> None:
        self.t = t
        self.offset = 0.0

    def __call__(self) -> float:
        return self.t + self.offset

    def mono(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self()

    def step(self, seconds: float) -> float:
        self.offset += seconds
        return self()


def config_for(tmp_path: Path, *, shelves: list[dict[str, Any]] | None = None,
               **station: Any) -> StationConfig:
    """The example config (validated again), files under tmp_path, optional shelves."""
    data = tomllib.loads(EXAMPLE_CONFIG.read_text("utf-8"))
    data["station"].update(database=str(tmp_path / "station.db"),
                           snapshots_dir=str(tmp_path / "snapshots"), **station)
    if shelves is not None:
        data["shelves"] = shelves
    return parse_config(data, EXAMPLE_CONFIG)


def shelf(number: int, rows: int, columns: int, sizes: list[str], capacity: int = 2,
          device: str | None = None, outbound: bool = False) -> dict[str, Any]:
    return {"number": number, "rows": rows, "columns": columns, "row_sizes": sizes,
            "capacity": capacity, "device": device or f"shelf-{number}", "outbound": outbound}


@dataclass
class Station:
    core: StationCore
    ctx: Ctx
    store: Store
    devices: FakeDevices
    outbox: FakeOutbox
    clock: FakeClock
    config: StationConfig

    # --- the room -------------------------------------------------------------------------

    def device_of(self, slot: str) -> str:
        return self.ctx.device_of(SlotAddress.parse(slot))

    def put(self, slot: str) -> None:
        # a hand takes longer than the sensor's debounce after the handheld named the slot
        self.clock.advance(0.1)
        a = SlotAddress.parse(slot)
        self.core.on_device_event(self.device_of(slot), "placement",
                                  {"row": a.row, "col": a.col, "action": "put"})

    def take(self, slot: str) -> None:
        a = SlotAddress.parse(slot)
        self.core.on_device_event(self.device_of(slot), "placement",
                                  {"row": a.row, "col": a.col, "action": "take"})

    def light(self, slot: str) -> LightSpec | None:
        a = SlotAddress.parse(slot)
        return self.devices.lights.get(self.device_of(slot), {}).get((a.row, a.col))

    def lit_slots(self) -> dict[str, LightSpec]:
        out = {}
        for s in self.ctx.layout.shelves:
            for (r, c), spec in self.devices.lights.get(s.device, {}).items():
                out[str(SlotAddress(s.number, r, c))] = spec
        return out

    def tick(self, seconds: float = 0.0) -> dict[str, int]:
        self.clock.advance(seconds)
        return self.core.tick(self.clock())

    # --- people -----------------------------------------------------------------------------

    def add_courier(self, courier_id: str = "c1", carrier: str = "SF", pin: str = "1234") -> None:
        self.core.couriers.add(courier_id, carrier, f"Courier {courier_id}", pin)

    def shelve(self, waybill: str, phone: str, size: str = "S", courier_id: str = "c1",
               session_id: str | None = None) -> tuple[str, str]:
        """Scan and put one parcel (guided); returns (slot, code sent to the recipient)."""
        sid = session_id or self.core.shelving.open_session(courier_id, "guided")["session_id"]
        r = self.core.shelving.scan(sid, waybill, phone, size)
        before = len(self.outbox.messages)
        self.put(r.slot)
        assert len(self.outbox.messages) == before + 1, "no pickup code was issued"
        msg = self.outbox.messages[-1]
        assert msg["kind"] == "pickup_code"
        return r.slot, msg["code"]

    def codes_for(self, phone_tail: str) -> list[PickupCode]:
        return [PickupCode.parse(m["code"]) for m in self.outbox.messages
                if m.get("kind") == "pickup_code" and m["phone_masked"].endswith(phone_tail)]

    def events(self, type_: str) -> list[dict[str, Any]]:
        return self.store.query("SELECT * FROM events WHERE type = ? ORDER BY seq", (type_,))


def make_station(tmp_path: Path, secrets: Secrets, *, config: StationConfig | None = None,
                 seed: int = 1, **station: Any) -> Station:
    config = config or config_for(tmp_path, **station)
    clock = FakeClock()
    store = Store(config.station.database, clock=clock).open()
    devices, outbox = FakeDevices(), FakeOutbox()
    ctx = Ctx(config, secrets, store, devices, outbox, clock=clock, mono=clock.mono, boot_id="test-boot")
    ctx.rng = random.Random(seed)  # type: ignore[assignment]
    return Station(StationCore(ctx), ctx, store, devices, outbox, clock, config)


def sf_waybill(n: int) -> str:
    return f"SF{n:013d}"


def phone(n: int) -> str:
    return f"138{n:08d}"
