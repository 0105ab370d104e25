"""Camera sources behind one small interface, and a grabber that always has the latest frame.

Why a grabber thread: cv2.VideoCapture buffers frames; reading only when a decision is
needed hands out a frame seconds old (the person has moved, the parcel is gone). The grabber
reads continuously, keeps only the newest frame, and reopens a dropped stream with backoff
(RTSP cameras drop on Wi-Fi hiccups and reboots), so a caller never blocks on a dead camera.

Sources, chosen from `CameraConfig.source`:
    "0", "1"                      local device index (cv2.VideoCapture)
    rtsp://..., http(s)://...     network stream (cv2.VideoCapture, FFmpeg backend)
    snapshot+http(s)://...        one JPEG per read, fetched over HTTP (many IP cameras)
    sim:NAME                      in-process SimulatedSource (the simulator pushes frames)
    anything else                 a video file path (played at its own frame rate)
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import cv2
import httpx
import numpy as np

from station.vision.images import ImageError, decode_image, ensure_frame


class SourceError(RuntimeError):
    """A source that cannot be opened or stopped delivering; the grabber retries."""


class FrameSource(Protocol):
    name: str

    def open(self) -> None: ...

    def read(self) -> np.ndarray:
        """The next frame (BGR uint8); raises SourceError when the source has dropped."""
        ...

    def close(self) -> None: ...


def redacted(url: str) -> str:
    """A camera URL as it may be shown: `rtsp://user:pass@cam/...` names its password, and a
    source's name goes into errors (a courier's 503, the log); the user stays, the password not."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    userinfo, _, host = authority.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{head}://{user}:***@{host}{slash}{path}" if ":" in userinfo else url


class CaptureSource:
    """cv2.VideoCapture: device index, stream URL or video file."""

    def __init__(self, target: str, *, realtime: bool | None = None) -> None:
        self.name = redacted(target)
        self._target: int | str = int(target) if target.isdigit() else target
        is_file = isinstance(self._target, str) and "://" not in self._target
        # files would otherwise be read as fast as the CPU allows
        self.realtime = is_file if realtime is None else realtime
        self._cap: cv2.VideoCapture | None = None
        self._period = 0.0
        self._next = 0.0

    def open(self) -> None:
        cap = cv2.VideoCapture(self._target)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._period = 1.0 / fps if self.realtime and 0 < fps < 1000 else 0.0
        self._next = time.monotonic()
        self._cap = cap

    def read(self) -> np.ndarray:
        if self._cap is None:
            raise SourceError(f"{self.name}: not open")
        if self._period:
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next = max(self._next + self._period, time.monotonic() - self._period)
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise SourceError(f"{self.name}: stream ended or dropped")
        return ensure_frame(frame)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# one still image from an IP camera is well under this (a 4K JPEG is a few MiB)
MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024


class HttpSnapshotSource:
    """An IP camera's still-image URL, fetched once per read."""

    def __init__(self, url: str, *, timeout: float = 3.0, period: float = 0.2) -> None:
        self.name = redacted(url)
        self.url = url.removeprefix("snapshot+")
        self.timeout = timeout
        self.period = period  # do not hammer a small camera's web server
        self._client: httpx.Client | None = None
        self._last = 0.0

    def open(self) -> None:
        self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)

    def read(self) -> np.ndarray:
        if self._client is None:
            raise SourceError(f"{self.name}: not open")
        wait = self._last + self.period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()
        deadline = self._last + self.timeout
        body = bytearray()
        try:
            # streamed, capped in bytes and in time: a video URL given as the still-image URL
            # never ends, and a camera that drips a byte at a time never trips the per-read
            # timeout; read whole, either would fill the station's memory or hold the grabber
            with self._client.stream("GET", self.url) as response:
                if response.status_code != 200:
                    raise SourceError(f"{self.name}: HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_SNAPSHOT_BYTES:
                        raise SourceError(f"{self.name}: the snapshot is larger than {MAX_SNAPSHOT_BYTES} bytes"
                                          " (a video URL given as the still-image URL?)")
                    if time.monotonic() > deadline:
                        raise SourceError(f"{self.name}: the snapshot took longer than {self.timeout:g} s")
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.name}: {exc}") from None
        try:
            return decode_image(bytes(body))
        except ImageError as exc:
            raise SourceError(f"{self.name}: {exc}") from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class SimulatedSource:
    """Frames pushed in-process (by the simulator or a test).

    `read` returns the next pushed frame, or the last one again when none is waiting (a
    camera looking at a still scene keeps producing frames). `drop()` makes reads fail until
    the source is reopened, to exercise reconnection."""

    def __init__(self, name: str = "sim", *, period: float = 0.01) -> None:
        self.name = name
        self.period = period
        self._queue: collections.deque[np.ndarray] = collections.deque(maxlen=256)
        self._last: np.ndarray | None = None
        self._lock = threading.Lock()
        self._open = False
        self._dropped = False
        self._unplugged = False
        self.opens = 0

    def push(self, frame: np.ndarray | bytes) -> None:
        image = decode_image(frame) if isinstance(frame, (bytes, bytearray)) \
            else ensure_frame(frame)
        with self._lock:
            self._queue.append(image)

    def drop(self) -> None:
        with self._lock:
            self._dropped = True

    def unplug(self, unplugged: bool = True) -> None:
        """A camera that stays down: reads fail and opening fails until plugged in again."""
        with self._lock:
            self._unplugged = unplugged
            self._dropped = self._dropped or unplugged

    def open(self) -> None:
        with self._lock:
            if self._unplugged:
                raise SourceError(f"{self.name}: unplugged")
            self._dropped = False
            self._open = True
            self.opens += 1

    def read(self) -> np.ndarray:
        if self.period:
            time.sleep(self.period)
        with self._lock:
            if not self._open or self._dropped:
                raise SourceError(f"{self.name}: dropped")
            if self._queue:
                self._last = self._queue.popleft()
            if self._last is None:
                raise SourceError(f"{self.name}: no frame yet")
            return self._last

    def close(self) -> None:
        with self._lock:
            self._open = False


