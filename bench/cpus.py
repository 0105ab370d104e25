"""One CPU for a measurement, as `taskset -c N` gives a process: the edge-box figures of
issue 18.5. Linux only; elsewhere the measurement runs unpinned and says so (cpu None)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def pin_one_cpu() -> tuple[set[int] | None, int | None]:
    """Pin the calling thread to one CPU (the highest it may use); returns (the affinity
    before, the CPU chosen). Threads and processes it starts afterwards inherit the pin."""
    if not hasattr(os, "sched_setaffinity"):
        return None, None
    before = os.sched_getaffinity(0)
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    return before, cpu


@contextmanager
def one_cpu() -> Iterator[int | None]:
    """Everything started inside (a live station's threads, its broker, the firmware stubs)
    runs on one CPU with the caller: the whole stack on one core, so a figure measured so is
    an upper bound for the station alone on it."""
    before, cpu = pin_one_cpu()
    try:
        yield cpu
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
