"""A whole simulated run: the room (broker, firmware on simulated hardware, optionally the
station itself), the people, the faults, and the report.

`EmbeddedStation` puts everything in this process so a scenario runs anywhere;
`StationProcess` runs the station as a child process instead, so it has a core of its own
while the devices and people stay here. `Simulation`
only needs a base URL, tokens, the shelf HALs and the SMS inbox, so it drives an existing
station as well (the demo hands it its own devices)."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from firmware_stubs.nvstore import MemoryNvStore

from .camera import RoomCameraServer, with_room_camera
from .facecam import LIVE_FACES, CameraServer, FacesMissing, faces_dir, load_kits
from .faults import FaultyNet
from .http import HttpError, PersonHttp
from .images import WaybillRenderer
from .kpi import Metrics, build_report, picture_counts
from .people import Courier, Customer, Env, SlotInfo, Stranger
from .scenario import CustomerPlan, FaultPlan, ParcelPlan, Plan, Scenario, ScenarioError, build_plan
from .world import Room, SimDoorHal, SimShelfHal, SmsInbox

log = logging.getLogger("shelf_sim")


def slot_table(config: Any) -> dict[str, SlotInfo]:
    """Every slot of the station config by printed address (shelf-row-column)."""
    out = {}
    for shelf in config.shelves:
        for row in range(1, shelf.rows + 1):
            for col in range(1, shelf.columns + 1):
                addr = f"{shelf.number}-{row}-{col:02d}"
                out[addr] = SlotInfo(addr, shelf.device, row, col, shelf.row_sizes[row - 1],
                                     shelf.capacity, bool(getattr(shelf, "outbound", False)))
    return out


@dataclass
class Devices:
    """The virtual devices: the real firmware classes over simulated HALs, each with its own
    faulty network. Reboots replace a controller by a fresh one on the same HAL and NV store.

    With `nv_dir` each controller keeps its NV record (last accepted command, boot counter)
    in a file there, fsynced per command, so it outlives this process (a simulator run against
    a station that stays). Without, in memory that survives the reboots, as a board's FRAM
    survives a reset: the room's devices then spend no fsync on the disk the station commits
    to, two per command, which a real board's FRAM does not cost (docs/simulator.md)."""

    config: Any
    secrets: Any
    broker_url: str
    nv_dir: Path | None
    nets: dict[str, FaultyNet]
    shelf_hals: dict[str, SimShelfHal] = field(default_factory=dict)
    nv_stores: dict[str, MemoryNvStore] = field(default_factory=dict)
    door_hals: dict[str, SimDoorHal] = field(default_factory=dict)
    controllers: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _make(self, device: str) -> Any:
        from firmware_stubs.door import DoorController
        from firmware_stubs.shelf import ShelfController

        sid = self.config.station.id
        key = self.secrets.device_key(sid, device)
        nv: dict[str, Any] = ({"nv_path": str(self.nv_dir / f"{device}.json")} if self.nv_dir is not None
                              else {"nv": self.nv_stores.setdefault(device, MemoryNvStore())})
        shelf = self.config.shelf_devices.get(device)
        if shelf is not None:
            hal = self.shelf_hals.setdefault(device, SimShelfHal(shelf.rows, shelf.columns))
            # the retained state is a summary the station only monitors: at most twice a
            # second, so a hundred shelvings a second do not mean a hundred snapshots
            return ShelfController(sid, device, shelf.rows, shelf.columns, key, self.broker_url, hal=hal,
                                   trust_host_clock=True, net=self.nets.get(device), **nv,
                                   state_min_interval_s=0.5)
        door_hal = self.door_hals.setdefault(device, SimDoorHal())
        return DoorController(sid, device, key, self.broker_url, hal=door_hal, **nv,
                              pulse_s=self.config.doors.unlock_pulse_s, trust_host_clock=True,
                              net=self.nets.get(device))

    def start(self) -> Devices:
        for device in self.config.device_ids:
            self.controllers[device] = self._make(device).start()
        return self

    def reboot(self, device: str, off_s: float = 0.3) -> None:
        """Power cut and power on: RAM state is lost, the NV store and the HAL survive."""
        with self._lock:
            old = self.controllers[device]
            old.crash()
            time.sleep(off_s)
            self.controllers[device] = self._make(device).start()

    def stop(self) -> None:
        for ctrl in self.controllers.values():
            try:
                ctrl.stop()
            except Exception:
                log.exception("stopping %s", ctrl.device_id)


