"""Room cameras (#21.3, first part): the ring buffer, and a witness that never waits."""

from __future__ import annotations

import numpy as np

from station.vision.cameras import LatestFrameGrabber, SimulatedSource
from station.vision.room import RoomWitness
from station.vision.snapshots import SnapshotStore
from tests.support.stack import wait_until


def _frame(v: int) -> np.ndarray:
    return np.full((48, 64, 3), v, np.uint8)


def test_a_room_camera_keeps_its_last_frames_and_a_witness_stores_an_encrypted_picture(tmp_path) -> None:
    source = SimulatedSource("room-1", period=0.005)
    with LatestFrameGrabber(source, history=5) as grabber:
        for v in range(8):
            source.push(_frame(10 * v))
        wait_until(lambda: grabber.frames_read >= 8)
        kept = grabber.recent(0.0)
        assert 1 <= len(kept) <= 5 and kept[-1][0][0, 0, 0] == 70
        store = SnapshotStore(tmp_path, key=bytes(32))
        w = RoomWitness({"room-1": grabber, "room-2": None}, {"room-1": ["shelf-1"],
                        "room-2": ["shelf-1", "door-exit"]}, store, max_age_s=60)
        seen = w.witness("shelf-1")
        assert len(seen.refs) == 1 and seen.missing == ("room-2",)
        assert store.load(seen.refs[0]).startswith(b"\xff\xd8\xff")
        assert w.witness("shelf-9").to_data() == {"pictures": [], "no_picture_from": []}


def test_a_camera_that_is_down_gives_no_picture_at_once(tmp_path) -> None:
    source = SimulatedSource("room-1", period=0.005)
    with LatestFrameGrabber(source, history=5) as grabber:
        source.push(_frame(5))
        wait_until(lambda: grabber.frames_read >= 1)
        source.drop()
        wait_until(lambda: not grabber.connected)
        w = RoomWitness({"room-1": grabber}, {"room-1": ["door-entry"]},
                        SnapshotStore(tmp_path, key=bytes(32)))
        seen = w.witness("door-entry")  # fresh() reads the latest frame, it has no wait in it
        assert seen.refs == () and seen.missing == ("room-1",)
