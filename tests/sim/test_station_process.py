"""The simulator with the station as its own process (`station run`, the CLI's default):
the same invariants and the same report as in-process, read across the process boundary."""

from __future__ import annotations

from pathlib import Path

from shelf_sim.kpi import summary_lines
from shelf_sim.runner import run_embedded
from shelf_sim.scenario import scenario_from_dict
from station.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "station.toml"

SMALL = {
    "name": "station-process", "seed": 11, "speed": 400, "couriers": 2, "parcels": 30,
    "guided_fraction": 1.0, "second_parcel_fraction": 0.15, "strangers": 2,
    "exit_frame_fraction": 0.25, "arrival_delay_s": [5, 200], "walk_s": [5, 15], "customers_at_once": 3,
    "mistakes": {"customer_wrong_slot": 0.08, "customer_foreign_parcel": 0.08,
                 "courier_wrong_slot": 0.05, "customer_walk_off": 0.05},
    # the room's faults that cross the process boundary; message faults: test_simulator.py
    "faults": {"reboots": 1, "broker_restarts": 1},
    "station": {"pickup_session_timeout_s": 60},
}


def test_station_as_a_process_keeps_the_invariants(tmp_path: Path) -> None:
    workdir = tmp_path / "station"
    report = run_embedded(load_config(CONFIG), scenario_from_dict(SMALL), workdir=workdir,
                          station_process=True)
    print("\n".join(summary_lines(report)))
    assert report["invariants"] == {
        "wrong_slots_lit": 0, "parcels_lost": 0, "doors_opened_without_waiting_parcel": 0,
        "foreign_parcels_let_out": 0, "strangers_let_in": 0, "station_stalled": 0,
        "spoofs_admitted": 0}, report["examples"]
    assert report["ok"]
    plan, out = report["plan"], report["outcome"]
    assert out["parcels_shelved"] >= 0.9 * plan["parcels"], report["examples"]
    assert out["pickups_completed"] >= 0.8 * plan["customers"], report["examples"]
    assert out["strangers_refused"] == plan["strangers"]
    assert out["reboots"] == 1 and out["broker_restarts"] == 1
    # it really was another process: its own config file and log in the workdir
    assert load_config(workdir / "station.toml").station.database == str(workdir.resolve() / "station.db")
    assert "API on http://127.0.0.1:" in (workdir / "station.log").read_text()
