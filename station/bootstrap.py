"""Wiring lives here and nowhere else: config + secrets in, a running station out.

`build_station` assembles the store, device link, outbox, flows, vision and API; `Station`
starts and stops their threads in order. The simulator and the tests use the same function
so what they exercise is what runs in a parcel room."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from station.api.app import create_app
from station.api.services import Services
from station.config import Secrets, StationConfig
from station.devices.link import DeviceEvent, DeviceLink, Light
from station.domain.lights import LightSpec
from station.flows.context import Ctx
from station.flows.core import StationCore, Ticker
from station.flows.device_log import DeviceLogWriter
from station.flows.housekeeping import Housekeeper, HousekeepingThread
from station.flows.shelf_audit import ShelfAudit
from station.homeassistant import HomeAssistantBridge
from station.metrics import LatencyMetrics, StationCollector, StationMetrics
from station.notify.messages import StationInfo
from station.notify.outbox import Dispatcher, Outbox
from station.notify.senders import build_senders
from station.store.backup import BackupError, RunLock
from station.store.db import Store
from station.store.eventlog import Event
from station.store.retention import Retention
from station.store.space import DiskBudget
from station.upstream import UpstreamForwarder

log = logging.getLogger("station")


class LinkPort:
    """The device link as the flows see it: lights arrive as domain LightSpecs. Every command
    sent is noted for the round-trip histogram (its outcome arrives as a device event)."""

    def __init__(self, link: DeviceLink, latency: LatencyMetrics | None = None) -> None:
        self.link = link
        self.latency = latency

    def _sent(self, handle: Any) -> Any:
        if self.latency is not None and getattr(handle, "cmd_id", None):
            self.latency.command_sent(handle.cmd_id)
        return handle

    def replace_lights(self, device: str, lights: Mapping[tuple[int, int], LightSpec]) -> Any:
        return self._sent(self.link.replace_lights(
            device, {rc: Light(tuple(s.colours), s.pattern, s.ttl_s) for rc, s in lights.items()}))  # type: ignore[arg-type]

    def unlock(self, door: str, pulse_s: float | None = None) -> Any:
        return self._sent(self.link.unlock(door, pulse_s))

    def is_online(self, device: str) -> bool:
        return self.link.is_online(device)


class Vision:
    """Faces and codes for the API, loaded lazily: dlib's models take a second to load and
    a station without a face camera never needs them."""

    def __init__(self, config: StationConfig, secrets: Secrets, store: Store, core: StationCore) -> None:
        self.config = config
        self.core = core
        self._lock = threading.Lock()
        self._engine: Any = None
        self._reader: Any = None
        from station.vision.snapshots import SnapshotStore
        from station.vision.templates import TemplateCipher

        self.snapshots = SnapshotStore(Path(config.station.snapshots_dir),
                                       enabled=config.station.snapshots_enabled,
                                       key=secrets.encryption_key)
        self.cipher = TemplateCipher(secrets.encryption_key)
        # simulated camera sources by name: the simulator and tests push frames into them
        self.simulated: dict[str, Any] = {}
        self._grabbers: dict[str, Any] = {}
        self.room = self._room_cameras(config, store)

    def _room_cameras(self, config: StationConfig, store: Store) -> Any:
        """The room cameras and their picture writer (vision/room.py), hooked into the store so
        each witnessed event names its pictures in its own transaction; None without any."""
        cams = config.room_camera_list
        if not cams:
            return None
        from station.vision.cameras import open_source
        from station.vision.room import RoomCamera, RoomCameras, places_from_config

        rc = config.room_cameras
        room = RoomCameras(
            [RoomCamera(c.id, open_source(c, self.simulated), tuple(c.sees)) for c in cams],
            self.snapshots,
            places_from_config({s.number: s.device for s in config.shelves},
                               (config.doors.entry, config.doors.exit), config.doors.exit),
            max_age_s=rc.max_age_s, clip_before_s=rc.clip_before_s, clip_after_s=rc.clip_after_s,
            clip_fps=rc.clip_fps, queue_max=rc.queue_max)
        store.witness = room.attach
        return room

    def start(self) -> None:
        if self.room is not None:
            self.room.start()

    def grabber(self, role: str) -> Any:
        """The camera of `role`, opened on first use and kept: the grabber always holds the
        latest frame and reconnects a dropped stream by itself."""
        from station.flows.errors import Unavailable
        from station.vision.cameras import LatestFrameGrabber, open_source

        camera = self.config.camera(role)
        if camera is None:
            raise Unavailable(f"no {role} camera is configured", code="camera_unavailable")
        with self._lock:
            if role not in self._grabbers:
                self._grabbers[role] = LatestFrameGrabber(open_source(camera, self.simulated)).start()
            return self._grabbers[role]

    def _jpeg(self, frame: Any) -> bytes:
        import cv2

        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise ValueError("frame could not be encoded")
        return bytes(buf)

    def grab_face_frames(self, n: int = 8, interval: float = 0.12) -> list[bytes]:
        from station.flows.errors import Unavailable
        from station.vision.cameras import SourceError

        grabber = self.grabber("face")
        try:
            # frames taken after the kiosk asked, never the newest one from before: at a
            # snapshot camera's 5 frames a second that is the previous person's face, and
            # one frame of somebody else makes the decision a "conflict" (shelf_sim found it)
            frames = grabber.frames(n, interval, since=grabber.now())
        except (SourceError, TimeoutError) as exc:
            raise Unavailable(f"the face camera gives no picture: {exc}", code="camera_unavailable") from None
        return [self._jpeg(f) for f, _ in frames]

    def grab_document_frame(self, timeout: float = 3.0) -> bytes:
        """The document camera's newest frame, waiting up to `timeout` seconds for a first
        one (a camera just opened); a camera that gives none by then is Unavailable."""
        from station.flows.errors import Unavailable
        from station.vision.cameras import SourceError

        grabber = self.grabber("document")
        try:
            got = grabber.wait_frame(timeout=timeout)
        except SourceError:
            got = None
        if got is None:
            why = f" ({grabber.last_error})" if getattr(grabber, "last_error", None) else ""
            raise Unavailable(f"the document camera gives no picture{why}", code="camera_unavailable")
        return self._jpeg(got[0])

    def stop(self) -> None:
        for g in self._grabbers.values():
            g.stop()
        self._grabbers.clear()
        if self.room is not None:
            self.core.ctx.store.witness = None
            self.room.stop()

    def load_clip(self, ref: str) -> list[tuple[float, bytes]] | None:
        """The decrypted frames of an alarm's clip, or None once pruned (or never written)."""
        from station.vision.snapshots import SnapshotError

        try:
            return self.snapshots.load_clip(ref)
        except FileNotFoundError:
            return None
        except SnapshotError as exc:
            raise _unreadable(exc) from None

    def engine(self) -> Any:
        with self._lock:
            if self._engine is None:
                from station.vision.faces import FaceEngine

                self._engine = FaceEngine()
            return self._engine

    def decode_codes(self, image: bytes) -> list[str]:
        from station.vision.codes import CodeReader
        from station.vision.images import decode_image

        with self._lock:
            if self._reader is None:
                self._reader = CodeReader()
        frame = decode_image(image)
        return [c.text for c in self._reader.decode(frame)]

    def verify_face(self, frames: list[bytes]) -> dict[str, Any]:
        from station.vision.antispoof import PassiveSettings
        from station.vision.faces import FaceMatcher, FaceVerifier

        rows = self.core.couriers.templates()
        if not rows:
            return {"courier_id": None, "distance": None, "live": False, "reason": "no_templates"}
        templates = np.stack([self.cipher.decrypt(blob, cid) for cid, blob in rows])
        matcher = FaceMatcher(templates, [cid for cid, _ in rows])
        f = self.config.faces
        passive = PassiveSettings(f.passive_enabled, f.passive_threshold, f.passive_min_real_fraction)
        decision = FaceVerifier(self.engine(), matcher, min_agreeing=min(3, len(frames)),
                                passive=passive).decide(frames)
        out = decision.to_log()
        out["courier_id"] = decision.label if decision.reason == "matched" and decision.live else None
        return out

    def enrol(self, courier_id: str, images: list[bytes]) -> dict[str, Any]:
        from station.flows.errors import FlowError
        from station.vision.faces import EnrolmentRefused

        self.core.couriers.get(courier_id)
        try:
            enrolment = self.engine().enrol(images)
        except EnrolmentRefused as exc:
            raise FlowError(str(exc), code=f"enrolment_{exc.check}", status=422) from None
        blobs = [self.cipher.encrypt(t, courier_id) for t in enrolment.templates]
        self.core.couriers.store_templates(courier_id, blobs)
        return {"courier_id": courier_id, "templates": len(blobs)}

    def load_snapshot(self, ref: str) -> bytes | None:
        """The decrypted JPEG, or None once pruned (the event keeps its reference)."""
        from station.vision.snapshots import SnapshotError

        try:
            return self.snapshots.load(ref)
        except FileNotFoundError:
            return None
        except SnapshotError as exc:
            raise _unreadable(exc) from None

    def save_snapshot(self, image: bytes) -> str | None:
        """A JPEG of what the camera saw, named by its hash; a failure to keep it must never
        block a door, so it is logged and the event goes without a snapshot."""
        from station.vision.images import decode_image

        try:
            data: Any = image if image[:3] == b"\xff\xd8\xff" else decode_image(image)
            return self.snapshots.save(data)
        except Exception:
            log.warning("snapshot not kept", exc_info=True)
            return None


