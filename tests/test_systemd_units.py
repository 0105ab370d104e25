"""examples/systemd/ must stay installable (issue 17): systemd itself checks each unit, and
every ExecStart command line is parsed by the real argument parser it will meet."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_stubs.base import common_args
from station.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "examples" / "systemd"
VENV = "/opt/parcel-station/.venv"


def _exec_start(unit: Path) -> list[str]:
    text = unit.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_there_is_a_unit_for_the_station_the_controllers_and_the_broker() -> None:
    names = sorted(p.name for p in UNITS.glob("*.service"))
    assert names == ["parcel-station-broker.service", "parcel-station-door@.service",
                     "parcel-station-shelf@.service", "parcel-station.service"]
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        assert "Restart=always" in text and "NoNewPrivileges=true" in text, unit.name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_every_unit(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    for unit in UNITS.glob("*.service"):
        (tmp_path / unit.name).write_text(unit.read_text().replace(VENV, str(venv)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no",
                           *sorted(str(p) for p in tmp_path.glob("*.service"))],
                          capture_output=True, text=True, timeout=60, check=False)
    complaints = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    assert done.returncode == 0 and not complaints, complaints


def test_the_station_unit_runs_a_command_the_cli_knows() -> None:
    argv = _exec_start(UNITS / "parcel-station.service")
    assert argv[0] == f"{VENV}/bin/station"
    args = build_parser().parse_args(argv[1:])
    assert args.fn.__name__ == "cmd_run" and args.config == "/etc/parcel-station/station.toml"


@pytest.mark.parametrize("kind", ["shelf", "door"])
def test_the_controller_units_run_a_command_the_firmware_knows(kind: str) -> None:
    argv = _exec_start(UNITS / f"parcel-station-{kind}@.service")
    assert argv[:3] == [f"{VENV}/bin/python", "-m", f"firmware_stubs.{kind}"]
    args = common_args(kind).parse_args(argv[3:])
    assert args.device == "%i" and args.secrets == "%d/secrets" and args.nv_dir == "${STATE_DIRECTORY}"