TOKEN_TTL_S = 7 * 86400
START_TIMEOUT_S = 30.0


def sim_station_config(base: Any, workdir: Path, broker_port: int, sms_url: str,
                       station_overrides: dict[str, Any], room_camera: str | None = None,
                       face_camera: str | None = None) -> Any:
    """The station config of a simulated run: its files in `workdir`, our broker, SMS to our
    inbox with retries quick enough for compressed time, and no upstream to report to; with
    `room_camera` (a simulated camera's URL, shelf_sim/camera.py) one room camera seeing every
    shelf and door instead of the base config's; with `face_camera` (shelf_sim/facecam.py)
    the entry's face camera read from there."""
    from station.config import CameraConfig, SenderConfig

    cameras = with_room_camera(base, room_camera) if room_camera else list(base.cameras)
    if face_camera is not None:
        cameras = [*(c for c in cameras if c.role != "face"),
                   CameraConfig(id=next((c.id for c in cameras if c.role == "face"), "cam-face"),
                                role="face", source=face_camera)]

    st = base.station.model_copy(update={"database": str(workdir / "station.db"),
                                         "snapshots_dir": str(workdir / "snapshots"),
                                         **station_overrides})
    return base.model_copy(update={
        "station": st,
        "mqtt": base.mqtt.model_copy(update={"host": "127.0.0.1", "port": broker_port}),
        "notify": base.notify.model_copy(update={
            "senders": [SenderConfig(kind="webhook", url=sms_url)],
            "retry_initial_s": 0.2, "retry_max_s": 1.0}),
        "upstream": base.upstream.model_copy(update={"enabled": False}),
        # the virtual people are machines holding stateless kiosk/operator tokens signed with
        # the station's key (ADR 0130: off at a real station, where people log in and pair)
        "api": base.api.model_copy(update={"service_tokens": True}),
        "cameras": cameras,
    })


