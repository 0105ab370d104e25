"""The disk budget: how much room is left on the disks of the database, the archive and the
snapshots, and what the station does about it (ADR 0102).

Two thresholds, checked on every disk any of those directories lives on: below the first
the operator is alarmed and old snapshots (and, if configured, archive segments) are pruned;
below the second, new shelving is refused with a clear message before any transaction
starts, rather than a commit failing half way with the disk full. Pickups go on: they free
room, and a customer must never be locked out of their parcel by a full disk."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024

Probe = Callable[[Path], int]  # a directory -> free bytes on its filesystem


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass(frozen=True)
class SpaceStatus:
    level: str  # "ok", "low" (alarm, prune) or "critical" (refuse new shelving)
    free_bytes: int
    path: str  # the directory on the fullest disk

    @property
    def free_mb(self) -> float:
        return self.free_bytes / MB

    def refusal(self, refuse_bytes: int) -> str | None:
        if self.level != "critical":
            return None
        return (f"the station's disk is nearly full ({self.free_mb:.0f} MB free on {self.path}, "
                f"below the {refuse_bytes // MB} MB reserve): new parcels are refused until space "
                "is freed; pickups go on")


class DiskBudget:
    def __init__(self, paths: Iterable[Path | str], alarm_free_mb: int, refuse_free_mb: int,
                 probe: Probe = free_bytes) -> None:
        self.paths = [Path(p) for p in paths]
        self.alarm_bytes = alarm_free_mb * MB
        self.refuse_bytes = refuse_free_mb * MB
        self._probe = probe

    def status(self) -> SpaceStatus:
        """The fullest of the disks (each filesystem counted once)."""
        worst: tuple[int, str] | None = None
        seen: set[int] = set()
        for path in self.paths:
            existing = _existing(path)
            try:
                dev = os.stat(existing).st_dev
                if dev in seen:
                    continue
                seen.add(dev)
                free = self._probe(existing)
            except OSError:
                continue
            if worst is None or free < worst[0]:
                worst = (free, str(path))
        if worst is None:
            return SpaceStatus("ok", 0, "")
        free, where = worst
        level = "critical" if free < self.refuse_bytes else "low" if free < self.alarm_bytes else "ok"
        return SpaceStatus(level, free, where)

    def refusal(self) -> str | None:
        """A person's sentence when new work must be refused now, else None: cheap enough
        (one statvfs a disk) to ask before every scan."""
        return self.status().refusal(self.refuse_bytes)


def _existing(path: Path) -> Path:
    """The directory itself or its nearest existing parent (an archive not yet created)."""
    path = path if path.is_dir() else path.parent
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
