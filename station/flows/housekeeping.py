"""Housekeeping on a thread of its own: snapshots pruned by age and by their budget, the
disk budget watched (alarm, pruning, refusal) and the event log's retention run (#14.13,
#16; ADRs 0101, 0102).

Nothing here is on a door's or a placement's path: it runs every `[disk] check_interval_s`
beside the station, and each change it makes is its own short transaction."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from station.config import StationConfig
from station.store.db import Store, StoreError
from station.store.eventlog import Event
from station.store.space import MB, DiskBudget, SpaceStatus

from . import alarms
from .guard import raise_alarm

log = logging.getLogger("station.housekeeping")


class Snapshots(Protocol):
    def prune(self, retention_days: float, now: float | None = None) -> int: ...
    def prune_to(self, max_bytes: int) -> tuple[int, int]: ...
    def usage(self) -> tuple[int, int]: ...


class Retention(Protocol):
    def run(self, now: float, *, stop: Callable[[], bool] | None = None) -> Any: ...
    def prune_archives(self, free_bytes: int) -> tuple[int, int]: ...


ALARM_KINDS = {"low": "disk.low", "critical": "disk.critical"}


class Housekeeper:
    def __init__(self, config: StationConfig, store: Store, snapshots: Snapshots, budget: DiskBudget,
                 *, retention: Retention | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.snapshots = snapshots
        self.budget = budget
        self.retention = retention
        self.clock = clock
        self.level: str | None = None  # the level last recorded in the log

    def check_disk(self) -> SpaceStatus:
        """Prune snapshots past their age and their budget; if the disk is still low, free
        room oldest first (snapshots, then archive segments if configured) up to the alarm
        threshold; record a change of level in the log and alarm the operator on it."""
        now = self.clock()
        by_age = self.snapshots.prune(self.config.station.snapshot_retention_days, now)
        over, over_bytes = self.snapshots.prune_to(self.config.disk.snapshots_max_mb * MB)
        status = self.budget.status()
        seen = status  # the alarm is for what was found, even when pruning makes room again
        low = low_bytes = archives = 0
        if status.level != "ok":
            need = self.budget.alarm_bytes - status.free_bytes
            _, total = self.snapshots.usage()
            low, low_bytes = self.snapshots.prune_to(max(0, total - need))
            if (low_bytes < need and self.retention is not None
                    and self.config.retention.prune_archives_when_low):
                archives, _ = self.retention.prune_archives(need - low_bytes)
            status = self.budget.status()
        removed = by_age + over + low
        try:
            if removed:
                self.store.append(Event("snapshots.pruned", "snapshots", "station", {
                    "by_age": by_age, "over_budget": over, "disk_low": low,
                    "freed_mb": round((over_bytes + low_bytes) / MB, 1)}))
            self._record(status, seen, low, archives)
        except StoreError as exc:  # a full disk refuses the log too: the refusal still holds
            log.warning("disk state not logged: %s", exc)
        return status

    def _record(self, status: SpaceStatus, seen: SpaceStatus, snapshots_pruned: int,
                archives_pruned: int) -> None:
        """A `disk.space` event when the level changes; an alarm (one open at a time per
        kind) whenever the disk was found below the first threshold."""
        kind = ALARM_KINDS.get(seen.level)
        changed = status.level != self.level and not (self.level is None and status.level == "ok")
        if not changed and kind is None:
            self.level = status.level
            return
        with self.store.transaction() as tx:
            open_alarm = kind is not None and alarms.is_open(tx, kind, "disk")
            if not changed and (kind is None or open_alarm):
                self.level = status.level
                return
            if changed or seen.level != status.level:
                tx.emit(Event("disk.space", status.path or "disk", "station", {
                    "level": status.level, "found": seen.level, "free_mb": round(status.free_mb, 1),
                    "alarm_free_mb": self.config.disk.alarm_free_mb,
                    "refuse_free_mb": self.config.disk.refuse_free_mb,
                    "snapshots_pruned": snapshots_pruned, "archives_pruned": archives_pruned}))
            if kind and not open_alarm:
                if status.level == "critical":
                    what = "new shelving is refused until space is freed"
                else:
                    what = (f"{snapshots_pruned} old snapshots pruned, {status.free_mb:.0f} MB free now; "
                            f"new shelving stops below {self.config.disk.refuse_free_mb} MB")
                raise_alarm(tx, kind, "disk", f"{seen.free_mb:.0f} MB free on {seen.path}: {what}",
                            free_mb=round(seen.free_mb, 1))
        self.level = status.level

    def run_retention(self, stop: Callable[[], bool] | None = None) -> Any:
        if self.retention is None:
            return None
        return self.retention.run(self.clock(), stop=stop)


class HousekeepingThread:
    """Runs the housekeeper: the disk every `[disk] check_interval_s`, retention every
    `[retention] interval_s` (intervals on the monotonic clock)."""

    def __init__(self, keeper: Housekeeper) -> None:
        self.keeper = keeper
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="station-housekeeping", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cfg = self.keeper.config
        next_retention = time.monotonic()
        while True:
            try:
                self.keeper.check_disk()
                if self.keeper.retention is not None and time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + cfg.retention.interval_s
                    self.keeper.run_retention(stop=self._stop.is_set)
            except Exception:
                log.exception("housekeeping failed")
            if self._stop.wait(cfg.disk.check_interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