class _Room(ABC):
    """What both ways of running the station share: the broker, the SMS inbox and the
    virtual devices live in this process, and the people get tokens signed with the
    station's key. Subclasses add the station itself (`_start_station`, `_stop_station`)."""

    def __init__(self, config: Any, workdir: Path, seed: int, scenario: Scenario, metrics: Metrics) -> None:
        self.base_config = config
        self.workdir = workdir
        self.seed = seed
        self.scenario = scenario
        self.metrics = metrics
        self.broker: Any = None
        self.devices: Devices | None = None
        self.sms: SmsInbox | None = None
        self.face_cameras: CameraServer | None = None
        self.config: Any = None
        self.secrets: Any = None
        self.base_url = ""
        self.kiosk_token = self.stranger_kiosk_token = self.operator_token = ""
        self.camera: RoomCameraServer | None = None  # the simulated room camera (#21.3)

    def start(self) -> Self:
        """Broker, inbox, config, secrets, tokens and devices first: the station must find
        its devices already talking when it comes up, as in a real room."""
        from station.api.auth import make_token
        from station.config import load_secrets, write_new_secrets
        from station.mosquitto import MosquittoProcess

        wd = self.workdir
        wd.mkdir(parents=True, exist_ok=True)
        self.broker = MosquittoProcess(workdir=wd / "mosquitto").start()
        self.sms = SmsInbox()
        self.camera = RoomCameraServer() if self.scenario.room_camera else None
        # the entry's face camera, an IP camera the station reads over HTTP (facecam.py)
        self.face_cameras = CameraServer()
        self.face_cameras.add("face")
        self.config = cfg = sim_station_config(self.base_config, wd, self.broker.port, self.sms.url,
                                               self.scenario.station,
                                               self.camera.url if self.camera else None,
                                               self.face_cameras.source("face"))
        secrets_path = wd / "secrets.toml"
        if not secrets_path.exists():
            write_new_secrets(secrets_path)
        self.secrets = load_secrets(secrets_path, env={})
        key = self.secrets.token_key
        self.kiosk_token = make_token(key, "kiosk", "sim-kiosk", TOKEN_TTL_S)
        self.stranger_kiosk_token = make_token(key, "kiosk", "sim-kiosk-2", TOKEN_TTL_S)
        self.operator_token = make_token(key, "operator", "sim-operator", TOKEN_TTL_S)
        nets = {d: FaultyNet(self.seed, d, self.scenario.faults, self.metrics.net, self.metrics.net_lock)
                for d in cfg.device_ids}
        self.devices = Devices(cfg, self.secrets, self.broker.url, None, nets).start()
        if self.camera is not None:
            self.camera.attach(self.devices.shelf_hals, self.devices.door_hals)
        self._start_station()
        return self

    @abstractmethod
    def _start_station(self) -> None:
        """Bring the station up against the devices already online."""

    @abstractmethod
    def _stop_station(self) -> None:
        """Stop the station (before the devices and the broker)."""

    def restart_broker(self) -> None:
        self.broker.stop()
        time.sleep(0.3)
        self.broker.start()

    @abstractmethod
    def db_parcels(self) -> list[dict[str, Any]]:
        """waybill, state and slot of every parcel the station knows (final checks)."""

    @abstractmethod
    def db_slot_count(self, slot: str) -> int | None:
        """The count the station last sensed in `slot` (None: never sensed)."""

    def stop(self) -> None:
        """Station first, so it does not log the devices and the broker going away as faults."""
        try:
            self._stop_station()
        finally:
            if self.devices is not None:
                self.devices.stop()
            if self.sms is not None:
                self.sms.stop()
            if self.camera is not None:
                self.camera.stop()
            if self.face_cameras is not None:
                self.face_cameras.stop()
            if self.broker is not None:
                self.broker.stop()


