"""Room cameras as witnesses: the picture of a take, a put, a door or an alarm (#21.3).

Each `room` camera runs a grabber that keeps its last few seconds of frames. `witness(device)`
takes the newest fresh frame of every camera that sees that device (`[[cameras]] sees`) and
stores it as an encrypted snapshot. It never waits for a camera: a camera that is down or
stale yields no picture, and the caller records that none was available, so a door or a
light is never delayed by a camera.

Not yet wired (see the #21 report): the flows do not call this yet, and alarm clips (frames
before and after) are kept by the grabber's ring but not stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from station.vision.snapshots import SnapshotStore


@dataclass(frozen=True)
class Witness:
    refs: tuple[str, ...]  # one snapshot per camera that saw it
    missing: tuple[str, ...]  # cameras that see the device but had no fresh frame

    def to_data(self) -> dict[str, Any]:
        """What an event carries: the pictures, or that none was available."""
        return {"pictures": list(self.refs), "no_picture_from": list(self.missing)}


class RoomWitness:
    def __init__(self, grabbers: Mapping[str, Any], sees: Mapping[str, Sequence[str]],
                 snapshots: SnapshotStore, max_age_s: float = 2.0) -> None:
        self._grabbers = dict(grabbers)
        self._sees = {cam: tuple(devices) for cam, devices in sees.items()}
        self._snapshots = snapshots
        self.max_age_s = max_age_s

    def cameras_for(self, device: str) -> list[str]:
        return [cam for cam, devices in self._sees.items() if device in devices]

    def witness(self, device: str) -> Witness:
        refs: list[str] = []
        missing: list[str] = []
        for cam in self.cameras_for(device):
            grabber = self._grabbers.get(cam)
            got = grabber.fresh(self.max_age_s) if grabber is not None else None
            ref = None
            if got is not None:
                try:
                    ref = self._snapshots.save(got[0])
                except Exception:  # a full disk or a bad frame: no picture, never an error
                    ref = None
            if ref is None:
                missing.append(cam)
            else:
                refs.append(ref)
        return Witness(tuple(refs), tuple(missing))