def open_source(camera: Any, simulated: dict[str, SimulatedSource] | None = None
                ) -> FrameSource:
    """The source a CameraConfig names (not yet opened: the grabber opens it). Simulated
    sources come from `simulated` when given, so the simulator and the station share them."""
    source = str(camera.source)
    if source.startswith("sim:"):
        name = source[4:] or str(getattr(camera, "id", "sim"))
        if simulated is not None:
            return simulated.setdefault(name, SimulatedSource(name))
        return SimulatedSource(name)
    if source.startswith(("snapshot+http://", "snapshot+https://")):
        return HttpSnapshotSource(source)
    # device index, stream URL or file; a missing file is left to the grabber, which reports
    # it in last_error and retries (the file may be mounted later)
    return CaptureSource(source)


class LatestFrameGrabber:
    """Reads a source on its own thread and keeps only the newest frame."""

    def __init__(self, source: FrameSource, *, backoff_initial: float = 0.2,
                 backoff_max: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 history: int = 0, history_interval: float = 0.0) -> None:
        self.source = source
        # room cameras keep the last `history` frames too (an event clip's "before"), at most
        # one per `history_interval` s: a 25 fps stream need not fill memory with near twins
        self._ring: collections.deque[tuple[np.ndarray, float]] = collections.deque(maxlen=max(history, 1))
        self._history = history
        self._history_interval = history_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._clock = clock
        self._latest: tuple[np.ndarray, float] | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        self.reconnects = 0
        self.frames_read = 0
        self.last_error: str | None = None

    def start(self) -> LatestFrameGrabber:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"grab:{self.source.name}",
                                            daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> LatestFrameGrabber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        backoff = self.backoff_initial
        opened_before = False
        while not self._stop.is_set():
            try:
                self.source.open()
            except (SourceError, OSError, cv2.error) as exc:
                self.last_error = str(exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            if opened_before:
                self.reconnects += 1
            opened_before = True
            self.connected = True
            try:
                while not self._stop.is_set():
                    frame = self.source.read()
                    with self._cond:
                        self._latest = (frame, self._clock())
                        if self._history and (not self._ring or self._latest[1] - self._ring[-1][1]
                                              >= self._history_interval):
                            self._ring.append(self._latest)
                        self.frames_read += 1
                        self._cond.notify_all()
                    backoff = self.backoff_initial
            except (SourceError, OSError, cv2.error, ImageError) as exc:
                self.last_error = str(exc)
            finally:
                self.connected = False
                try:
                    self.source.close()
                except (SourceError, OSError, cv2.error):
                    pass
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    def latest(self) -> tuple[np.ndarray, float] | None:
        """The newest frame and its capture time (the grabber's clock), or None."""
        with self._cond:
            return self._latest

    def fresh(self, max_age: float) -> tuple[np.ndarray, float] | None:
        """The newest frame if it is at most `max_age` s old, else None; never waits (a
        camera that is down must not delay the door or the light that asked)."""
        with self._cond:
            got = self._latest
        if got is None or self._clock() - got[1] > max_age or not self.connected:
            return None
        return got

    def recent(self, since: float, until: float = float("inf")) -> list[tuple[np.ndarray, float]]:
        """The kept frames captured in [since, until] (grabber clock), oldest first."""
        with self._cond:
            return [f for f in self._ring if since <= f[1] <= until] if self._history else []

    def now(self) -> float:
        """The grabber's clock: what frame times are measured on."""
        return self._clock()

    def wait_frame(self, after: float | None = None, timeout: float = 2.0
                   ) -> tuple[np.ndarray, float] | None:
        """A frame newer than `after` (any frame if None), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._latest is not None and (after is None or self._latest[1] > after):
                    return self._latest
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(remaining)

    def frames(self, n: int, interval: float = 0.1, timeout: float = 5.0,
               since: float | None = None) -> list[tuple[np.ndarray, float]]:
        """n distinct frames at least `interval` apart (for multi-frame face decisions);
        fewer if the camera stops delivering within `timeout`. With `since` (the grabber's
        clock), only frames captured after it: the newest frame at the moment of asking can
        be a frame period old and show the person who stood there before."""
        out: list[tuple[np.ndarray, float]] = []
        deadline = time.monotonic() + timeout
        after: float | None = since
        while len(out) < n and time.monotonic() < deadline:
            got = self.wait_frame(after=after, timeout=max(deadline - time.monotonic(), 0))
            if got is None:
                break
            out.append(got)
            # the next frame must be captured at least `interval` after this one
            after = got[1] + interval - 1e-9 if interval > 0 else got[1]
        return out

    def iter_frames(self, timeout: float = 2.0) -> Iterator[tuple[np.ndarray, float]]:
        last_ts: float | None = None
        while not self._stop.is_set():
            got = self.wait_frame(after=last_ts, timeout=timeout)
            if got is None:
                return
            last_ts = got[1]
            yield got
