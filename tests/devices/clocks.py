"""Clocks a test can step: the station link's and the firmware's. No test changes the machine's
clock; these add an offset to it (docs/adr/0090)."""

from __future__ import annotations

import threading
import time

from firmware_stubs.hal import Clock
from station.clocks import StationClock
from station.devices.envelope import host_clock_epoch


class SteppedStationClock:
    """The station's clocks (`.clock`, a `station.clocks.StationClock`) with a wall clock an
    operator or NTP steps. `boot`/`mono_offset` play a station that booted again (its monotonic
    clock started over, under a new boot id)."""

    def __init__(self, boot: str | None = None, mono_offset: float = 0.0) -> None:
        self._wall_offset = 0.0
        self._lock = threading.Lock()
        self.clock = StationClock(wall=lambda: time.time() + self._wall_offset,
                                  mono=lambda: time.monotonic() + mono_offset,
                                  boot=boot or host_clock_epoch())

    def wall(self) -> float:
        return self.clock.wall()

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