class EmbeddedStation(_Room):
    """Station + HTTP API in this process too: runs anywhere, but shares one GIL (one core)
    with the devices and the people."""

    def __init__(self, config: Any, workdir: Path, seed: int, scenario: Scenario, metrics: Metrics) -> None:
        super().__init__(config, workdir, seed, scenario, metrics)
        self.station: Any = None
        self._server: Any = None

    def _start_station(self) -> None:
        import uvicorn

        from station.bootstrap import build_station
        from station.mosquitto import free_port

        cfg = self.config
        self.station = build_station(cfg, self.secrets).start()
        if not self.station.link.wait_online(cfg.device_ids, 15):
            raise RuntimeError("the virtual devices did not come online")
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(self.station.app, host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False))
        threading.Thread(target=server.run, name="sim-http", daemon=True).start()
        self._server = server
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{port}"

    def db_parcels(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.station.core.ctx.store.query(
            "SELECT waybill, state, slot FROM parcels")]

    def db_slot_count(self, slot: str) -> int | None:
        row = self.station.core.ctx.store.query_one("SELECT count FROM slot_counts WHERE slot = ?", (slot,))
        return None if row is None else int(row["count"])

    def _stop_station(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self.station is not None:
            self.station.stop()


class StationProcess(_Room):
    """The station as its own OS process (`python -m station.cli run`), so it gets a core of
    its own instead of sharing this process's GIL with the devices and the people. It reads
    the same config, written to `station.toml` in the workdir; its output goes to
    `station.log` there."""

    def __init__(self, config: Any, workdir: Path, seed: int, scenario: Scenario, metrics: Metrics,
                 cpus: set[int] | None = None) -> None:
        # the child runs with its own cwd semantics: every path it is given must be absolute
        super().__init__(config, workdir.resolve(), seed, scenario, metrics)
        self.proc: subprocess.Popen[bytes] | None = None
        self.cpus = cpus  # the CPUs the station may run on (None: any), like `taskset -c`
        self.cpu_at_ready = 0.0
        self.config_path = self.workdir / "station.toml"
        self.log_path = self.workdir / "station.log"

    def _start_station(self) -> None:
        from station.config import dump_config_toml
        from station.mosquitto import free_port

        self.config_path.write_text(dump_config_toml(self.config))
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "station.cli", "run", "--config", str(self.config_path),
               "--secrets", str(self.workdir / "secrets.toml"), "--host", "127.0.0.1", "--port", str(port)]
        # WARNING like the simulator's own logging: the INFO lines of 100,000 pickups cost a core
        env = {"PS_LOG_LEVEL": "WARNING", **os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log_file:
            cpus = self.cpus
            self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        self._wait_ready(START_TIMEOUT_S)
        self.cpu_at_ready = self.cpu_seconds() or 0.0  # start-up (imports, models) is not the run's

    def _wait_ready(self, timeout: float) -> None:
        """Ready means the API answers and the station sees every device online: the first
        courier must not find a shelf the station does not know is there."""
        deadline = time.monotonic() + timeout
        missing: set[str] = set(self.config.device_ids)
        with httpx.Client(base_url=self.base_url, timeout=5.0) as http:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"the station process exited with status {self.proc.returncode}; "
                                       f"{self.log_path}:\n{self.log_tail()}")
                missing = self._devices_not_online(http)
                if not missing:
                    return
                time.sleep(0.05)
        raise RuntimeError(f"the station process was not ready within {timeout:.0f} s "
                           f"(devices not online: {sorted(missing) or 'API not answering'}); "
                           f"{self.log_path}:\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the station process has used so far (Linux /proc)."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _devices_not_online(self, http: httpx.Client) -> set[str]:
        wanted = set(self.config.device_ids)
        try:
            if http.get("/api/health").status_code != 200:
                return wanted
            res = http.get("/api/operator/state", headers={"Authorization": "Bearer " + self.operator_token})
        except httpx.TransportError:
            return wanted
        if res.status_code != 200:
            return wanted
        reported = res.json().get("reported", {})
        return {d for d in wanted if not (reported.get(d, {}).get("online") and reported[d].get("reported"))}

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def db_parcels(self) -> list[dict[str, Any]]:
        """Straight from the file (read-only; WAL lets us read beside the station's writer)."""
        uri = Path(self.config.station.database).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT waybill, state, slot FROM parcels")]
        finally:
            conn.close()

    def db_slot_count(self, slot: str) -> int | None:
        uri = Path(self.config.station.database).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=10)
        try:
            row = conn.execute("SELECT count FROM slot_counts WHERE slot = ?", (slot,)).fetchone()
            return None if row is None else int(row[0])
        finally:
            conn.close()

    def _stop_station(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            log.warning("the station process ignored SIGTERM for 15 s; killing it")
            proc.kill()
            proc.wait()


class Simulation:
    """Runs a plan against a station reachable over HTTP, with the room in `env`."""

    def __init__(self, scenario: Scenario, plan: Plan, env: Env, *,
                 devices: Devices | None = None, restart_broker: Callable[[], None] | None = None,
                 db_parcels: Callable[[], list[dict[str, Any]]] | None = None,
                 entry_door: SimDoorHal | None = None,
                 progress: Callable[[str, int], None] | None = None) -> None:
        self.sc, self.plan, self.env = scenario, plan, env
        self.devices = devices
        self.restart_broker = restart_broker
        self.db_parcels = db_parcels
        self.entry_door = entry_door
        self.progress = progress or (lambda what, n: None)
        # the longest quiet spell a healthy run has: a customer's arrival delay and walk
        self.stall_s = 45.0 + (scenario.arrival_delay_s[1] + scenario.walk_s[1] + 60.0) / scenario.speed
        self.m = env.metrics
        self._queue: list[tuple[float, int, CustomerPlan, int]] = []
        self._qcond = threading.Condition()
        self._seq = itertools.count()
        self._pending_customers = len(plan.customers)
        self._outstanding: dict[str, int] = {}
        self._shelved_of: dict[str, list[str]] = {}
        self._reported: set[str] = set()
        self._by_phone = {c.phone: c for c in plan.customers}
        for p in plan.parcels:
            self._outstanding[p.phone] = self._outstanding.get(p.phone, 0) + 1

    # --- scheduling ---------------------------------------------------------------------------

    def _schedule(self, cust: CustomerPlan, visit: int, delay_s: float) -> None:
        with self._qcond:
            heapq.heappush(self._queue, (time.monotonic() + delay_s / self.sc.speed, next(self._seq), cust, visit))
            self._qcond.notify_all()

    def _on_shelved(self, p: ParcelPlan, ok: bool) -> None:
        """A courier is done with a parcel; once all of a recipient's parcels are done, they
        get their SMS and come after their arrival delay."""
        with self._qcond:
            if p.waybill in self._reported:
                return
            self._reported.add(p.waybill)
            if ok:
                self._shelved_of.setdefault(p.phone, []).append(p.waybill)
            self._outstanding[p.phone] -= 1
            ready = self._outstanding[p.phone] == 0
        self.progress("parcel", 1)
        if ready:
            cust = self._by_phone[p.phone]
            if self._shelved_of.get(p.phone):
                self._schedule(cust, 0, cust.arrival_delay_s)
            else:
                self._customer_done()

    def _requeue(self, cust: CustomerPlan, visit: int) -> None:
        with self._qcond:
            self._pending_customers += 1
        self._schedule(cust, visit, cust.arrival_delay_s / 2 + 30.0)

    def _customer_done(self, counted: bool = True) -> None:
        with self._qcond:
            self._pending_customers -= 1
            self._qcond.notify_all()
        if counted:  # a walk-off comes back: one customer, one tick
            self.progress("customer", 1)

    def _customer_worker(self) -> None:
        with self.env.client() as http:
            self._serve_customers(http)

    def _serve_customers(self, http: PersonHttp) -> None:
        env = self.env
        while True:
            with self._qcond:
                while True:
                    if self._pending_customers <= 0 or env.stop.is_set():
                        return
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        _, _, cust, visit = heapq.heappop(self._queue)
                        break
                    timeout = (self._queue[0][0] - now) if self._queue else 0.5
                    self._qcond.wait(min(timeout, 0.5))
            person = Customer(env, cust, self._shelved_of.get(cust.phone, []), visit, self._requeue)
            try:
                person.run(http)
            except HttpError as exc:  # the station went away (shutdown, or a hang)
                self.m.inc(f"customer_http_error:{type(exc).__name__}", example=str(exc)[:200])
                log.warning("customer %s: %s", cust.phone[-4:], exc)
            except Exception as exc:
                self.m.inc(f"customer_crashed:{type(exc).__name__}", example=str(exc)[:200])
                log.exception("customer failed")
            finally:
                self._customer_done(counted=not person.requeued)

    # --- faults --------------------------------------------------------------------------------

    def _faults(self, t0: float) -> None:
        env, m = self.env, self.m
        timers: list[threading.Timer] = []
        for f in self.plan.faults:
            if env.stop.wait(max(0.0, t0 + f.at_s / self.sc.speed - time.monotonic())):
                break
            try:
                self._fault(f, timers)
            except Exception as exc:
                m.inc(f"fault_failed:{f.kind}", example=str(exc)[:200])
                log.exception("fault %s failed", f)
        for t in timers:
            t.join()

    def _fault(self, f: FaultPlan, timers: list[threading.Timer]) -> None:
        env, m = self.env, self.m
        if f.kind == "reboot" and self.devices is not None:
            self.devices.reboot(f.device)
            m.inc("reboots")
        elif f.kind == "broker_restart" and self.restart_broker is not None:
            self.restart_broker()
            m.inc("broker_restarts")
        elif f.kind in ("stuck_sensor", "dead_led"):
            hal = env.hals.get(f.device)
            if not isinstance(hal, SimShelfHal):
                return
            addr = next(a for a, s in env.slots.items() if (s.device, s.row, s.col) == (f.device, f.row, f.col))
            if f.kind == "dead_led":
                hal.kill_led(f.row, f.col)
                env.dead_leds.add(addr)
                m.inc("dead_leds")
            else:
                hal.stick(f.row, f.col)
                m.inc("stuck_sensors")
                t = threading.Timer(f.duration_s / self.sc.speed,
                                    lambda: hal.unstick(f.row, f.col, env.room.count(addr)))
                t.daemon = True
                t.start()
                timers.append(t)

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        env = self.env
        t0 = time.monotonic()
        self._ensure_couriers()
        threads = [threading.Thread(target=self._faults, args=(t0,), name="sim-faults", daemon=True)]
        for s in self.plan.strangers:
            threads.append(threading.Thread(target=self._stranger_at, args=(t0, s), daemon=True))
        workers = [threading.Thread(target=self._customer_worker, name=f"sim-customer-{i}", daemon=True)
                   for i in range(max(1, self.sc.customers_at_once))]
        couriers = []
        for cp in self.plan.couriers:
            mine = [p for p in self.plan.parcels if p.courier == cp.index]
            couriers.append(threading.Thread(target=self._courier, args=(cp, mine),
                                             name=f"sim-{cp.courier_id}", daemon=True))
        for t in threads + workers + couriers:
            t.start()
        watchdog = threading.Thread(target=self._watchdog, args=(couriers + workers,), daemon=True)
        watchdog.start()
        for t in couriers + workers:
            t.join()
        env.stop.set()  # ends the fault schedule early if the people are done first
        for t in threads:
            t.join(timeout=10)
        self._final_checks()
        return build_report(self.m, self.plan.summary(),
                            {"name": self.sc.name, "seed": self.sc.seed, "speed": self.sc.speed},
                            time.monotonic() - t0, self.sc.speed)

    def _watchdog(self, people: list[threading.Thread]) -> None:
        """End the run if nothing at all happens for `stall_s` wall seconds (a hung station):
        the people are told to stop and `station_stalled` breaks the report."""
        last, since = -1, time.monotonic()
        while any(t.is_alive() for t in people) and not self.env.stop.wait(1.0):
            with self.m._lock:
                now_total = sum(self.m.counts.values()) + sum(len(v) for v in self.m.samples.values())
            if now_total != last:
                last, since = now_total, time.monotonic()
            elif time.monotonic() - since > self.stall_s:
                self.m.inc("station_stalled", example=f"nothing happened for {self.stall_s:.0f} s")
                log.error("no progress for %.0f s: the station looks hung; stopping the run", self.stall_s)
                self.env.stop.set()
                return

    def _courier(self, cp: Any, parcels: list[ParcelPlan]) -> None:
        try:
            Courier(self.env, cp, parcels, self._on_shelved).run()
        except HttpError as exc:
            self.m.inc(f"courier_http_error:{type(exc).__name__}", example=str(exc)[:200])
            log.warning("courier %s: %s", cp.courier_id, exc)
        except Exception as exc:
            self.m.inc(f"courier_crashed:{type(exc).__name__}", example=str(exc)[:200])
            log.exception("courier failed")
        finally:  # parcels the courier never got to: their recipients will not come
            for p in parcels:
                self._on_shelved(p, False)

    def _stranger_at(self, t0: float, s: Any) -> None:
        if not self.env.stop.wait(max(0.0, t0 + s.at_s / self.sc.speed - time.monotonic())):
            Stranger(self.env, s).run()

    def _ensure_couriers(self) -> None:
        env = self.env
        with env.client() as http:
            for cp in self.plan.couriers:
                res = http.post("/api/operator/couriers", json={
                    "courier_id": cp.courier_id, "carrier": cp.carrier, "name": f"Sim {cp.courier_id}",
                    "pin": env.courier_pin}, headers={"Authorization": "Bearer " + env.operator_token})
                if res.status_code not in (200, 201, 409):
                    http.post(f"/api/operator/couriers/{cp.courier_id}/enable",
                              headers={"Authorization": "Bearer " + env.operator_token})
                kit = env.faces.get(cp.courier_id)
                if kit is not None:
                    # the operator enrols the courier's photo, as at a real station
                    res = http.post(f"/api/operator/couriers/{cp.courier_id}/face", content=kit.enrol_png,
                                    timeout=env.face_timeout_s,
                                    headers={"Authorization": "Bearer " + env.operator_token,
                                             "content-type": "image/png"})
                    if res.status_code != 200:
                        self.m.inc(f"face_enrolment_failed:{res.status_code}", example=res.text[:200])
                        del env.faces[cp.courier_id]   # they use their PIN

    def _final_checks(self) -> None:
        """Parcels lost: the station's parcels of this run against the physical shelves.
        Doors: every entry-door unlock must answer someone with a reason to come in."""
        m, room = self.m, self.env.room
        ours = {p.waybill for p in self.plan.parcels}
        rows = self.db_parcels() if self.db_parcels else self._api_parcels()
        db = {r["waybill"]: r for r in rows if r["waybill"] in ours}
        physical = room.on_shelves()
        refused = self.env.refused  # put back in their slots as damaged: `refused` there
        for w, slot in physical.items():
            r = db.get(w)
            if r is None or r["state"] != ("refused" if w in refused else "shelved") or r["slot"] != slot:
                m.inc("parcels_lost", example=f"{w} physically in {slot}, station: "
                      f"{(r['state'], r['slot']) if r else 'unknown'}")
        for w in refused - set(physical):
            m.inc("parcels_lost", example=f"{w} refused and put back, physically not on a shelf")
        for w, r in db.items():
            if r["state"] == "shelved" and physical.get(w) != r["slot"]:
                holder = room.parcels[w].holder if w in room.parcels else None
                m.inc("parcels_lost", example=f"{w} station says {r['slot']}, physically "
                      f"{physical.get(w) or 'held by ' + str(holder)}")
            if r["state"] == "picked_up":
                p = room.parcels.get(w)
                if p is None or p.holder != p.phone:
                    m.inc("parcels_lost", example=f"{w} picked up by someone else")
        m.inc("parcels_left_on_shelves", len(physical))
        if self.entry_door is not None:
            extra = self.entry_door.unlocks - self.m.counts.get("legit_entry_calls", 0)
            if extra > 0:
                m.inc("doors_opened_without_waiting_parcel", extra, example=f"{extra} unlocks unexplained")
        m.inc("strangers_let_in", 0)
        m.inc("station_stalled", 0)
        m.inc("doors_opened_without_waiting_parcel", 0)
        m.inc("wrong_slots_lit", 0)
        m.inc("parcels_lost", 0)
        m.inc("foreign_parcels_let_out", 0)
        m.inc("spoofs_admitted", 0)

    def _api_parcels(self) -> list[dict[str, Any]]:
        with self.env.client() as http:
            res = http.get("/api/operator/parcels", params={"limit": 5000},
                           headers={"Authorization": "Bearer " + self.env.operator_token})
            res.raise_for_status()
            return list(res.json())


def run_embedded(config: Any, scenario: Scenario, *, workdir: Path | None = None,
                 frames: bool = True, progress: Callable[[str, int], None] | None = None,
                 on_plan: Callable[[Plan], None] | None = None,
                 station_process: bool = False, station_cpus: set[int] | None = None,
                 sim_cpus: set[int] | None = None) -> dict[str, Any]:
    """Broker, devices and people in this process, and the station too unless
    `station_process` (then it is a child process: a core of its own, or the `station_cpus`
    it is pinned to); returns the report, with the station process's CPU time.

    `sim_cpus` pins this thread for the run, so that the broker, the firmware and the people,
    all started from it, inherit the CPUs (Linux pins threads, and a new thread or child
    takes its creator's CPUs); the caller's own come back afterwards. With the station on
    other CPUs, neither process's threads hand a core's interpreter lock across cores to the
    other's (docs/simulator.md, the week pinned)."""
    before = os.sched_getaffinity(0) if sim_cpus else None
    if sim_cpus:
        os.sched_setaffinity(0, sim_cpus)
    try:
        used = resource.getrusage(resource.RUSAGE_SELF)
        report = _run_embedded(config, scenario, workdir=workdir, frames=frames, progress=progress,
                               on_plan=on_plan, station_process=station_process, station_cpus=station_cpus)
        now = resource.getrusage(resource.RUSAGE_SELF)
        # the simulator's own share of the machine (people, firmware, the embedded station
        # unless it is a process of its own; not the broker), start-up included
        report["simulator_process"] = {
            "cpu_s": round(now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime, 2),
            "cpus": sorted(sim_cpus) if sim_cpus else None}
        return report
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)


