"""Virtual people for `make demo`: a gentle, endless stream of couriers and customers, so a
newcomer watching the operator page sees slots light, parcels arrive and leave, doors open.

`station demo` (station/demo.py) calls `start_demo_people(...)` after starting the broker, the
devices and the station, and `.stop()`s the result on exit. No faults are injected here; the
people make an occasional mistake so the alarms panel has something to show."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

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


def start_demo_people(config: Any, secrets: Any, broker_url: str, base_url: str, kiosk_token: str,
                      operator_token: str, *, speed: float = 10.0, station: Any = None,
                      devices: list[Any] | None = None) -> DemoPeople:
    """Start the demo's people against the station at `base_url`, using the shelves of
    `devices` (the firmware objects station/demo.py started). Codes reach the people through
    an SMS inbox that is added next to the station's own sender when `station` is given."""
    from station.notify.messages import StationInfo
    from station.notify.senders import WebhookSender

    sms = SmsInbox()
    if station is not None:
        dispatcher = station.dispatcher
        info = StationInfo(config.station.name, config.station.address, config.station.timezone)
        senders = dispatcher._senders
        senders[0] = _TeeSender(senders[0], WebhookSender(sms.url, info, name="sim-sms"))
    else:
        log.warning("no station object: point its webhook sender at %s for codes to arrive", sms.url)
    hals = {d.device_id: d.hal for d in (devices or []) if getattr(d, "kind", "") == "shelf"}
    return DemoPeople(config, base_url, kiosk_token, operator_token, speed, hals, sms).start()
