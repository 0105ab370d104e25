"""Hardware abstraction layer for the shelf and door controllers, with in-memory stub drivers.

The firmware logic only talks to these classes, so a real board swaps in GPIO/LED-strip
drivers with the same methods and the simulator drives the stubs directly:

    hal = ShelfHal(rows=5, cols=10)
    hal.sensor(1, 3).put()          # a parcel lands in row 1, column 3
    hal.led(1, 3).colours           # what the LED shows now
    door = DoorHal()
    door.open_contact(); door.close_contact(); door.press_emergency()

All stubs are thread-safe enough for one writer (the simulator) and one reader (the firmware
tick): they hold plain attributes that are read and replaced atomically.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class Clock:
    """Monotonic time for timers; the firmware never uses the host wall clock unless it is
    explicitly told to trust it (see docs/adr/0011)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def host_wall(self) -> float:
        return time.time()


@dataclass
class Led:
    """One RGB slot LED. `colours` empty means dark; the driver would cycle through colours
    for the `alternate` pattern and toggle for `blink`."""

    colours: tuple[str, ...] = ()
    pattern: str = "solid"

    def show(self, colours: tuple[str, ...], pattern: str) -> None:
        self.colours, self.pattern = tuple(colours), pattern

    def off(self) -> None:
        self.colours, self.pattern = (), "solid"

    @property
    def lit(self) -> bool:
        return bool(self.colours)


@dataclass
class PlacementSensor:
    """Raw item count under one slot (a light curtain / weight cell); the firmware debounces.

    `put()`/`take()` are for the simulator; a broken sensor can be played with `stuck`."""

    count: int = 0
    stuck: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _changed: Callable[[], None] = field(default=lambda: None, repr=False)

    def put(self, n: int = 1) -> None:
        with self._lock:
            if not self.stuck:
                self.count += n
        self._changed()

    def take(self, n: int = 1) -> None:
        with self._lock:
            if not self.stuck:
                self.count = max(0, self.count - n)
        self._changed()

    def set_count(self, n: int) -> None:
        """What a sensor reads once it works again (the simulator's stuck sensor)."""
        with self._lock:
            self.count = n
        self._changed()

    def read(self) -> int:
        return self.count


class ShelfHal:
    """LEDs and placement sensors of one shelf, addressed (row, col), 1-based."""

    def __init__(self, rows: int, cols: int, clock: Clock | None = None) -> None:
        self.rows, self.cols = rows, cols
        self.clock = clock or Clock()
        self._leds = {(r, c): Led() for r in range(1, rows + 1) for c in range(1, cols + 1)}
        self._sensors = {
            (r, c): PlacementSensor(_changed=self._bump)
            for r in range(1, rows + 1) for c in range(1, cols + 1)
        }
        self._changes = itertools.count()
        self._version = 0

    def _bump(self) -> None:
        self._version = next(self._changes) + 1

    def changes(self) -> int:
        """Grows whenever a sensor may have changed: the firmware skips reading 50 sensors
        every tick while nothing moved (an interrupt line on a real board)."""
        return self._version

    def led(self, row: int, col: int) -> Led:
        return self._leds[(row, col)]

    def sensor(self, row: int, col: int) -> PlacementSensor:
        return self._sensors[(row, col)]

    def slots(self) -> list[tuple[int, int]]:
        return sorted(self._leds)

    def lit(self) -> dict[tuple[int, int], Led]:
        """The LEDs that are on now (what a person standing in the room sees)."""
        return {rc: led for rc, led in self._leds.items() if led.lit}


class DoorHal:
    """A door: lock actuator (driven by firmware), contact and emergency input (driven by the
    world / the simulator)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.locked = True  # actuator output: True = bolt engaged
        self.is_open = False  # door contact: True = door leaf away from frame
        self.emergency = False  # emergency release input (break-glass button)
        self.contact_broken = False  # a broken contact reads "closed" for ever

    # firmware side
    def set_locked(self, locked: bool) -> None:
        self.locked = locked

    def read_contact(self) -> bool:
        return False if self.contact_broken else self.is_open

    def read_emergency(self) -> bool:
        return self.emergency

    # world / simulator side
    def open_contact(self) -> None:
        self.is_open = True

    def close_contact(self) -> None:
        self.is_open = False

    def press_emergency(self) -> None:
        self.emergency = True

    def release_emergency(self) -> None:
        self.emergency = False
