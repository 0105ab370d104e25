"""Faults: a lossy, duplicating, delaying network per device (the firmware's `net` hook) and
the scheduled hardware faults (reboots, a broker restart, stuck sensors, dead LEDs).

Each device's network draws from its own `random.Random`, seeded from the run seed and the
device id, so one device's traffic volume never shifts another device's faults."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable

from .scenario import Faults


class FaultyNet:
    """A `firmware_stubs.base.NetHook` that drops, duplicates and delays (so reorders)
    messages of one device, in both directions."""

    def __init__(self, seed: int, device: str, faults: Faults, counts: Counter[str],
                 lock: threading.Lock) -> None:
        self.rng = random.Random(f"{seed}/net/{device}")
        self.device = device
        self.f = faults
        self.counts = counts
        self._lock = lock
        self._rng_lock = threading.Lock()
        self.enabled = True

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def __call__(self, direction: str, topic: str, payload: bytes,
                 deliver: Callable[[bytes], None]) -> None:
        if not self.enabled:
            deliver(payload)
            return
        is_event = direction == "out" and topic.endswith("/evt")
        with self._rng_lock:
            r_drop, r_dup, r_delay = self.rng.random(), self.rng.random(), self.rng.random()
            delay = self.rng.uniform(*self.f.delay_ms) / 1000.0
        drop_rate = self.f.drop_events if is_event else self.f.drop
        if r_drop < drop_rate:
            self._count(f"dropped_{direction}")
            return
        copies = 2 if r_dup < self.f.duplicate else 1
        if copies == 2:
            self._count(f"duplicated_{direction}")
        if r_delay < self.f.delay:
            self._count(f"delayed_{direction}")
            for _ in range(copies):
                t = threading.Timer(delay, _safe_deliver, (deliver, payload))
                t.daemon = True
                t.start()
            return
        for _ in range(copies):
            deliver(payload)


def _safe_deliver(deliver: Callable[[bytes], None], payload: bytes) -> None:
    try:
        deliver(payload)
    except (OSError, RuntimeError, ValueError):  # the device rebooted meanwhile: lost, as in life
        return
