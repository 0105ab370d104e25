"""The simulator's room camera (#21.3): a simulated run's takes carry room pictures taken
through the station's own camera path (an HTTP still-image camera the simulator serves),
sealed on disk, and the report counts the events with and without one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from shelf_sim.kpi import summary_lines
from shelf_sim.runner import run_embedded
from shelf_sim.scenario import scenario_from_dict
from station.config import load_config, load_secrets
from station.vision.snapshots import SnapshotStore

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "station.toml"
TINY_DAY = {"name": "tiny-day", "seed": 7, "speed": 400, "couriers": 1, "parcels": 8, "strangers": 0,
            "guided_fraction": 1.0, "arrival_delay_s": [1, 30], "exit_frame_fraction": 0.0,
            "station": {"pickup_session_timeout_s": 30}}


def test_a_take_in_a_simulated_day_has_a_sealed_room_picture(tmp_path: Path) -> None:
    work = tmp_path / "station"
    report = run_embedded(load_config(CONFIG), scenario_from_dict(TINY_DAY), workdir=work)
    assert report["ok"], report["invariants"]
    pics = report["pictures"]
    assert pics["by_type"]["slot.sensed"]["with"] > report["outcome"]["parcels_picked_up"] > 0, pics
    assert pics["without_picture"] == 0 and pics["by_type"]["exit.passed"]["with"] > 0, pics
    assert any("room pictures" in line for line in summary_lines(report))

    conn = sqlite3.connect(work / "station.db")
    takes = [json.loads(d) for (d,) in conn.execute(
        "SELECT e.data FROM events e JOIN events t ON t.seq = e.seq + 1"
        " WHERE e.type = 'slot.sensed' AND t.type = 'pickup.slot.taken'")]
    conn.close()
    assert takes and all(t["action"] == "take" for t in takes)
    ref = next(t["picture"] for t in takes if t["picture"])
    stored = SnapshotStore(work / "snapshots", key=load_secrets(work / "secrets.toml", env={}).encryption_key)
    on_disk = next((work / "snapshots").rglob(f"{ref}.snap")).read_bytes()
    assert on_disk[:2] != b"\xff\xd8"  # not a JPEG without the key
    assert stored.load(ref)[:3] == b"\xff\xd8\xff"  # a JPEG with it
