from __future__ import annotations

import itertools
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from station.config import CameraConfig
from station.vision.cameras import (
    CaptureSource,
    HttpSnapshotSource,
    LatestFrameGrabber,
    SimulatedSource,
    SourceError,
    open_source,
)


def numbered(i: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A frame whose mean brightness encodes i, so a test can tell frames apart."""
    return np.full((size[1], size[0], 3), (i * 20) % 250, np.uint8)


@pytest.fixture
def video_file(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (160, 120))
    assert writer.isOpened()
    for i in range(10):
        writer.write(numbered(i))
    writer.release()
    return path


def test_open_source_picks_the_kind_from_the_config(tmp_path) -> None:
    sims: dict[str, SimulatedSource] = {}
    cam = CameraConfig(id="cam-face", role="face", source="sim:face")
    assert open_source(cam, sims) is sims["face"]
    assert isinstance(open_source(CameraConfig(id="c", role="room", source="0")), CaptureSource)
    assert isinstance(open_source(CameraConfig(id="c", role="room", source="rtsp://h/s")),
                      CaptureSource)
    snap = open_source(CameraConfig(id="c", role="room",
                                    source="snapshot+http://127.0.0.1:1/a.jpg"))
    assert isinstance(snap, HttpSnapshotSource) and snap.url == "http://127.0.0.1:1/a.jpg"


def test_grabber_reads_a_video_file_and_reopens_it_at_the_end(video_file) -> None:
    source = CaptureSource(str(video_file))
    with LatestFrameGrabber(source, backoff_initial=0.05, backoff_max=0.1) as grabber:
        first = grabber.wait_frame(timeout=5)
        assert first is not None and first[0].shape == (120, 160, 3)
        deadline = time.monotonic() + 10
        while grabber.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert grabber.reconnects >= 1  # end of file counts as a dropped stream
        assert grabber.wait_frame(after=grabber.latest()[1], timeout=5) is not None
    assert not grabber.connected


def test_grabber_keeps_only_the_latest_frame() -> None:
    sim = SimulatedSource("s", period=0.0)
    for i in range(5):
        sim.push(numbered(i))
    with LatestFrameGrabber(sim) as grabber:
        time.sleep(0.2)
        frame, _ = grabber.latest()
        assert frame.mean() == pytest.approx(numbered(4).mean())


def test_grabber_reconnects_after_the_source_drops() -> None:
    sim = SimulatedSource("s", period=0.005)
    sim.push(numbered(1))
    with LatestFrameGrabber(sim, backoff_initial=0.02, backoff_max=0.05) as grabber:
        assert grabber.wait_frame(timeout=2) is not None
        sim.drop()
        deadline = time.monotonic() + 3
        while grabber.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert grabber.reconnects >= 1 and sim.opens >= 2
        sim.push(numbered(3))
        got = grabber.wait_frame(after=grabber.latest()[1], timeout=2)
        assert got is not None


def test_frames_returns_distinct_frames_spaced_in_time() -> None:
    sim = SimulatedSource("s", period=0.005)
    sim.push(numbered(0))
    with LatestFrameGrabber(sim) as grabber:
        frames = grabber.frames(4, interval=0.02, timeout=3)
    stamps = [ts for _, ts in frames]
    assert len(frames) == 4 and stamps == sorted(set(stamps))
    assert all(b - a >= 0.02 for a, b in itertools.pairwise(stamps))


def test_frames_since_a_moment_never_hand_out_the_frame_from_before_it() -> None:
    """The previous person's face, still the newest frame when a courier asks, is not one of
    the courier's frames."""
    sim = SimulatedSource("s", period=0.005)
    sim.push(numbered(1))
    with LatestFrameGrabber(sim) as grabber:
        before = grabber.wait_frame(timeout=2)
        assert before is not None
        asked = grabber.now()
        sim.push(numbered(2))
        frames = grabber.frames(3, interval=0.02, timeout=3, since=asked)
    assert len(frames) == 3 and all(ts > asked > before[1] for _, ts in frames)
    assert frames[-1][0].mean() == numbered(2).mean()


def test_missing_camera_is_retried_not_fatal(tmp_path) -> None:
    grabber = LatestFrameGrabber(CaptureSource(str(tmp_path / "absent.avi")),
                                 backoff_initial=0.01, backoff_max=0.02).start()
    time.sleep(0.1)
    assert grabber.latest() is None and grabber.last_error
    grabber.stop()
    assert grabber.frames(1, timeout=0.1) == []


def test_stop_is_prompt_even_while_backing_off(tmp_path) -> None:
    grabber = LatestFrameGrabber(CaptureSource(str(tmp_path / "absent.avi")),
                                 backoff_initial=30, backoff_max=30).start()
    time.sleep(0.05)
    started = time.monotonic()
    grabber.stop()
    assert time.monotonic() - started < 5


def test_http_snapshot_source_fetches_one_jpeg_per_read() -> None:
    _ok, jpeg = cv2.imencode(".jpg", numbered(5))
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            if self.path != "/snap.jpg":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(jpeg.tobytes())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        source = HttpSnapshotSource(f"snapshot+http://127.0.0.1:{port}/snap.jpg", period=0)
        source.open()
        assert source.read().shape == (120, 160, 3)
        source.read()
        assert hits == ["/snap.jpg", "/snap.jpg"]
        source.close()
        missing = HttpSnapshotSource(f"snapshot+http://127.0.0.1:{port}/nope.jpg", period=0)
        missing.open()
        with pytest.raises(SourceError):
            missing.read()
        missing.close()
    finally:
        server.shutdown()
        server.server_close()


def test_http_snapshot_source_refuses_an_endless_or_dripping_answer() -> None:
    """review: a snapshot URL that streams without end (a camera's MJPEG video URL given as
    its still-image URL) was read into memory until the station ran out of it; one that
    drips a byte at a time never hit the per-read timeout. Both are now a SourceError: the
    body is capped in bytes and the whole answer in time."""
    from station.vision import cameras

    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            chunk = b"\xff" * 65536
            try:
                while not stop.is_set():
                    if self.path == "/drip":
                        self.wfile.write(b"\xff")
                        self.wfile.flush()
                        stop.wait(0.05)
                    else:
                        self.wfile.write(chunk)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    outcome: dict[str, object] = {}

    def read_both() -> None:
        port = server.server_address[1]
        for path in ("/stream", "/drip"):
            source = HttpSnapshotSource(f"snapshot+http://127.0.0.1:{port}{path}", period=0, timeout=0.5)
            source.open()
            try:
                source.read()
                outcome[path] = "a frame?"
            except SourceError as exc:
                outcome[path] = str(exc)
            finally:
                source.close()

    try:
        reader = threading.Thread(target=read_both, daemon=True)
        reader.start()
        reader.join(60)  # a fuse, not a measurement: an unbounded read never comes back
        assert not reader.is_alive(), "the snapshot read never ended"
        assert "larger than" in str(outcome["/stream"]), outcome
        assert "took longer than" in str(outcome["/drip"]), outcome
        assert cameras.MAX_SNAPSHOT_BYTES <= 32 * 1024 * 1024
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_a_camera_urls_password_is_never_in_its_name_or_errors() -> None:
    """review: a source's name (the configured URL) goes into every SourceError, and the
    document camera's last error into a courier's 503: `http://user:pass@cam/...` named the
    camera's password there."""
    from station.vision.cameras import CaptureSource, redacted

    assert redacted("rtsp://admin:s3cret@10.0.0.9:554/stream1") == "rtsp://admin:***@10.0.0.9:554/stream1"
    assert redacted("snapshot+http://admin:s3cret@cam/snap.jpg?x=@") == "snapshot+http://admin:***@cam/snap.jpg?x=@"
    assert redacted("http://cam/snap.jpg") == "http://cam/snap.jpg"
    assert redacted("0") == "0"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = HttpSnapshotSource(f"snapshot+http://admin:s3cret@127.0.0.1:{port}/snap.jpg", period=0, timeout=0.5)
    source.open()
    with pytest.raises(SourceError) as err:
        source.read()
    source.close()
    assert "s3cret" not in str(err.value) and "s3cret" not in source.name
    assert "s3cret" not in CaptureSource("rtsp://admin:s3cret@127.0.0.1:1/x").name
