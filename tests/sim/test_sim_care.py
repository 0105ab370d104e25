"""The simulator's customers use the station's care (#19): some extend their deadline at
the kiosk and come back later, some overlook a parcel and report its slot empty (it stays,
shelved, and they come back for it), some refuse a parcel as damaged and put it back (it
must end `refused` where it lies). The report counts each, and every invariant stays 0."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from shelf_sim.kpi import summary_lines
from shelf_sim.runner import run_embedded
from shelf_sim.scenario import build_plan, scenario_from_dict
from station.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "station.toml"

CARE = {
    "name": "care", "seed": 7, "speed": 400, "couriers": 1, "parcels": 16, "strangers": 0,
    "guided_fraction": 1.0, "second_parcel_fraction": 0.3, "arrival_delay_s": [1, 30],
    "exit_frame_fraction": 0.3, "walk_s": [5, 10],
    "mistakes": {"customer_walk_off": 0.15},
    "care": {"customer_extend": 0.3, "customer_report_empty": 0.25, "customer_refuse": 0.25},
    "station": {"pickup_session_timeout_s": 30},
}


def test_customers_extend_report_and_refuse_and_every_invariant_stays_zero(tmp_path: Path) -> None:
    report = run_embedded(load_config(CONFIG), scenario_from_dict(CARE), workdir=tmp_path / "st")
    lines = "\n".join(summary_lines(report))
    print(lines)
    assert report["ok"], report["examples"]
    assert set(report["invariants"].values()) == {0}
    planned, out, seen = report["plan"]["care_planned"], report["outcome"], report["observed"]
    assert min(planned.values()) >= 2, planned   # the seed exercises all three
    assert out["customer_extend_asked"] == planned["customer_extend"]
    assert out["customer_reports_empty"] == planned["customer_report_empty"]
    assert out["customer_refusals"] == planned["customer_refuse"]
    assert "customer care" in lines
    # who reported an empty slot came back and collected; who refused left with the rest
    assert out["pickups_completed"] == report["plan"]["customers"], report["examples"]
    assert out["parcels_left_on_shelves"] == out["customer_refusals"]
    # and the station recorded what they did: the refused parcels `refused` where they lie,
    # one alarm per report, one customer extension per request it granted
    db = sqlite3.connect(f"file:{tmp_path / 'st' / 'station.db'}?mode=ro", uri=True)
    try:
        states = dict(db.execute("SELECT state, COUNT(*) FROM parcels GROUP BY state").fetchall())
        kinds = dict(db.execute("SELECT kind, COUNT(*) FROM alarms GROUP BY kind").fetchall())
        extended = db.execute("SELECT COUNT(*) FROM events WHERE type = 'parcel.extended'"
                              " AND json_extract(data, '$.by') = 'customer'").fetchone()[0]
    finally:
        db.close()
    assert states.get("refused", 0) == out["customer_refusals"], states
    assert kinds.get("kiosk.damaged", 0) == out["customer_refusals"], kinds
    assert kinds.get("kiosk.slot_empty", 0) == out["customer_reports_empty"], kinds
    assert extended == seen.get("customer_extensions", 0) == out["customer_extend_asked"]


def test_care_choices_leave_the_rest_of_a_seeds_plan_alone() -> None:
    """Drawn from their own stream: turning them on changes nobody's other choices."""
    shelves = [("shelf-1", 5, 10), ("shelf-2", 5, 10)]
    with_care = build_plan(scenario_from_dict(CARE), shelves)
    plain = scenario_from_dict({k: v for k, v in CARE.items() if k != "care"})
    without = build_plan(plain, shelves)
    assert with_care.parcels == without.parcels
    assert [replace(c, extend=False, report_empty=False, refuse=False) for c in with_care.customers] \
        == without.customers
    assert not any(c.report_empty and c.refuse for c in with_care.customers)
