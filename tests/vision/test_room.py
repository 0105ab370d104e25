"""Room cameras (#21.3): the ring buffer, pictures named up front and written off the hot
path, sealed at rest, clips for alarms, and a camera that is down costing only the picture."""

from __future__ import annotations

import time

import numpy as np
import pytest

from station.store.eventlog import Event
from station.vision.cameras import LatestFrameGrabber, SimulatedSource
from station.vision.room import ROOM, RoomCamera, RoomCameras, places_from_config
from station.vision.snapshots import SnapshotError, SnapshotStore, decode_clip
from tests.support.stack import wait_until

PLACES = places_from_config({1: "shelf-1", 2: "shelf-2"}, ("door-entry", "door-exit"), "door-exit")


def _frame(v: int) -> np.ndarray:
    return np.full((48, 64, 3), v, np.uint8)


def _room(tmp_path, sees: dict[str, tuple[str, ...]], **kw) -> tuple[RoomCameras, dict[str, SimulatedSource]]:
    sources = {cam: SimulatedSource(cam, period=0.005) for cam in sees}
    room = RoomCameras([RoomCamera(cam, sources[cam], sees[cam]) for cam in sees],
                       SnapshotStore(tmp_path, key=bytes(range(32))), PLACES, **kw)
    return room, sources


def test_a_room_camera_keeps_at_most_one_frame_per_interval_in_its_ring() -> None:
    ticks = iter(i * 0.1 for i in range(10_000))
    source = SimulatedSource("room-1", period=0.002)
    with LatestFrameGrabber(source, history=50, history_interval=0.25,
                            clock=lambda: next(ticks)) as grabber:
        for v in range(20):
            source.push(_frame(v))
        wait_until(lambda: grabber.frames_read >= 20)
        kept = grabber.recent(0.0)
        gaps = [b[1] - a[1] for a, b in zip(kept, kept[1:])]
        assert kept and all(g >= 0.25 - 1e-9 for g in gaps)


def test_a_take_names_its_picture_at_once_and_the_file_is_sealed(tmp_path) -> None:
    room, src = _room(tmp_path, {"room-1": ("shelf-1",), "room-2": ("shelf-2",)})
    with _started(room):
        src["room-1"].push(_frame(90))
        wait_until(lambda: room.grabbers["room-1"].latest() is not None)
        ev = room.attach(Event("slot.sensed", "1-1-01", "shelf-1", {"slot": "1-1-01", "action": "take"}))
        ref = ev.data["picture"]
        assert isinstance(ref, str) and len(ref) == 32 and "picture_reason" not in ev.data
        assert room.drain()
        on_disk = next(tmp_path.rglob(f"{ref}.snap")).read_bytes()
        assert not on_disk.startswith(b"\xff\xd8") and b"JFIF" not in on_disk
        assert room.snapshots.load(ref).startswith(b"\xff\xd8\xff")
        # another key does not open it
        with pytest.raises(SnapshotError, match="decrypt"):
            SnapshotStore(tmp_path, key=bytes(32)).load(ref)


def test_a_camera_that_is_down_gives_no_picture_and_says_why(tmp_path) -> None:
    room, src = _room(tmp_path, {"room-1": ("door-entry",)})
    with _started(room):
        src["room-1"].push(_frame(5))
        wait_until(lambda: room.grabbers["room-1"].frames_read >= 1)
        src["room-1"].drop()
        wait_until(lambda: not room.grabbers["room-1"].connected)
        ev = room.attach(Event("door.opened", "door-entry", "door-entry", {}))
        assert ev.data == {"picture": None, "picture_reason": "camera_down"}
        assert room.stats.outstanding == 0  # nothing was queued: nothing to wait for


def test_events_no_camera_sees_say_so_and_others_are_left_alone(tmp_path) -> None:
    room, src = _room(tmp_path, {"room-1": ("shelf-1",)})
    ev = room.attach(Event("slot.sensed", "2-1-01", "shelf-2", {"slot": "2-1-01"}))
    assert ev.data["picture"] is None and ev.data["picture_reason"] == "not_seen"
    light = Event("light.set", "shelf-1", "station", {"x": 1})
    assert room.attach(light) is light


def test_the_place_of_each_witnessed_event() -> None:
    assert PLACES(Event("slot.sensed", "2-3-04", "shelf-2", {"slot": "2-3-04"})) == "shelf-2"
    assert PLACES(Event("door.opened", "door-exit", "door-exit", {})) == "door-exit"
    assert PLACES(Event("exit.refused", "kiosk-exit", "customer", {})) == "door-exit"
    assert PLACES(Event("alarm.raised", "1-1-01", "station", {})) == "shelf-1"
    assert PLACES(Event("alarm.raised", "door-entry", "station", {})) == "door-entry"
    assert PLACES(Event("alarm.raised", "kiosk-1", "station", {})) == ROOM
    assert PLACES(Event("parcel.shelved", "p1", "station", {})) is None


