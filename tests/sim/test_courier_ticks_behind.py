"""`courier_ticks_behind`: a guided courier goes on scanning and putting while up to that many
parcels put down wait for their tick, and deals with each tick in turn; the room's promises
hold as with one (the default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shelf_sim.runner import run_embedded
from shelf_sim.scenario import ScenarioError, scenario_from_dict
from station.config import load_config

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = {"name": "ticks-behind", "seed": 3, "speed": 5000, "couriers": 2, "parcels": 40,
            "guided_fraction": 1.0, "second_parcel_fraction": 0.0, "strangers": 0,
            "exit_frame_fraction": 0.0, "arrival_delay_s": [5, 50], "walk_s": [5, 10],
            "customers_at_once": 4, "mistakes": {"courier_wrong_slot": 0.1},
            "faults": {"drop": 0.02, "delay": 0.05, "delay_ms": [5, 100]}}


@pytest.mark.parametrize("behind", [1, 3])
def test_a_courier_goes_on_while_ticks_are_to_come_and_every_parcel_is_shelved(
        tmp_path: Path, behind: int) -> None:
    report = run_embedded(load_config(ROOT / "examples" / "station.toml"),
                          scenario_from_dict({**SCENARIO, "courier_ticks_behind": behind}),
                          workdir=tmp_path / "wd", frames=False)
    assert report["ok"], (report["invariants"], report["examples"])
    out, seen = report["outcome"], report["observed"]
    assert out["parcels_shelved"] == 40 and out["parcels_picked_up"] == 40, report["examples"]
    went_on = seen.get("courier_went_on_with_ticks_to_come", 0)
    assert (went_on > 0) if behind > 1 else (went_on == 0)


def test_no_courier_works_without_looking_at_the_handheld() -> None:
    with pytest.raises(ScenarioError, match="courier_ticks_behind"):
        scenario_from_dict({"courier_ticks_behind": 0})
