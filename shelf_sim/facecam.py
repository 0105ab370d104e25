"""The entry's face camera in a simulated room, and what stands in front of it.

The camera is an IP camera's still-image URL served by this process (`CameraServer`): the
station reads it with its own `HttpSnapshotSource` through `snapshot+http://...` (the
interface of many real IP cameras), in a station in this process and in a station process
alike. So a courier's face goes the real way: the kiosk asks `POST /api/kiosk/courier/face`
without frames, the station grabs eight frames from its face camera and makes the real
detection, match, blink and anti-spoof decision.

Why the picture advances per frame taken and not per wall second: the station's grabber
reads the camera every 0.2 s and takes eight consecutive reads, starting whenever its
request handler gets there. A person blinking on a wall clock would be caught mid-blink or
between blinks depending on the machine's load (measured: a periodic blink was missed in
5-20 % of entries), and a seed must decide the outcome. Here the courier's face is open,
open, closed, open, open, closed... frame by frame the camera serves, so any eight
consecutive frames hold two blinks with open eyes on both sides: a courier who blinks when
the kiosk says "look at the camera and blink", as the station expects (docs/simulator.md).

The frames are made from the test faces gathered by `make test` (tests/data/gather.py) with
the eye-closing renderings of shelf_sim/blinks.py and the attacks of shelf_sim/spoofs.py; the
station's engine finds the eye landmarks they need (run once per face, at the start)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# The test portraits on which dlib's 68 landmarks follow our rendered blink clearly enough
# for the station's blink check (corrected eye ratio 0.48 and 0.35, its limit 0.7), and the
# rendering that does it; tests/sim/test_face_entry.py holds each one. Tried and left out
# (ratio 0.7-1.0 whatever the rendering and wobble: dlib's lids barely move): perry,
# schwimmer, obama-3, biden, kudrow, aniston; hanks-1 blinks but the texture model calls the
# portrait a print (docs/faces.md); leblanc-1 blinks but is too soft to enrol. One person
# per face courier: two couriers with one face would be "ambiguous" to the matcher.
LIVE_FACES: tuple[tuple[str, str], ...] = (
    ("faces/obama-2.png", "paint"),
    ("faces/collins-1.png", "paint+squash"),
)
DEFAULT_FACES_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "cache"
HOW = "run `make testdata` (python -m tests.data.gather) to gather the test faces"
# per frame the camera serves: False open, True closed (see the module docstring)
BLINK_CYCLE = (False, False, True)
SPOOFS = ("phone", "print")


class FacesMissing(RuntimeError):
    """The test faces a face scenario needs are not on disk."""


def _jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("frame could not be encoded")
    return bytes(buf)


def empty_room() -> bytes:
    """What the face camera sees with nobody in front of it: a wall, no face."""
    from .spoofs import FRAME

    h, w = FRAME
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    wall = (np.array([150, 155, 160], np.float32) * (1 - t) + np.array([90, 95, 100], np.float32) * t)
    return _jpeg(np.broadcast_to(wall, (h, w, 3)).astype(np.uint8))


@dataclass(frozen=True)
class FaceKit:
    """Everything the simulator shows of one test person: the photo the operator enrols,
    and the camera frames of the courier themself and of two attacks on them."""

    name: str
    enrol_png: bytes
    live: tuple[bytes, ...]         # the frame cycle of the courier blinking at the camera
    phone: tuple[bytes, ...]        # the same blinking video replayed on a phone held up
    printed: tuple[bytes, ...]      # a printed photo of them, held up and moved a little

    def scene(self, kind: str) -> tuple[bytes, ...]:
        return {"live": self.live, "phone": self.phone, "print": self.printed}[kind]


def _shut(image: np.ndarray, landmarks: np.ndarray, how: str) -> np.ndarray:
    from .blinks import close_eyes, squash_eyes

    if how == "paint":
        return close_eyes(image, landmarks)
    if how == "squash":
        return squash_eyes(image, landmarks, keep=0.05)
    if how == "paint+squash":
        return close_eyes(squash_eyes(image, landmarks, keep=0.05), landmarks)
    raise ValueError(f"unknown eye closing {how!r}")


def _cycle(open_frame: np.ndarray, closed_frame: np.ndarray) -> list[np.ndarray]:
    """One blink cycle, frame by frame (BLINK_CYCLE)."""
    return [closed_frame if shut else open_frame for shut in BLINK_CYCLE]


def build_kit(directory: Path, file: str, how: str, engine: Any, spoofs: bool = True) -> FaceKit:
    """The kit of one portrait. `engine` is a station FaceEngine (for the eye landmarks);
    without `spoofs` the attack frames are left empty (rendering a phone costs ~0.3 s)."""
    from .blinks import wobble
    from .spoofs import phone_screen, printed_photo

    path = directory / file
    image = cv2.imread(str(path))
    if image is None:
        raise FacesMissing(f"{path} missing or unreadable: {HOW}")
    faces = engine.analyse(image, landmarks=True, max_faces=1)
    if not faces or faces[0].landmarks is None:
        raise FacesMissing(f"{path}: no face found in the test portrait")
    # one open and one closed frame, each with the small non-rigid wobble of a real face
    # against the photo it came from; every open frame alike, so the blink check's open
    # level is the open frame's and the closed frame's ratio to it is the same every time
    open_frame = wobble(image, seed=0)
    closed_frame = wobble(_shut(image, faces[0].landmarks, how), seed=2)
    live = _cycle(open_frame, closed_frame)
    phone: list[np.ndarray] = []
    printed: list[np.ndarray] = []
    if spoofs:
        # the phone replays the courier's own blinking video (turned sideways, as the test
        # of the entry path holds it): the blink is there, only the screen gives it away
        phone = _cycle(*(phone_screen(f, seed=i, screen=(190, 330), height_frac=0.7)
                         for i, f in enumerate((open_frame, closed_frame))))
        printed = [printed_photo(image, seed=i) for i in range(2)]
    ok, png = cv2.imencode(".png", image)
    assert ok
    return FaceKit(Path(file).stem, bytes(png), tuple(_jpeg(f) for f in live),
                   tuple(_jpeg(f) for f in phone), tuple(_jpeg(f) for f in printed))


def faces_dir(configured: str = "") -> Path:
    """The directory of the gathered test faces (the scenario's `face_images`, else this
    checkout's tests/data/cache); FacesMissing when the faces are not there."""
    directory = Path(configured) if configured else DEFAULT_FACES_DIR
    missing = [f for f, _ in LIVE_FACES if not (directory / f).is_file()]
    if missing:
        raise FacesMissing(f"no test faces in {directory} ({', '.join(missing)} missing): {HOW}")
    return directory


def load_kits(n: int, directory: Path | None = None, spoofs: bool = True) -> list[FaceKit]:
    """The first `n` people of LIVE_FACES, rendered (about a second of CPU each, and the
    face engine's loading once). Raises FacesMissing when the test faces are not gathered."""
    if n <= 0:
        return []
    directory = faces_dir(str(directory) if directory else "")
    from station.vision.faces import FaceEngine

    engine = FaceEngine()
    return [build_kit(directory, f, how, engine, spoofs) for f, how in LIVE_FACES[:n]]


class SimCamera:
    """One camera of the server: shows a scene, one frame per read, cycling, until cleared."""

    def __init__(self, idle: bytes) -> None:
        self._idle = idle
        self._scene: tuple[bytes, ...] = ()
        self._next = 0
        self._cond = threading.Condition()
        self.reads = 0

    def show(self, frames: Sequence[bytes]) -> None:
        """From the next read on, `frames` in turn (and round again)."""
        with self._cond:
            self._scene, self._next = tuple(frames), 0

    def clear(self) -> None:
        """Nobody in front of the camera any more."""
        with self._cond:
            self._scene, self._next = (), 0

    def wait_shown(self, timeout: float = 5.0) -> bool:
        """Wait until the scene's first frame has been read. The station's grabber reads one
        frame at a time, so every frame of the scene before has its capture time by then: a
        decision asked for now can hold none of them (bootstrap's grab_face_frames `since`)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._next > 0 or not self._scene, timeout)

    def read(self) -> bytes:
        with self._cond:
            self.reads += 1
            if not self._scene:
                return self._idle
            frame = self._scene[self._next % len(self._scene)]
            self._next += 1
            self._cond.notify_all()
            return frame


class CameraServer:
    """IP cameras for a simulated room: GET /<name>.jpg is the camera's current still (503
    while a camera's reader has none: a camera that is down)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cameras: dict[str, SimCamera] = {}
        self._readers: dict[str, Callable[[], bytes | None]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the station's httpx client keeps its connection
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802
                read = server._readers.get(self.path.split("?")[0].strip("/").removesuffix(".jpg"))
                body = None if read is None else read()
                if body is None:
                    self.send_response(404 if read is None else 503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "image/jpeg")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.base = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="sim-cameras", daemon=True)
        self._thread.start()

    def serve(self, name: str, read: Callable[[], bytes | None]) -> str:
        """Serve `read()` as camera `name`'s still; returns the station's `source` for it."""
        self._readers[name] = read
        return self.source(name)

    def add(self, name: str, idle: bytes | None = None) -> SimCamera:
        camera = self.cameras[name] = SimCamera(idle if idle is not None else empty_room())
        self.serve(name, camera.read)
        return camera

    def source(self, name: str) -> str:
        """The `source` of a station camera config that reads this camera."""
        return f"snapshot+{self.base}/{name}.jpg"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
