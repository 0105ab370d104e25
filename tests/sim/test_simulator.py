"""The simulator inside `make test`: a seeded scenario with faults and mistakes switched on
must keep the station's invariants, and one seed must give one report (apart from timings)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shelf_sim.cli import main as cli_main
from shelf_sim.kpi import deterministic_view, summary_lines, write_report
from shelf_sim.runner import run_embedded
from shelf_sim.scenario import ScenarioError, build_plan, load_scenario, scenario_from_dict
from station.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "station.toml"

FAULTY = {
    "name": "make-test", "seed": 11, "speed": 400, "couriers": 2, "parcels": 60,
    "guided_fraction": 1.0, "second_parcel_fraction": 0.15, "strangers": 2,
    "exit_frame_fraction": 0.25, "arrival_delay_s": [5, 200], "walk_s": [5, 15],
    # 2 couriers + 3 customers + walk-offs stay within the 8 colours (tests/sim/test_palette_exhaustion.py)
    "customers_at_once": 3,
    "mistakes": {"customer_wrong_slot": 0.08, "customer_foreign_parcel": 0.08,
                 "courier_wrong_slot": 0.05, "customer_walk_off": 0.05},
    # customer care (#19): a few extend, report a slot empty, refuse a parcel
    "care": {"customer_extend": 0.05, "customer_report_empty": 0.05, "customer_refuse": 0.05},
    "faults": {"drop": 0.02, "duplicate": 0.02, "delay": 0.04, "delay_ms": [5, 120],
               "reboots": 2, "broker_restarts": 1, "stuck_sensors": 2, "stuck_for_s": 100,
               "dead_leds": 2},
    "station": {"pickup_session_timeout_s": 60},
}


@pytest.fixture(scope="module")
def faulty_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One run of the FAULTY scenario shared by the tests below (about 30 s)."""
    tmp = tmp_path_factory.mktemp("sim")
    report = run_embedded(load_config(CONFIG), scenario_from_dict(FAULTY), workdir=tmp / "station")
    write_report(report, tmp / "report")
    print("\n".join(summary_lines(report)))
    return report, tmp / "report"


def test_faults_and_mistakes_keep_the_invariants(faulty_report: tuple[dict[str, Any], Path]) -> None:
    report, out_dir = faulty_report
    assert report["invariants"] == {
        "wrong_slots_lit": 0, "parcels_lost": 0, "doors_opened_without_waiting_parcel": 0,
        "foreign_parcels_let_out": 0, "strangers_let_in": 0, "station_stalled": 0,
        "spoofs_admitted": 0}, report["examples"]
    assert report["ok"]
    plan, out = report["plan"], report["outcome"]
    assert plan["customers"] >= 40
    assert out["parcels_shelved"] >= 0.9 * plan["parcels"], report["examples"]
    assert out["pickups_completed"] >= 0.8 * plan["customers"], report["examples"]
    assert out["strangers_refused"] == plan["strangers"]
    assert out["reboots"] == 2 and out["broker_restarts"] == 1 and out["dead_leds"] == 2
    assert out["wrong_parcels_caught_at_exit"] >= 1
    care = plan["care_planned"]
    assert min(care.values()) >= 1, care
    # exercised and counted (a fault can spoil one: a customer who finds nothing refuses nothing)
    for done, planned in (("customer_extend_asked", "customer_extend"),
                          ("customer_reports_empty", "customer_report_empty"),
                          ("customer_refusals", "customer_refuse")):
        assert 1 <= out[done] <= care[planned], (done, out[done], care, report["examples"])
    assert sum(report["timing"]["network_faults_injected"].values()) > 0
    assert (out_dir / "report.json").exists() and (out_dir / "kpi.png").exists()


def test_same_seed_same_report(tmp_path: Path) -> None:
    tiny = scenario_from_dict({
        "name": "tiny", "seed": 5, "speed": 400, "couriers": 1, "parcels": 8, "strangers": 1,
        "guided_fraction": 1.0, "arrival_delay_s": [1, 30], "exit_frame_fraction": 0.5,
        "mistakes": {"courier_wrong_slot": 0.3, "customer_walk_off": 0.3},
        "station": {"pickup_session_timeout_s": 30},
    })
    config = load_config(CONFIG)
    first = run_embedded(config, tiny, workdir=tmp_path / "a")
    second = run_embedded(config, tiny, workdir=tmp_path / "b")
    assert deterministic_view(first) == deterministic_view(second)
    assert first["ok"] and first["outcome"]["pickups_completed"] == first["plan"]["customers"]
    shelves = [("shelf-1", 5, 10), ("shelf-2", 5, 10)]
    assert build_plan(replace(tiny, seed=6), shelves).parcels != build_plan(tiny, shelves).parcels


@pytest.mark.parametrize("name", ["day.toml", "week.toml", "faces.toml"])
def test_example_scenarios_load_and_plan(name: str) -> None:
    scenario = load_scenario(ROOT / "examples" / name)
    plan = build_plan(scenario, [("shelf-1", 5, 10), ("shelf-2", 5, 10)], ("door-entry", "door-exit"))
    assert len(plan.parcels) == scenario.parcels
    assert build_plan(scenario, [("shelf-1", 5, 10), ("shelf-2", 5, 10)],
                      ("door-entry", "door-exit")).summary() == plan.summary()


def test_unknown_scenario_key_is_refused() -> None:
    with pytest.raises(ScenarioError, match="parcel: Unexpected keyword"):
        scenario_from_dict({"parcel": 3})


@pytest.mark.parametrize("text, fault", [
    ("speed = 'fast'", "speed: Input should be a valid number"),
    ("[faults]\ndorp = 0.1", "faults.dorp: Unexpected keyword"),
    ("walk_s = [5]", "walk_s.1: Field required"),
    ("max_in_room = 8", "max_in_room: Unexpected keyword"),   # the key's old name
    ("speed = ", "Invalid value"),                            # not TOML
    ("speed = 0", "speed: Input should be greater than 0"),
    ("[mistakes]\ncustomer_walk_off = 1.5", "mistakes.customer_walk_off: Input should be less than or equal to 1"),
    ("arrival_delay_s = [-1, 5]", "arrival_delay_s.0: Input should be greater than or equal to 0"),
])
def test_a_bad_scenario_file_is_named_with_its_key_and_nothing_runs(
        tmp_path: Path, text: str, fault: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text + "\n")
    with pytest.raises(ScenarioError, match=fault):
        load_scenario(bad)
    assert cli_main(["run", "--scenario", str(bad), "--config", str(CONFIG)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"shelf-sim: error: {bad}: ") and "Traceback" not in err, err
    assert cli_main(["run", "--scenario", str(tmp_path / "missing.toml")]) == 2
    assert "No such file" in capsys.readouterr().err


@pytest.mark.parametrize("args, fault", [
    (["--speed", "0"], "command line: speed: Input should be greater than 0"),
    (["--speed", "-5"], "command line: speed: Input should be greater than 0"),
])
def test_a_bad_command_line_value_is_refused_before_anything_runs(
        args: list[str], fault: str, capsys: pytest.CaptureFixture[str]) -> None:
    week = str(ROOT / "examples" / "week.toml")
    assert cli_main(["run", "--scenario", week, "--config", str(CONFIG), *args]) == 2
    assert fault in capsys.readouterr().err
