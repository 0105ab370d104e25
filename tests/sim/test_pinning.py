"""`shelf-sim run --station-cpus LIST --sim-cpus LIST`: the station process on some CPUs,
the simulator (people, firmware) and its broker on others, as `taskset -c` would put them;
a bad list is refused before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shelf_sim.cli import main as cli_main
from shelf_sim.runner import run_embedded
from shelf_sim.scenario import scenario_from_dict
from station.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "station.toml"
WEEK = str(ROOT / "examples" / "week.toml")

TINY = {"name": "pinned", "seed": 5, "speed": 400, "couriers": 1, "parcels": 6, "guided_fraction": 1.0,
        "second_parcel_fraction": 0.0, "strangers": 0, "exit_frame_fraction": 0.0,
        "arrival_delay_s": [5, 50], "walk_s": [5, 10], "customers_at_once": 2}


def _children() -> dict[int, str]:
    """This process's child processes by pid, with their command lines."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                out[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except FileNotFoundError:
                pass
    return out


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux pins threads to CPUs")
def test_the_station_and_the_simulator_run_on_the_cpus_they_are_given(tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    station_cpu, sim_cpu = max(before), min(before)   # one CPU: both on it, still pinned
    seen: dict[str, set[int]] = {}

    def progress(what: str, n: int) -> None:
        # called on the people's threads, which the run started: they inherit the pin
        seen.setdefault("people", set()).update(os.sched_getaffinity(0))
        for pid, cmd in _children().items():
            if str(tmp_path) not in cmd:
                continue  # another test's broker in this worker: not this run's
            who = "station" if "station.cli run" in cmd else "broker" if "mosquitto" in cmd else None
            if who:
                try:
                    seen.setdefault(who, set()).update(os.sched_getaffinity(pid))
                except ProcessLookupError:
                    pass

    report = run_embedded(load_config(CONFIG), scenario_from_dict(TINY), workdir=tmp_path / "wd",
                          frames=False, progress=progress, station_process=True,
                          station_cpus={station_cpu}, sim_cpus={sim_cpu})
    assert report["ok"], report["examples"]
    assert report["outcome"]["parcels_shelved"] == 6
    assert seen == {"people": {sim_cpu}, "station": {station_cpu}, "broker": {sim_cpu}}
    assert report["station_process"]["cpus"] == [station_cpu]
    assert report["simulator_process"]["cpus"] == [sim_cpu] and report["simulator_process"]["cpu_s"] > 0
    assert os.sched_getaffinity(0) == before      # the caller's CPUs come back


@pytest.mark.parametrize("args, fault", [
    (["--station-cpus", "x"], "'x' is not a CPU list (such as 0, 0,2 or 0-3)"),
    (["--sim-cpus", "3-1"], "'3-1' is not a CPU list"),
    (["--sim-cpus", "-1"], "'-1' is not a CPU list"),
    (["--station-cpus", "0,"], "'0,' is not a CPU list"),
    (["--station-cpus", "4096"], "CPU 4096 is not available here (this process may use "),
])
def test_a_bad_cpu_list_is_refused_before_anything_runs(
        args: list[str], fault: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["run", "--scenario", WEEK, "--config", str(CONFIG), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert fault in err and "Traceback" not in err, err


@pytest.mark.parametrize("args, fault", [
    (["--station-cpus", "0", "--station-url", "http://127.0.0.1:9"], "--station-cpus pins what this run starts"),
    (["--sim-cpus", "0", "--station-url", "http://127.0.0.1:9"], "--sim-cpus pins what this run starts"),
    (["--station-cpus", "0", "--in-process"], "--station-cpus needs the station as its own process"),
])
def test_pinning_what_the_run_does_not_start_is_refused(
        args: list[str], fault: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["run", "--scenario", WEEK, "--config", str(CONFIG), *args]) == 2
    assert fault in capsys.readouterr().err