@dataclass
class Station:
    config: StationConfig
    secrets: Secrets
    store: Store
    link: DeviceLink
    core: StationCore
    outbox: Outbox
    dispatcher: Dispatcher
    ticker: Ticker
    app: Any
    vision: Vision
    upstream: UpstreamForwarder | None = None
    device_log: DeviceLogWriter | None = None
    metrics: StationMetrics | None = None
    homeassistant: HomeAssistantBridge | None = None
    started: bool = field(default=False)
    metrics_port: int | None = None
    housekeeping: HousekeepingThread | None = None
    run_lock: RunLock | None = None
    bundles: Any = None  # station.bundles.BundleListener with [bundles] enabled (#20.2)

    def _lock_database(self) -> None:
        """`station restore` refuses while this lock is held (ADR 0103). A second station on
        the same file is a mistake the log says, not a reason to keep the doors shut."""
        try:
            self.run_lock = RunLock(self.config.station.database).acquire()
        except (BackupError, OSError) as exc:
            log.warning("run lock not taken: %s", exc)

    def start(self) -> Station:
        self._lock_database()
        self.vision.start()  # room cameras first: the first event may want a picture
        if self.device_log is not None:
            self.device_log.start()
        self.link.start()
        self.dispatcher.start()
        self.ticker.start()
        if self.upstream is not None:
            self.upstream.start()
        with self.store.transaction() as tx:
            tx.emit(Event("station.started", self.config.station.id, "station",
                          {"version": "0.1.0", "last_seq_before": self.store.last_seq}))
        # the lights the database asks for, whatever the shelves showed before the restart
        self.core.lights.refresh(force=True)
        self._serve_metrics()
        if self.homeassistant is not None:
            self.homeassistant.start()
        if self.housekeeping is not None:
            self.housekeeping.start()
        if self.bundles is not None:
            self.bundles.start()
        self.started = True
        return self

    def _serve_metrics(self) -> None:
        """A metrics port that cannot be had costs the metrics, never the doors: logged."""
        mc = self.config.metrics
        if self.metrics is None or not mc.enabled:
            return
        try:
            self.metrics_port = self.metrics.serve(mc.host, mc.port)
            log.info("metrics on http://%s:%d/metrics", mc.host, self.metrics_port)
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%d (%s); the station runs without them",
                      mc.host, mc.port, exc)

    def stop(self) -> None:
        if self.bundles is not None:
            self.bundles.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self.homeassistant is not None:
            self.homeassistant.stop()
        if self.housekeeping is not None:
            self.housekeeping.stop()
        self.ticker.stop()
        self.dispatcher.stop()
        if self.upstream is not None:
            self.upstream.stop()
        self.link.stop()
        if self.device_log is not None:
            self.device_log.stop()
        self.vision.stop()
        self.store.close()
        if self.run_lock is not None:
            self.run_lock.release()
            self.run_lock = None
        self.started = False


