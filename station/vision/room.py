"""Room cameras as witnesses: the picture of a take, a put, a door, an alarm or an exit (#21.3).

Each `room` camera runs a grabber that keeps its last few seconds of frames (a ring, at
`clip_fps`). When the store is about to append an event that a camera should witness
(`attach`, the store's `witness` hook), the newest fresh frame of every room camera that sees
the event's place is taken from its grabber without waiting, a random picture id is chosen
and written into the event's data, and the frame goes to a small writer thread through a
bounded queue. The writer encodes the JPEG, seals it (the snapshot store's key) and writes
it; for an alarm it also waits `clip_after_s` and writes a clip of the ring's frames from
`clip_before_s` before the alarm to `clip_after_s` after it.

Why the id is decided up front (ADR 0142): the reference must be in the same transaction as
the event, and encoding a frame (milliseconds) must not sit inside the station lock, in front
of a door or a light. A camera that is down, a stale frame or a full queue cost nothing but
the picture: the event says `"picture": null` and why.
"""

from __future__ import annotations

import logging
import math
import queue
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from station.store.eventlog import Event
from station.vision.cameras import FrameSource, LatestFrameGrabber
from station.vision.snapshots import SnapshotStore

log = logging.getLogger("station.vision.room")

JPEG_QUALITY = 80
# the place an alarm has when its subject is no shelf slot and no device: the whole room
ROOM = "room"
# event types a room camera witnesses, and whether they keep a clip
DOOR_TYPES = ("door.opened", "door.forced_open", "door.held_open", "door.emergency_release")
EXIT_TYPES = ("exit.passed", "exit.refused")


@dataclass(frozen=True)
class RoomCamera:
    id: str
    source: FrameSource
    sees: tuple[str, ...]


@dataclass
class _Job:
    ref: str
    camera: str
    frame: np.ndarray | None = None  # a snapshot
    clip_from: float = 0.0  # a clip: the grabber-clock window [clip_from, clip_to]
    clip_to: float = 0.0
    at: float = 0.0  # the event's moment on the grabber clock (clip frame offsets count from it)


@dataclass
class WriterStats:
    written: int = 0
    clips: int = 0
    failed: int = 0
    busy: int = 0  # pictures not taken because the queue was full
    shared: int = 0  # events given the picture an earlier event had of the same frame
    outstanding: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)


