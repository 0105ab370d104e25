"""Scenario files (examples/day.toml, examples/week.toml) and the seeded plan drawn from them.

Every random choice of a run is drawn here, up front, from one `random.Random(seed)`: who
brings which parcel, who comes to fetch it, how they get in, which mistakes they make and
which faults hit which device when. The run then only executes the plan, so the same seed
gives the same people doing the same things, and the report's outcome counts repeat even
though threads interleave differently (only timings and slot numbers may differ)."""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

CARRIER_FORMATS: dict[str, tuple[str, str, int]] = {
    # carrier -> (prefix, alphabet, length of the variable part); matches examples/station.toml
    "SF": ("SF", "0123456789", 13),
    "ZTO": ("ZT", "0123456789", 12),
    "YTO": ("YT", "0123456789", 13),
    "JD": ("JD", "0123456789ABCDEF", 14),
}


# scenario files are checked by pydantic at the edge: wrong types, values out of range and
# unknown keys refused
_STRICT = ConfigDict(extra="forbid")
Share = Annotated[float, Field(ge=0.0, le=1.0)]      # a probability or a fraction
Count = Annotated[int, Field(ge=0)]
AtLeastOne = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0.0)]
Weight = Annotated[float, Field(ge=0.0)]             # relative, need not add up to 1
Span = tuple[Seconds, Seconds]                       # [low, high]


@dataclass(frozen=True)
class Rates:
    """Probabilities per person (mistakes) or per message (network faults)."""

    __pydantic_config__ = _STRICT

    customer_wrong_slot: Share = 0.0
    customer_foreign_parcel: Share = 0.0
    courier_wrong_slot: Share = 0.0
    customer_walk_off: Share = 0.0


@dataclass(frozen=True)
class Care:
    """What customers ask of the station's care (#19, docs/customer-care.md), per customer:
    extend the deadline at the kiosk (and come back later to collect), report a lit slot
    empty (they overlooked the parcel: it stays, they come back for it), refuse a parcel as
    damaged (lifted, reported, put back). Reporting and refusing exclude each other."""

    __pydantic_config__ = _STRICT

    customer_extend: Share = 0.0
    customer_report_empty: Share = 0.0
    customer_refuse: Share = 0.0


@dataclass(frozen=True)
class Faults:
    """Network faults are per message and per device; the rest are counts spread over the
    run. `drop_events` is separate because the firmware does not resend a lost event (see
    docs/simulator.md, "Known limits")."""

    __pydantic_config__ = _STRICT

    drop: Share = 0.0
    duplicate: Share = 0.0
    delay: Share = 0.0
    delay_ms: Span = (5.0, 150.0)
    drop_events: Share = 0.0
    reboots: Count = 0
    broker_restarts: Count = 0
    stuck_sensors: Count = 0
    dead_leds: Count = 0
    stuck_for_s: Seconds = 120.0


@dataclass(frozen=True)
class Scenario:
    """What a run does; every field has a default so a scenario file names only changes."""

    __pydantic_config__ = _STRICT

    name: str = "scenario"
    seed: int = 1
    speed: Annotated[float, Field(gt=0.0)] = 60.0
    couriers: AtLeastOne = 2
    parcels: Count = 60
    guided_fraction: Share = 0.7
    courier_pace_s: Span = (2.0, 3.0)
    # parcels a guided courier has put down and not yet seen ticked on the handheld before
    # they stop to look (1: the one before the parcel in hand). At a person's pace the tick
    # comes long before the next parcel; at a compressed pace it is a real wait, which a
    # courier who glances at the whole session's list does not make after every parcel
    courier_ticks_behind: AtLeastOne = 1
    sizes: dict[str, Weight] = field(default_factory=lambda: {"S": 0.5, "M": 0.35, "L": 0.15})
    second_parcel_fraction: Share = 0.15
    strangers: Count = 2
    entry_mix: dict[str, Weight] = field(default_factory=lambda: {"code": 0.5, "qr": 0.35, "otp": 0.15})
    exit_frame_fraction: Share = 0.2
    arrival_delay_s: Span = (5.0, 600.0)
    walk_s: Span = (5.0, 20.0)
    customers_at_once: AtLeastOne = 4
    # couriers who enrolled their face and enter by it (at most one per test face the
    # simulator has, shelf_sim/facecam.py LIVE_FACES; the rest use their PIN), and the share
    # of their visits before which an impostor holds up a phone replay or a print of them
    face_entry_fraction: Share = 0.0
    face_spoof_fraction: Share = 0.0
    # where `make testdata` gathered the test faces (empty: tests/data/cache of this checkout)
    face_images: str = ""
    mistakes: Rates = Rates()
    care: Care = Care()
    faults: Faults = Faults()
    station: dict[str, Any] = field(default_factory=dict)
    # a simulated room camera over the shelves and doors (shelf_sim/camera.py, #21.3)
    room_camera: bool = True


_ADAPTER = TypeAdapter(Scenario)


