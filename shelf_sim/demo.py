"""`make demo` (`shelf-sim demo`): a broker, the station, the simulated room and virtual
people on embedded defaults, and the hands-on room page (shelf_sim/handson.py) where a
newcomer is one of the people.

Virtual people: a gentle, endless stream of couriers and customers, so a newcomer watching
the operator page sees slots light, parcels arrive and leave, doors open. No faults are
injected; the people make an occasional mistake so the alarms panel has something to show.

Everything lives under --dir (var/demo: database, secrets, device NV stores); run it twice
and it carries on where it stopped. SIGINT or SIGTERM stops the people, the station, the
devices and the broker, and leaves no process behind (tests/sim/test_demo.py)."""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path
from typing import Any

from .camera import RoomCameraServer, with_room_camera
from .kpi import Metrics
from .people import Env
from .runner import Simulation, check_station, slot_table
from .scenario import Rates, Scenario, build_plan
from .world import Room, SmsInbox

log = logging.getLogger("shelf_sim.demo")


class _TeeSender:
    """Sends every notification to the station's own first sender (so the console still
    prints codes) and to the simulator's SMS inbox (so virtual customers receive them)."""

    def __init__(self, first: Any, inbox_sender: Any) -> None:
        self._first, self._inbox = first, inbox_sender
        self.name = first.name

    def send(self, outbox_id: str, notification: Any) -> None:
        self._inbox.send(outbox_id, notification)
        self._first.send(outbox_id, notification)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._first, item)


class DemoPeople:
    """Rounds of a small scenario (a courier with a few parcels, their recipients coming to
    fetch them) until stopped."""

    def __init__(self, config: Any, base_url: str, kiosk_token: str, operator_token: str,
                 speed: float, hals: dict[str, Any], sms: SmsInbox, parcels_per_round: int = 6) -> None:
        self.config = config
        self.base_url = base_url
        self.kiosk_token, self.operator_token = kiosk_token, operator_token
        self.speed = max(0.1, speed)
        self.hals = hals
        self.sms = sms
        self.parcels_per_round = parcels_per_round
        self._stop = threading.Event()
        self._env: Env | None = None
        self._rng = random.Random()  # the demo need not repeat itself; runs do (cli.py)
        self._thread = threading.Thread(target=self._loop, name="demo-people", daemon=True)
        self.rounds = 0
        self.last_report: dict[str, Any] | None = None

    def start(self) -> DemoPeople:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set() and not check_station(self.base_url):
            self._stop.wait(0.5)
        room = Room()
        while not self._stop.is_set():
            scenario = Scenario(
                name="demo", seed=self._rng.randrange(2**31), speed=self.speed, couriers=1,
                parcels=self.parcels_per_round, guided_fraction=0.7, strangers=0,
                arrival_delay_s=(20.0, 240.0), walk_s=(5.0, 20.0), customers_at_once=3,
                mistakes=Rates(customer_wrong_slot=0.05, customer_foreign_parcel=0.03,
                               courier_wrong_slot=0.03, customer_walk_off=0.03))
            plan = build_plan(scenario)
            env = Env(self.base_url, self.kiosk_token, self.operator_token, self.kiosk_token, room,
                      self.sms, self.hals, slot_table(self.config), Metrics(), self.speed, threading.Event())
            self._env = env
            if self._stop.is_set():
                break
            try:
                report = Simulation(scenario, plan, env).run()
            except Exception:
                if self._stop.is_set():  # the station went away first on the way out
                    break
                log.exception("demo round failed")
                self._stop.wait(5.0)
                continue
            self.rounds += 1
            self.last_report = report
            if not report["ok"] and not self._stop.is_set():  # a stopped round is unfinished
                log.warning("demo round %d broke an invariant: %s", self.rounds, report["invariants"])
            self._stop.wait(30.0 / self.speed)

    def stop(self) -> None:
        """Stop after the people in the room have been told to leave; waits a few seconds."""
        self._stop.set()
        if self._env is not None:
            self._env.stop.set()
        self._thread.join(timeout=10)
        self.sms.stop()


def attach_sms_inbox(config: Any, station: Any) -> SmsInbox:
    """An SMS inbox beside the station's own first sender: the virtual people and the
    hands-on page read the codes there."""
    from station.notify.messages import StationInfo
    from station.notify.senders import WebhookSender

    sms = SmsInbox()
    info = StationInfo(config.station.name, config.station.address, config.station.timezone)
    senders = station.dispatcher._senders
    senders[0] = _TeeSender(senders[0], WebhookSender(sms.url, info, name="sim-sms"))
    return sms


def shelf_hals(devices: list[Any]) -> dict[str, Any]:
    return {d.device_id: d.hal for d in devices if getattr(d, "kind", "") == "shelf"}


def start_demo_people(config: Any, base_url: str, kiosk_token: str, operator_token: str, *,
                      sms: SmsInbox, devices: list[Any], speed: float = 10.0) -> DemoPeople:
    """Start the demo's people against the station at `base_url`, using the shelves of
    `devices` (the firmware objects started beside the station)."""
    return DemoPeople(config, base_url, kiosk_token, operator_token, speed, shelf_hals(devices), sms).start()


DEMO_COURIER = "c-demo"


def demo_courier(station: Any, config: Any, rng: random.Random) -> tuple[str, str]:
    """A courier a newcomer can log in as: a fresh PIN every start, printed with the URLs."""
    pin = f"{rng.randrange(10**6):06d}"
    couriers = station.core.couriers
    if any(c.id == DEMO_COURIER for c in couriers.all()):
        couriers.change_pin(DEMO_COURIER, pin, actor="demo")
    else:
        couriers.add(DEMO_COURIER, config.carriers[0].name, "Demo Courier", pin, actor="demo")
    return DEMO_COURIER, pin


