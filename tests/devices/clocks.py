"""Clocks a test can step: the station link's and the firmware's. No test changes the machine's
clock; these add an offset to it (docs/adr/0090)."""

from __future__ import annotations

import threading
import time

from firmware_stubs.hal import Clock
from station.devices.envelope import host_clock_epoch


class StationClock:
    """A `LinkClock` whose wall clock an operator or NTP steps. `epoch`/`mono_offset` play a
    station that booted again (its monotonic clock started over, under a new name)."""

    def __init__(self, epoch: str | None = None, mono_offset: float = 0.0) -> None:
        self.epoch = epoch or host_clock_epoch()
        self._wall_offset = 0.0
        self._mono_offset = mono_offset
        self._lock = threading.Lock()

    def wall(self) -> float:
        return time.time() + self._wall_offset

    def monotonic(self) -> float:
        return time.monotonic() + self._mono_offset

    def step(self, seconds: float) -> None:
        with self._lock:
            self._wall_offset += seconds


class DeviceClock(Clock):
    """A controller's clocks: its host wall clock steps (NTP on the board, `trust_host_clock`);
    `leap` plays a timer that jumped forward (a board fault)."""

    def __init__(self) -> None:
        self.wall_offset = 0.0
        self.mono_offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.mono_offset

    def host_wall(self) -> float:
        return time.time() + self.wall_offset

    def step(self, seconds: float) -> None:
        self.wall_offset += seconds

    def leap(self, seconds: float) -> None:
        self.mono_offset += seconds
