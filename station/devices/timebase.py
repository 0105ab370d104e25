"""The clocks the device link reads: a wall clock that NTP or an operator may step, and a
monotonic clock that cannot step, named by an epoch (docs/adr/0090).

Command expiry, retries and the desired lights' time to live run on `monotonic()`; `wall()`
only stamps what people read (`issued_at`, the devices' reported time). The epoch names the
monotonic clock a reading belongs to: on Linux CLOCK_MONOTONIC starts again at every kernel
boot, so the kernel's boot id names it, and a station process that restarts on the same boot
keeps its devices' time anchors.

Tests pass their own clock (same interface) to step the wall clock or to play a station that
rebooted (a new epoch); no test changes the machine's clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from .envelope import host_clock_epoch


class LinkClock(Protocol):
    """What `DeviceLink` needs from time."""

    @property
    def epoch(self) -> str: ...

    def wall(self) -> float: ...

    def monotonic(self) -> float: ...


@dataclass(frozen=True)
class SystemClock:
    """The machine's clocks: `time.time()`, `time.monotonic()` and the kernel boot id."""

    epoch: str = field(default_factory=host_clock_epoch)

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