DEMO_OPERATOR = "demo-admin"


def demo_operator(station: Any) -> tuple[str, str]:
    """An admin a newcomer can log in as: a fresh password every start, printed like the PIN."""
    import secrets as pysecrets

    password = "-".join(pysecrets.token_hex(3) for _ in range(3))
    accounts = station.core.accounts
    if any(o.id == DEMO_OPERATOR for o in accounts.all()):
        accounts.change_password(DEMO_OPERATOR, password, actor="demo")
    else:
        accounts.add(DEMO_OPERATOR, "admin", password, actor="demo")
    return DEMO_OPERATOR, password


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stop_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_demo(config_path: str, *, base: Path, port: int = 8080, speed: float = 10.0,
             people: bool = True, secrets_path: str | None = None) -> int:
    """Everything `make demo` runs, until SIGINT or SIGTERM; then everything stops."""
    import signal

    from rich.console import Console

    from station.api.serve import serve
    from station.bootstrap import build_station
    from station.config import load_config, load_secrets, write_new_secrets
    from station.demo import demo_notify, start_devices
    from station.mosquitto import MosquittoProcess, free_port

    from . import handson

    console = Console(soft_wrap=True)
    # until uvicorn takes the signals over (and after it gives them back), SIGTERM unwinds
    # through the `finally` below like Ctrl-C does, so the broker never outlives the demo
    signal.signal(signal.SIGTERM, _stop_on_term)
    base.mkdir(parents=True, exist_ok=True)
    own_secrets = base / "secrets.toml"
    if not own_secrets.exists():
        write_new_secrets(own_secrets)
    secrets = load_secrets(secrets_path or own_secrets)
    config = load_config(config_path)
    stoppers: list[Any] = []
    try:
        broker = MosquittoProcess(workdir=base / "mosquitto").start()
        stoppers.append(broker.stop)
        camera = RoomCameraServer()  # a room camera over the shelves and doors (#21.3)
        stoppers.append(camera.stop)
        config = config.model_copy(update={
            "cameras": with_room_camera(config, camera.url),
            "station": config.station.model_copy(update={
                "database": str(base / "station.db"), "snapshots_dir": str(base / "snapshots")}),
            "mqtt": config.mqtt.model_copy(update={"port": broker.port}),
            "notify": demo_notify(config.notify),
            # the demo shows itself to a Home Assistant pointed at its broker (read-only)
            "home_assistant": config.home_assistant.model_copy(update={"enabled": True}),
            "metrics": config.metrics.model_copy(update={
                "port": config.metrics.port if _port_free(config.metrics.port) else free_port()}),
        })
        devices = start_devices(config, secrets, broker.url, base)
        stoppers.extend(d.stop for d in devices)
        camera.attach(shelf_hals(devices), {d.device_id: d.hal for d in devices if getattr(d, "kind", "") == "door"})
        station = build_station(config, secrets)
        station.start()
        stoppers.append(station.stop)
        sms = attach_sms_inbox(config, station)
        stoppers.append(sms.stop)
        port = port if port and _port_free(port) else free_port()
        # no token in any URL (ADR 0130): the virtual people's kiosk and the exit camera are
        # paired like real screens; the newcomer logs in as an admin and pairs a kiosk screen
        accounts = station.core.accounts
        kiosk = accounts.pair(accounts.create_pairing("sim-kiosk", actor="demo"), client="demo")[1]
        exit_kiosk = accounts.pair(accounts.create_pairing("exit-1", actor="demo"), client="demo")[1]
        operator_id, password = demo_operator(station)
        op = accounts.login(operator_id, password, client="demo").session_id
        pairing = accounts.create_pairing("kiosk-1", actor="demo")
        store = station.core.ctx.store

        def parcels_in(slot: str) -> list[str]:
            rows = store.query("SELECT waybill FROM parcels WHERE slot = ? AND state = 'shelved'"
                               " ORDER BY created_at", (slot,))
            return [r["waybill"] for r in rows]

        handson.install(station.app, handson.HandsOnRoom(config, shelf_hals(devices), sms, exit_kiosk,
                                                         parcels_in))
        courier_id, pin = demo_courier(station, config, random.Random())
        url = f"http://127.0.0.1:{port}"
        console.print(f"\n[bold green]Parcel station demo[/] ({config.station.name})")
        console.print(f"  API        {url}/docs")
        console.print(f"  operator   {url}/operator   id [bold]{operator_id}[/]  password [bold]{password}[/]")
        console.print(f"  kiosk      {url}/kiosk   pairing code [bold]{pairing}[/] (once, within "
                      f"{int(config.operators.pairing_ttl_s) // 60} min; a new one: station kiosk pair, or the console)")
        console.print(f"  courier    {url}/courier   id [bold]{courier_id}[/]  PIN [bold]{pin}[/]")
        console.print(f"  room       {url}/demo/room   (put and take parcels, the SMS inbox, the exit)")
        console.print(f"  metrics    http://127.0.0.1:{station.metrics_port}/metrics" if station.metrics_port
                      else "  metrics    (port taken: off)")
        console.print(f"  broker     {broker.url}   database {config.station.database}\n")
        if people:
            demo = start_demo_people(config, url, kiosk, op, sms=sms, devices=devices, speed=speed)
            stoppers.append(demo.stop)
        serve(station.app, "127.0.0.1", port)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the last steps are not interrupted
        for stop in reversed(stoppers):
            try:
                stop()
            except Exception:  # noqa: BLE001 - stop the rest whatever one of them says
                log.exception("demo: stopping %r failed", stop)
        console.print("demo stopped", style="dim")
    return 0
