"""The station's two clocks: the wall clock for what people read, a steady one for durations.

A station's small computer often has no battery-backed clock: it boots with a wrong time and
NTP steps it later, in either direction, and operators set clocks by hand. A wait measured
on the wall clock (a lockout, a back-off, a timeout) grows or vanishes with such a step.
So every duration is measured on `time.monotonic` (CLOCK_MONOTONIC: it never steps, and it
keeps counting across restarts of the service within one boot of the machine), and a moment
that must outlive the process is stamped with both clocks and the boot it was taken in
(`Stamp`). Its age is then exact within one boot, and after a reboot (where the monotonic
clock starts again) it is the wall-clock difference, never negative: a step during the
reboot can shorten a wait but never lengthen it beyond its configured bound (ADR 0070).

Tests inject both clocks and the boot id; nothing here reads global state but the OS clocks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def current_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """The kernel's id of this boot: monotonic readings compare only within one boot.

    Where the kernel does not say (not Linux), every process counts as its own boot, which
    only means that ages across a restart fall back to the wall clock."""
    try:
        text = path.read_text("ascii").strip()
    except OSError:
        text = ""
    return text or f"proc-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Stamp:
    """A moment on both clocks: `wall` for people and for other boots, `mono` for this one."""

    wall: float
    boot: str
    mono: float

    def as_data(self) -> dict[str, object]:
        """The stamp as it goes into an event, so replaying the log rebuilds ages exactly."""
        return {"wall": round(self.wall, 6), "boot": self.boot, "mono": round(self.mono, 6)}


def age(then: Stamp, now: Stamp) -> float:
    """Seconds from `then` to `now`, measured so that no clock step can make it negative."""
    if then.boot == now.boot:
        return max(0.0, now.mono - then.mono)
    return max(0.0, now.wall - then.wall)


@dataclass(frozen=True)
class StationClock:
    """Both clocks and the boot id, injectable together (tests step `wall` alone)."""

    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
    boot: str = ""

    def __post_init__(self) -> None:
        if not self.boot:
            object.__setattr__(self, "boot", current_boot_id())

    def stamp(self) -> Stamp:
        return Stamp(self.wall(), self.boot, self.mono())


class SteadyDeadlines:
    """Deadlines written as wall-clock times (in the log, for display) but kept on the
    steady clock: the first time a deadline is seen, what is left of it is fixed on the
    monotonic clock (never more than `bound`), and a later wall-clock step moves nothing.

    A deadline seen for the first time after a restart, or changed (a session extended),
    is measured from the wall clock once, clamped to [0, bound]. Keys of things that are
    gone are dropped by `forget_missing`."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, float]] = {}  # key -> (wall deadline, mono deadline)

    def due(self, key: str, wall_deadline: float, now: Stamp, bound: float) -> bool:
        seen = self._seen.get(key)
        if seen is None or seen[0] != wall_deadline:
            left = min(max(wall_deadline - now.wall, 0.0), max(bound, 0.0))
            seen = (wall_deadline, now.mono + left)
            self._seen[key] = seen
        return now.mono >= seen[1]

    def until(self, key: str, wall_deadline: float, now: Stamp) -> float:
        """The deadline as a wall-clock time from `now`: where the steady clock says it is
        once it has been seen, as written before that."""
        seen = self._seen.get(key)
        if seen is None or seen[0] != wall_deadline:
            return wall_deadline
        return now.wall + (seen[1] - now.mono)

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)

    def left(self, key: str, now: Stamp) -> float | None:
        seen = self._seen.get(key)
        return None if seen is None else max(0.0, seen[1] - now.mono)

    def forget_missing(self, keys: set[str]) -> None:
        for key in [k for k in self._seen if k not in keys]:
            del self._seen[key]
