"""The wired-together pieces every flow uses, built once by bootstrap.py."""

from __future__ import annotations

import logging
import secrets as pysecrets
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from station.clocks import Stamp, SteadyDeadlines, age, current_boot_id
from station.config import Secrets, StationConfig
from station.crypto import Sealer
from station.domain.layout import Layout, ShelfSpec, SlotAddress
from station.domain.lockout import LockoutPolicy
from station.domain.waybills import Carrier, CarrierBook
from station.store.db import Store

from .ports import DevicePort, OutboxPort


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def layout_from_config(config: StationConfig) -> Layout:
    return Layout(
        ShelfSpec(s.number, s.rows, s.columns, tuple(s.row_sizes), s.capacity, s.device, s.outbound)
        for s in config.shelves
    )


def carriers_from_config(config: StationConfig) -> CarrierBook:
    return CarrierBook(Carrier(c.name, c.pattern, c.send_code_pattern) for c in config.carriers)


@dataclass
class Ctx:
    config: StationConfig
    secrets: Secrets
    store: Store
    devices: DevicePort
    outbox: OutboxPort
    # the wall clock: what people read and what the log's timestamps say; it may step
    clock: Callable[[], float] = time.time
    # the steady clock every duration is measured on (lockouts, timeouts; ADR 0070), and the
    # boot its readings belong to (they compare only within one boot of the machine)
    mono: Callable[[], float] = time.monotonic
    boot_id: str = ""
    # the timeouts of open sessions, waiting placements and slot alarms on the steady clock,
    # by kind ("pickup", "placement", "run", "alarm"): the tick ends them by these, and the
    # lights show a claim for as long as these say it lasts
    timeouts: dict[str, SteadyDeadlines] = field(default_factory=lambda: defaultdict(SteadyDeadlines))
    layout: Layout = field(init=False)
    carriers: CarrierBook = field(init=False)
    sealer: Sealer = field(init=False)
    # One lock serialises decisions (slot choice + reservation, placement binding); it is
    # never held while waiting for a device.
    lock: threading.RLock = field(default_factory=threading.RLock)
    rng: pysecrets.SystemRandom = field(default_factory=pysecrets.SystemRandom)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("station.flows"))

    def __post_init__(self) -> None:
        if not self.boot_id:
            self.boot_id = current_boot_id()
        self.sealer = Sealer(self.secrets.encryption_key, "recipient-contact")
        self.layout = layout_from_config(self.config)
        self.carriers = carriers_from_config(self.config)

    def stamp(self, wall: float | None = None) -> Stamp:
        """Now on both clocks, for a moment whose age matters later; `wall`: the wall-clock
        reading the caller was handed (the tick's `now`), else the clock's."""
        return Stamp(self.clock() if wall is None else wall, self.boot_id, self.mono())

    def within(self, wall: float, boot: Any, mono: Any, seconds: float, now: Stamp | None = None) -> bool:
        """Was the moment stamped (wall, boot, mono) at most `seconds` ago? On the steady clock
        when it is of this boot, else on the wall clock (clocks.age): a step stretches nothing."""
        then = Stamp(float(wall), boot if isinstance(boot, str) else "",
                     float(mono) if isinstance(mono, int | float) else 0.0)
        return age(then, now or self.stamp()) <= seconds

    def closed_within(self, row: dict[str, Any], seconds: float, now: Stamp | None = None) -> bool:
        """Did the session `row` close at most `seconds` ago?"""
        if row.get("closed_at") is None:
            return False
        return self.within(row["closed_at"], row.get("closed_boot"), row.get("closed_mono"), seconds, now)

    def due(self, kind: str, rows: list[dict[str, Any]], key: str, deadline: str, now: float,
            bound: float) -> list[dict[str, Any]]:
        """Those of `rows` whose deadline (column `deadline`, a wall-clock time) has come on
        the steady clock (`timeouts[kind]`, keyed by column `key`, never more than `bound`
        away); keys of things no longer among `rows` are forgotten. What is due was read
        before any lock: the caller checks each row again in the transaction that ends it."""
        at = self.stamp(now)
        timeouts = self.timeouts[kind]
        due = [r for r in rows if timeouts.due(r[key], r[deadline], at, bound)]
        timeouts.forget_missing({r[key] for r in rows})
        return due

    @property
    def station_id(self) -> str:
        return self.config.station.id

    @property
    def lockout_policy(self) -> LockoutPolicy:
        lk = self.config.lockout
        return LockoutPolicy(lk.free_failures, lk.first_delay_s, lk.max_delay_s, lk.daily_failure_cap)

    def device_of(self, slot: SlotAddress) -> str:
        return self.layout.slot(slot).device

    @property
    def command_timeout(self) -> float:
        return self.config.mqtt.command_ttl_s + 0.5