class ScenarioError(ValueError):
    """A scenario file that cannot be run, with the file and the key at fault."""


def scenario_from_dict(data: dict[str, Any]) -> Scenario:
    """Build a Scenario; types are checked and unknown keys refused (pydantic, strict about
    extras) so a typo never silently does nothing and a wrong type fails here, not mid-run."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise ScenarioError(problems) from None


def load_scenario(path: Path | str, **overrides: Any) -> Scenario:
    """Read a scenario TOML (top-level keys and [mistakes], [care], [faults], [station] tables)."""
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
        scenario = scenario_from_dict(data)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ScenarioError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    clean = {k: v for k, v in overrides.items() if v is not None}
    if not clean:
        return scenario
    try:  # the command line's values (--speed, --seed) pass the same checks as the file's
        return scenario_from_dict({**data, **clean})
    except ScenarioError as exc:
        raise ScenarioError(f"command line: {exc}") from None


# --- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ParcelPlan:
    waybill: str
    phone: str
    size: str
    courier: int
    pace_s: float
    slot_u: float          # where a free-mode courier puts it: a fraction of the fitting slots
    wrong_slot: bool       # a guided courier puts it somewhere other than the lit slot


@dataclass(frozen=True)
class CustomerPlan:
    index: int
    phone: str
    waybills: tuple[str, ...]
    method: str            # code | qr | otp
    arrival_delay_s: float
    walk_s: float
    exit_frame: bool
    wrong_slot_take: bool
    foreign_parcel: bool
    walk_off: bool
    # customer care (Care): drawn from a stream of their own, so that turning them on
    # leaves every other choice of a seed as it was
    extend: bool = False
    report_empty: bool = False
    refuse: bool = False


@dataclass(frozen=True)
class StrangerPlan:
    """Someone without a parcel: a made-up code or a phone nothing waits for."""

    index: int
    at_s: float
    method: str
    text: str


@dataclass(frozen=True)
class FaultPlan:
    at_s: float
    kind: str              # reboot | broker_restart | stuck_sensor | dead_led
    device: str = ""
    row: int = 0
    col: int = 0
    duration_s: float = 0.0


# parcels a courier brings per visit (a van load): each visit is one entry at the door and
# one shelving session
VAN_LOAD = 40


@dataclass(frozen=True)
class CourierPlan:
    index: int
    courier_id: str
    carrier: str
    mode: str
    face: bool = False                 # enrolled: enters by face, PIN if refused
    ticks_behind: int = 1              # guided: parcels put down whose tick is not looked at yet
    # per visit: "" or the attack an impostor tries at the face camera first (phone | print)
    spoofs: tuple[str, ...] = ()


@dataclass
class Plan:
    couriers: list[CourierPlan]
    parcels: list[ParcelPlan]
    customers: list[CustomerPlan]
    strangers: list[StrangerPlan]
    faults: list[FaultPlan]
    expected_span_s: float

    def summary(self) -> dict[str, Any]:
        """The deterministic facts of the plan, for the report."""
        c = self.customers
        return {
            "couriers": len(self.couriers), "parcels": len(self.parcels), "customers": len(c),
            "strangers": len(self.strangers),
            "entry_methods": {m: sum(1 for x in c if x.method == m) for m in ("code", "qr", "otp")},
            "face_couriers": sum(1 for x in self.couriers if x.face),
            "face_visits": sum(len(x.spoofs) for x in self.couriers if x.face),
            "face_spoofs_planned": {k: sum(x.spoofs.count(k) for x in self.couriers) for k in ("phone", "print")},
            "exit_by_frame": sum(1 for x in c if x.exit_frame),
            "mistakes_planned": {
                "courier_wrong_slot": sum(1 for p in self.parcels if p.wrong_slot),
                "customer_wrong_slot": sum(1 for x in c if x.wrong_slot_take),
                "customer_foreign_parcel": sum(1 for x in c if x.foreign_parcel),
                "customer_walk_off": sum(1 for x in c if x.walk_off),
            },
            "care_planned": {
                "customer_extend": sum(1 for x in c if x.extend),
                "customer_report_empty": sum(1 for x in c if x.report_empty),
                "customer_refuse": sum(1 for x in c if x.refuse),
            },
            "faults_planned": {k: sum(1 for f in self.faults if f.kind == k)
                               for k in ("reboot", "broker_restart", "stuck_sensor", "dead_led")},
        }


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    keys = sorted(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def waybill_for(rng: random.Random, carrier: str) -> str:
    prefix, alphabet, n = CARRIER_FORMATS[carrier]
    return prefix + "".join(rng.choice(alphabet) for _ in range(n))


def _faces(sc: Scenario, couriers: list[CourierPlan], parcels: list[ParcelPlan],
           faces: int) -> list[CourierPlan]:
    """Which couriers enter by face and which of their visits an impostor tries first. From
    a generator of their own, so a scenario without faces keeps the plan it always had."""
    rng = random.Random(f"faces:{sc.seed}")
    out = []
    for cp in couriers:
        visits = -(-sum(1 for p in parcels if p.courier == cp.index) // VAN_LOAD)
        face = rng.random() < sc.face_entry_fraction and faces > 0
        faces -= face
        spoofs = tuple(rng.choice(("phone", "print")) if face and rng.random() < sc.face_spoof_fraction
                       else "" for _ in range(visits))
        out.append(replace(cp, face=face, spoofs=spoofs if face else ()))
    return out


def build_plan(sc: Scenario, shelves: list[tuple[str, int, int]] | None = None,
               doors: tuple[str, ...] = (), faces: int = 0) -> Plan:
    """Draw everything a run will do from `sc.seed`. `shelves` is (device, rows, cols) of the
    parcel shelves a stuck sensor or dead LED may hit; `doors` may reboot too; `faces` is
    how many test faces the simulator can show at the face camera (one per face courier)."""
    rng = random.Random(sc.seed)
    carriers = sorted(CARRIER_FORMATS)
    couriers = [CourierPlan(i, f"sim-c{i + 1}", carriers[i % len(carriers)],
                            "guided" if rng.random() < sc.guided_fraction else "free",
                            ticks_behind=sc.courier_ticks_behind)
                for i in range(sc.couriers)]
    parcels: list[ParcelPlan] = []
    seen_wb: set[str] = set()
    seen_phone: set[str] = set()
    phones: list[str] = []
    for i in range(sc.parcels):
        courier = i % max(1, sc.couriers)
        while True:
            wb = waybill_for(rng, couriers[courier].carrier)
            if wb not in seen_wb:
                seen_wb.add(wb)
                break
        if phones and rng.random() < sc.second_parcel_fraction:
            phone = rng.choice(phones[-20:])  # someone who just got one gets another
        else:
            while True:
                phone = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
                if phone not in seen_phone:
                    seen_phone.add(phone)
                    break
            phones.append(phone)
        guided = couriers[courier].mode == "guided"
        parcels.append(ParcelPlan(
            wb, phone, _weighted(rng, sc.sizes), courier, rng.uniform(*sc.courier_pace_s),
            rng.random(), guided and rng.random() < sc.mistakes.courier_wrong_slot))
    by_phone: dict[str, list[str]] = {}
    for p in parcels:
        by_phone.setdefault(p.phone, []).append(p.waybill)
    customers = []
    care_rng = random.Random(f"{sc.seed}/care")
    for i, phone in enumerate(by_phone):
        m, care = sc.mistakes, sc.care
        extend, problem = care_rng.random(), care_rng.random()  # two draws each, whatever the rates
        customers.append(CustomerPlan(
            i, phone, tuple(by_phone[phone]), _weighted(rng, sc.entry_mix),
            rng.uniform(*sc.arrival_delay_s), rng.uniform(*sc.walk_s),
            rng.random() < sc.exit_frame_fraction, rng.random() < m.customer_wrong_slot,
            rng.random() < m.customer_foreign_parcel, rng.random() < m.customer_walk_off,
            extend < care.customer_extend, problem < care.customer_report_empty,
            care.customer_report_empty <= problem < care.customer_report_empty + care.customer_refuse))
    per_courier = sc.parcels / max(1, sc.couriers)
    span = per_courier * sum(sc.courier_pace_s) / 2 + sc.arrival_delay_s[1] + sc.walk_s[1]
    strangers = []
    for i in range(sc.strangers):
        method = rng.choice(["code", "otp"])
        text = (f"{rng.randrange(1, 3)}-{rng.randrange(1, 6)}-{rng.randrange(1, 11):02d}-"
                f"{rng.randrange(10**8):08d}" if method == "code"
                else f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}")
        if method == "otp" and text in by_phone:
            text = "13000000000"
        strangers.append(StrangerPlan(i, rng.uniform(0, span), method, text))
    faults: list[FaultPlan] = []
    f = sc.faults
    shelves = shelves or []
    devices = [s[0] for s in shelves] + list(doors)
    for _ in range(f.reboots if devices else 0):
        faults.append(FaultPlan(rng.uniform(0.1, 0.9) * span, "reboot", rng.choice(devices)))
    for _ in range(f.broker_restarts):
        faults.append(FaultPlan(rng.uniform(0.2, 0.8) * span, "broker_restart"))
    for kind, n in (("stuck_sensor", f.stuck_sensors), ("dead_led", f.dead_leds)):
        for _ in range(n if shelves else 0):
            dev, rows, cols = rng.choice(shelves)
            faults.append(FaultPlan(rng.uniform(0.0, 0.7) * span, kind, dev, rng.randint(1, rows),
                                    rng.randint(1, cols), f.stuck_for_s if kind == "stuck_sensor" else span))
    faults.sort(key=lambda x: x.at_s)
    return Plan(_faces(sc, couriers, parcels, faces), parcels, customers, strangers, faults, span)