class RoomCameras:
    """The station's room cameras, the events they witness and the thread that writes pictures.

    `place_of(event)` names the shelf device, door or ROOM an event happened at (None: not an
    event a camera witnesses); bootstrap builds it from the layout (`places_from_config`)."""

    def __init__(self, cameras: Sequence[RoomCamera], snapshots: SnapshotStore,
                 place_of: Callable[[Event], str | None], *, max_age_s: float = 2.0,
                 clip_before_s: float = 3.0, clip_after_s: float = 3.0, clip_fps: float = 4.0,
                 queue_max: int = 64) -> None:
        self.snapshots = snapshots
        self.place_of = place_of
        self.max_age_s = max_age_s
        self.clip_before_s = clip_before_s
        self.clip_after_s = clip_after_s
        self.queue_max = queue_max
        ring = math.ceil((clip_before_s + clip_after_s + 1.0) * clip_fps) + 1
        self.cameras = {c.id: c for c in cameras}
        self.grabbers: dict[str, LatestFrameGrabber] = {
            c.id: LatestFrameGrabber(c.source, history=ring, history_interval=1.0 / clip_fps)
            for c in cameras}
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_max)
        self._pending: list[_Job] = []  # clips waiting for their "after" frames (writer thread only)
        self.stats = WriterStats()
        # per camera, the last frame handed to the writer (its capture time) and its picture:
        # events in the same instant share that picture instead of writing the frame again
        self._last_picture: dict[str, tuple[float, str]] = {}
        self._picture_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> RoomCameras:
        for g in self.grabbers.values():
            g.start()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="room-pictures", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Writes what is queued (pending clips with the frames there are), then stops."""
        self._stop.set()
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout)
            self._thread = None
        for g in self.grabbers.values():
            g.stop()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every picture handed to the writer is on disk (tests, shutdown)."""
        s = self.stats
        with s._cond:
            return s._cond.wait_for(lambda: s.outstanding == 0, timeout)

    # --- the hot path -------------------------------------------------------------------------

    def cameras_for(self, place: str) -> list[str]:
        if place == ROOM:
            return list(self.cameras)
        return [cid for cid, c in self.cameras.items() if place in c.sees]

    def attach(self, event: Event) -> Event:
        """The event with its pictures named (the store's witness hook). Never waits: a lock
        held for a frame assignment and a non-blocking queue put are all it costs."""
        place = self.place_of(event)
        if place is None or "picture" in event.data:
            return event
        clip = event.type == "alarm.raised"
        data = dict(event.data)
        data.update(self.witness(place, clip=clip))
        return replace(event, data=data)

    def witness(self, place: str, *, clip: bool = False) -> dict[str, Any]:
        """What an event at `place` carries: `picture` (the first camera's id, or None and
        `picture_reason`), `pictures` when several cameras see it, `clip` for an alarm."""
        cams = self.cameras_for(place)
        if not cams:
            return {"picture": None, "picture_reason": "not_seen"}
        if not self.snapshots.enabled:
            return {"picture": None, "picture_reason": "snapshots_off"}
        refs: dict[str, str | None] = {}
        reasons: dict[str, str] = {}
        clip_ref: str | None = None
        for cam in cams:
            grabber = self.grabbers[cam]
            got = grabber.fresh(self.max_age_s)
            if got is None:
                # stale: connected, but its newest frame is too old; down: not connected, or
                # never a frame yet (a source that opens and then delivers nothing is down,
                # however its connection flickers between reads)
                reasons[cam] = "stale" if grabber.connected and grabber.latest() is not None else "camera_down"
                refs[cam] = None
                continue
            ref = self._picture_of(cam, got)
            if ref is None:
                reasons[cam] = "writer_busy"
                refs[cam] = None
                continue
            refs[cam] = ref
            if clip and clip_ref is None:
                now = grabber.now()
                cref = secrets.token_hex(16)
                if self._submit(_Job(cref, cam, clip_from=now - self.clip_before_s,
                                     clip_to=now + self.clip_after_s, at=now)):
                    clip_ref = cref
        first = next((r for r in refs.values() if r is not None), None)
        out: dict[str, Any] = {"picture": first}
        if first is None:
            out["picture_reason"] = reasons[cams[0]]
        if len(cams) > 1:
            out["pictures"] = refs
            if reasons:
                out["no_picture_from"] = reasons
        if clip:
            out["clip"] = clip_ref
        return out

    def _picture_of(self, cam: str, got: tuple[np.ndarray, float]) -> str | None:
        """The picture of this frame: the one already handed to the writer if this frame was
        (a camera gives a few frames a second, a busy room many events in that time), else
        a new one queued; None if the writer's queue is full."""
        with self._picture_lock:
            last = self._last_picture.get(cam)
            if last is not None and last[0] == got[1]:
                with self.stats._cond:
                    self.stats.shared += 1
                return last[1]
            ref = secrets.token_hex(16)
            if not self._submit(_Job(ref, cam, frame=got[0])):
                return None
            self._last_picture[cam] = (got[1], ref)
            return ref

    def _submit(self, job: _Job) -> bool:
        s = self.stats
        with s._cond:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                s.busy += 1
                return False
            s.outstanding += 1
        return True

    # --- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            wait = 0.05 if stopping else 0.5
            if self._pending and not stopping:
                wait = min(wait, max(0.0, min(j.clip_to - self._clock_of(j) for j in self._pending)))
            try:
                job = self._queue.get(timeout=wait)
            except queue.Empty:
                job = None
            if job is not None:
                if job.frame is not None:
                    self._write(job)
                else:
                    self._pending.append(job)
            stopping = self._stop.is_set()
            self._write_due(force=stopping)
            if stopping and self._queue.empty() and not self._pending:
                return

    def _clock_of(self, job: _Job) -> float:
        return self.grabbers[job.camera].now()

    def _write_due(self, force: bool = False) -> None:
        keep: list[_Job] = []
        for job in self._pending:
            if force or self._clock_of(job) >= job.clip_to:
                self._write(job)
            else:
                keep.append(job)
        self._pending = keep

    def _write(self, job: _Job) -> None:
        s = self.stats
        try:
            if job.frame is not None:
                self.snapshots.save_as(job.ref, _jpeg(job.frame))
                ok_kind = "written"
            else:
                frames = self.grabbers[job.camera].recent(job.clip_from, job.clip_to)
                if not frames:
                    raise RuntimeError("no frames in the clip's window")
                self.snapshots.save_clip(job.ref, [(t - job.at, _jpeg(f)) for f, t in frames])
                ok_kind = "clips"
            with s._cond:
                setattr(s, ok_kind, getattr(s, ok_kind) + 1)
        except Exception as exc:  # a full disk, a bad frame: the event says the id, the file is absent
            log.warning("room picture %s from %s not kept: %s", job.ref[:8], job.camera, exc)
            with self._picture_lock:  # later events on this frame try a picture of their own
                if self._last_picture.get(job.camera, (0.0, ""))[1] == job.ref:
                    del self._last_picture[job.camera]
            with s._cond:
                s.failed += 1
        finally:
            with s._cond:
                s.outstanding -= 1
                s._cond.notify_all()


def _jpeg(frame: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("frame could not be encoded as JPEG")
    return buf.tobytes()


def places_from_config(shelf_devices: Mapping[int, str], doors: Sequence[str], exit_door: str
                       ) -> Callable[[Event], str | None]:
    """The place of a witnessed event: a take or put (`slot.sensed`) at its shelf's device, a
    door event at its door, an exit decision at the exit door, an alarm at its subject's
    shelf or door, or anywhere in the room when its subject is neither (a kiosk's lockout)."""
    door_set = set(doors)
    devices = set(shelf_devices.values()) | door_set

    def shelf_of(subject: str) -> str | None:
        head = subject.split("-", 1)[0]
        if head.isdigit() and subject.count("-") == 2:
            return shelf_devices.get(int(head))
        return None

    def place_of(event: Event) -> str | None:
        t = event.type
        if t == "slot.sensed":
            return shelf_of(str(event.data.get("slot", event.subject))) or \
                (event.actor if event.actor in devices else None)
        if t in DOOR_TYPES:
            return event.subject if event.subject in door_set else None
        if t in EXIT_TYPES:
            return exit_door
        if t == "alarm.raised":
            subject = event.subject
            if subject in devices:
                return subject
            return shelf_of(subject) or ROOM
        return None

    return place_of