def test_an_alarm_keeps_a_sealed_clip_from_before_to_after(tmp_path) -> None:
    room, src = _room(tmp_path, {"room-1": ("shelf-1",), "room-2": ("shelf-1",)}, clip_before_s=0.3,
                      clip_after_s=0.3, clip_fps=20)
    with _started(room):
        for v in range(40):
            src["room-1"].push(_frame(v))
        wait_until(lambda: len(room.grabbers["room-1"].recent(0.0)) >= 5)
        ev = room.attach(Event("alarm.raised", "1-1-01", "station", {"kind": "slot.unexpected_take"}))
        assert ev.data["picture"] and ev.data["clip"]
        assert ev.data["pictures"]["room-2"] is None and ev.data["no_picture_from"]["room-2"]
        for v in range(40):
            src["room-1"].push(_frame(100 + v))
        assert room.drain()
        frames = room.snapshots.load_clip(ev.data["clip"])
        offsets = [t for t, _ in frames]
        assert min(offsets) < 0 < max(offsets)  # before and after the alarm
        assert all(j.startswith(b"\xff\xd8\xff") for _, j in frames)
        raw = next(tmp_path.rglob(f"{ev.data['clip']}.clip")).read_bytes()
        with pytest.raises(SnapshotError, match="not a clip"):
            decode_clip(raw)  # ciphertext, not the container


def test_a_full_queue_costs_the_picture_not_the_event(tmp_path) -> None:
    room, src = _room(tmp_path, {"room-1": ("shelf-1",)}, queue_max=1)
    room.grabbers["room-1"].start()  # frames, but no writer: the queue fills
    try:
        src["room-1"].push(_frame(1))
        wait_until(lambda: room.grabbers["room-1"].latest() is not None)
        first = room.attach(Event("slot.sensed", "1-1-01", "shelf-1", {"slot": "1-1-01"}))
        taken = room.grabbers["room-1"].latest()[1]
        wait_until(lambda: room.grabbers["room-1"].latest()[1] > taken)  # a new frame to write
        second = room.attach(Event("slot.sensed", "1-1-02", "shelf-1", {"slot": "1-1-02"}))
        assert first.data["picture"] and second.data["picture"] is None
        assert second.data["picture_reason"] == "writer_busy" and room.stats.busy == 1
    finally:
        room.stop()


def test_events_in_the_same_frame_share_its_picture_and_a_new_frame_gets_its_own(tmp_path) -> None:
    """A camera gives a few frames a second and a busy room many events in that time: the
    same frame is written once (#18: most picture writes of the week were repeats)."""
    room, src = _room(tmp_path, {"room-1": ("shelf-1",)})
    grabber = room.grabbers["room-1"]
    grabber.source.period = 0.5  # a frame every 0.5 s: the two events below fall in one
    with _started(room):
        src["room-1"].push(_frame(1))
        wait_until(lambda: grabber.latest() is not None)
        frame_at = grabber.latest()[1]
        a = room.attach(Event("slot.sensed", "1-1-01", "shelf-1", {"slot": "1-1-01"}))
        b = room.attach(Event("slot.sensed", "1-1-03", "shelf-1", {"slot": "1-1-03"}))
        same = grabber.latest()[1] == frame_at  # not moved on in between (a slow machine)
        src["room-1"].push(_frame(2))
        wait_until(lambda: grabber.latest()[1] > frame_at)
        c = room.attach(Event("slot.sensed", "1-1-02", "shelf-1", {"slot": "1-1-02"}))
        assert room.drain()
        files = len(list(tmp_path.rglob("*.snap")))
    assert a.data["picture"] and c.data["picture"] and c.data["picture"] != a.data["picture"]
    if same:
        assert b.data["picture"] == a.data["picture"] and room.stats.shared == 1
        assert room.stats.written == 2 and files == 2
    assert all(room.snapshots.load(e.data["picture"]) for e in (a, b, c))


def test_a_shared_picture_that_could_not_be_written_is_not_given_to_later_events(tmp_path) -> None:
    room, src = _room(tmp_path, {"room-1": ("shelf-1",)})
    grabber = room.grabbers["room-1"]
    real_save, failures = room.snapshots.save_as, []

    def save_once_failing(ref, jpeg):
        if not failures:
            failures.append(ref)
            raise OSError(28, "No space left on device")
        return real_save(ref, jpeg)

    room.snapshots.save_as = save_once_failing
    with _started(room):
        src["room-1"].push(_frame(1))
        wait_until(lambda: grabber.latest() is not None)
        grabber.source.period = 1.0  # no new frame for a second: both events see this one
        time.sleep(0.05)  # a read already under way ends
        a = room.attach(Event("slot.sensed", "1-1-01", "shelf-1", {"slot": "1-1-01"}))
        assert room.drain() and room.stats.failed == 1
        b = room.attach(Event("slot.sensed", "1-1-02", "shelf-1", {"slot": "1-1-02"}))
        assert room.drain()
    assert failures == [a.data["picture"]] and b.data["picture"] != a.data["picture"]
    assert room.snapshots.load(b.data["picture"])


def test_room_pictures_are_pruned_by_age_and_budget(tmp_path) -> None:
    import os

    store = SnapshotStore(tmp_path, key=bytes(32))
    jpeg = b"\xff\xd8\xff" + os.urandom(2000)
    for n in range(4):
        store.save_as(f"{n:032x}", jpeg)
    store.save_clip("f" * 32, [(0.0, jpeg)])
    old = tmp_path / ("0" * 2) / f"{0:032x}.snap"
    os.utime(old, (1_000_000.0, 1_000_000.0))
    assert store.prune(30, now=1_000_000.0 + 31 * 86400) == 1
    assert store.usage()[0] == 4
    removed, _ = store.prune_to(2 * 2100)
    assert removed >= 2 and store.usage()[1] <= 2 * 2100


class _started:
    def __init__(self, room: RoomCameras) -> None:
        self.room = room

    def __enter__(self) -> RoomCameras:
        return self.room.start()

    def __exit__(self, *exc: object) -> None:
        self.room.stop()