def build_station(config: StationConfig, secrets: Secrets, *, data_dir: Path | None = None,
                  client_id: str | None = None) -> Station:
    store = Store(config.station.database).open()
    try:
        return _assemble(config, secrets, store, client_id)
    except BaseException:  # a part refused its settings: the database is not left open
        store.close()
        raise


def _assemble(config: StationConfig, secrets: Secrets, store: Store, client_id: str | None) -> Station:
    holder: dict[str, StationCore] = {}

    link_box: dict[str, DeviceLink] = {}

    def device_status() -> dict[str, Any]:
        link = link_box["link"]
        return {d: {"online": link.is_online(d), "reported": link.reported(d)} for d in config.device_ids}

    layout_places = sum(s.rows * s.columns * s.capacity for s in config.shelves)
    db_dir = Path(config.station.database).resolve().parent
    levels = StationCollector(
        store, layout_places, device_status, (config.doors.entry, config.doors.exit),
        {"database": db_dir, "snapshots": Path(config.station.snapshots_dir).resolve()},
        upstream=config.upstream.enabled)
    metrics = StationMetrics(levels)

    def on_event(ev: DeviceEvent) -> None:
        if ev.kind.startswith("command.") and "cmd_id" in ev.data:
            metrics.latency.command_outcome(ev.data["cmd_id"], str(ev.data.get("op")), ev.kind[8:])
        core = holder.get("core")
        if core is not None:
            core.on_device_event(ev.device, ev.kind, ev.data)

    seq_path = Path(config.station.database).with_suffix(".devseq")
    # each device's boot as the log last knew it: a shelf that rebooted while the station was
    # down is reconciled from its first state like one that rebooted while it ran (#22.4)
    known_boots = {r["id"]: r["boot_id"] for r in store.query("SELECT id, boot_id FROM devices WHERE boot_id IS NOT NULL")}
    link = DeviceLink(config, secrets, on_event, client_id=client_id, seq_path=seq_path,
                      known_boots=known_boots)
    link_box["link"] = link
    outbox = Outbox(store, secrets.encryption_key)
    ctx = Ctx(config, secrets, store, LinkPort(link, metrics.latency), outbox)
    device_log = DeviceLogWriter(store)
    core = StationCore(ctx, trace_writer=device_log.submit)
    core.audit = ShelfAudit(ctx, link.reported, lambda: link.held,
                            interval_s=config.mqtt.shelf_audit_s)
    holder["core"] = core
    info = StationInfo(config.station.name, config.station.address, config.station.timezone)
    senders = build_senders(config.notify, info, config.station.id)
    dispatcher = Dispatcher(outbox, senders, retry_initial_s=config.notify.retry_initial_s,
                            retry_max_s=config.notify.retry_max_s)
    vision = Vision(config, secrets, store, core)
    upstream = None
    if config.upstream.enabled:
        upstream = UpstreamForwarder.from_config(store, config, secrets)

    svc = Services(
        core=core,
        decode_codes=vision.decode_codes,
        verify_face=vision.verify_face,
        enrol_face=vision.enrol,
        grab_face_frames=vision.grab_face_frames,
        grab_document_frame=vision.grab_document_frame,
        save_snapshot=vision.save_snapshot,
        snapshot_load=vision.load_snapshot,
        clip_load=vision.load_clip,
        device_status=device_status,
        observe_entry=metrics.latency.entry,
    )
    app = create_app(svc, secrets.token_key, config.api.cors_origins, config.api.service_tokens)
    ha = config.home_assistant
    bridge = None
    if ha.enabled:
        bridge = HomeAssistantBridge(
            station_id=config.station.id, station_name=config.station.name, host=config.mqtt.host,
            port=config.mqtt.port, prefix=ha.discovery_prefix, store=store,
            device_ids=config.device_ids, doors=(config.doors.entry, config.doors.exit),
            shelves=[s.device for s in config.shelves], state=levels.summary, username=ha.username,
            password=secrets.ha_mqtt_password, tls=config.mqtt.tls, ca_file=config.mqtt.ca_file,
            refresh_s=ha.refresh_s)
    budget = DiskBudget([db_dir, Path(config.retention.archive_dir), Path(config.station.snapshots_dir)],
                        config.disk.alarm_free_mb, config.disk.refuse_free_mb)
    store.space_guard = budget.refusal  # new shelving refused below the reserve (ADR 0102)
    keeper = Housekeeper(config, store, vision.snapshots, budget,
                         retention=_retention(config, store), clock=ctx.clock)
    bundles = None
    if config.bundles.enabled:
        # built here, like every other part: a bad key, password or TLS file is refused
        # before a thread starts, not by start() with the others already running
        from station.bundles import BundleListener

        bundles = BundleListener(core, config, secrets)
    return Station(config, secrets, store, link, core, outbox, dispatcher, Ticker(core), app,
                   vision, upstream, device_log, metrics, bridge,
                   housekeeping=HousekeepingThread(keeper), bundles=bundles)


def _retention(config: StationConfig, store: Store) -> Retention | None:
    r = config.retention
    if not r.enabled:
        return None
    # with [upstream] on, nothing the fleet has not acknowledged leaves the database
    return Retention(store, r.archive_dir, keep_days=r.keep_days, segment_events=r.segment_events,
                     batch_events=r.batch_events, upstream=config.upstream.enabled)


def _unreadable(exc: Exception) -> Exception:
    """A picture file that does not open (another station's key after a restore, a damaged
    or swapped file): a clear answer naming it, not a 500 with a traceback."""
    from station.flows.errors import FlowError

    return FlowError(f"{exc}: the file is on disk but does not open with this station's key",
                     code="snapshot_unreadable", status=409)
