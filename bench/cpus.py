"""One CPU for a measurement, as `taskset -c N` gives a process: the edge-box figures of
issue 18.5. Linux only; elsewhere the measurement runs unpinned and says so (cpu None)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_cpu() -> Iterator[int | None]:
    """Everything started inside (a live station's threads, its broker, the firmware stubs)
    runs on one CPU with the caller: the whole stack on one core, so a figure measured so is
    an upper bound for the station alone on it. The CPU is the highest the caller may use;
    the caller's own affinity comes back afterwards."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)