def _run_embedded(config: Any, scenario: Scenario, *, workdir: Path | None, frames: bool,
                  progress: Callable[[str, int], None] | None, on_plan: Callable[[Plan], None] | None,
                  station_process: bool, station_cpus: set[int] | None) -> dict[str, Any]:
    metrics = Metrics()
    try:  # before anything starts: a face scenario without the test faces is refused
        where = faces_dir(scenario.face_images) if scenario.face_entry_fraction > 0 else None
    except FacesMissing as exc:
        raise ScenarioError(f"face_entry_fraction: {exc}") from None
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="shelf-sim-")
        workdir = Path(tmp.name)
    stack: _Room = (StationProcess(config, workdir, scenario.seed, scenario, metrics, cpus=station_cpus)
                    if station_process else EmbeddedStation(config, workdir, scenario.seed, scenario, metrics))
    try:
        stack.start()
        cfg = stack.config
        shelves = [(s.device, s.rows, s.columns) for s in cfg.shelves if not getattr(s, "outbound", False)]
        plan = build_plan(scenario, shelves, (cfg.doors.entry, cfg.doors.exit),
                          faces=len(LIVE_FACES) if where is not None else 0)
        if on_plan:
            on_plan(plan)
        assert stack.devices is not None and stack.sms is not None and stack.face_cameras is not None
        face_couriers = [cp for cp in plan.couriers if cp.face]
        kits = load_kits(len(face_couriers), where, spoofs=any(any(cp.spoofs) for cp in face_couriers))
        env = Env(stack.base_url, stack.kiosk_token, stack.operator_token, stack.stranger_kiosk_token,
                  Room(), stack.sms, dict(stack.devices.shelf_hals), slot_table(cfg), metrics,
                  scenario.speed, threading.Event(),
                  render_waybills=WaybillRenderer().frame if frames else None,
                  face_camera=stack.face_cameras.cameras["face"], sensed_count=stack.db_slot_count,
                  faces={cp.courier_id: kit for cp, kit in zip(face_couriers, kits, strict=True)})
        sim = Simulation(scenario, plan, env, devices=stack.devices, restart_broker=stack.restart_broker,
                         db_parcels=stack.db_parcels, entry_door=stack.devices.door_hals[cfg.doors.entry],
                         progress=progress)
        report = sim.run()
        report["pictures"] = picture_counts(cfg.station.database)
        if isinstance(stack, StationProcess):
            used = stack.cpu_seconds()
            report["station_process"] = {"cpu_s": None if used is None else used - stack.cpu_at_ready,
                                         "cpus": sorted(station_cpus) if station_cpus else None}
        return report
    finally:
        stack.stop()
        if tmp is not None:
            tmp.cleanup()


def check_station(base_url: str) -> bool:
    """Is a station answering at `base_url`?"""
    try:
        return httpx.get(base_url.rstrip("/") + "/docs", timeout=3).status_code < 500
    except httpx.HTTPError:
        return False
