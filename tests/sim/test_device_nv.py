"""The room's devices keep their NV record (last accepted command, boot counter) across a
reboot: in memory for a run the simulator starts (a board's FRAM), in a file per device when
it is given a directory (a run against a station that outlives it)."""

from __future__ import annotations

from pathlib import Path

from firmware_stubs.nvstore import FileNvStore
from shelf_sim.runner import Devices
from station.config import load_config, load_secrets, write_new_secrets

ROOT = Path(__file__).resolve().parents[2]


def _devices(tmp_path: Path, nv_dir: Path | None) -> Devices:
    write_new_secrets(tmp_path / "secrets.toml")
    config = load_config(ROOT / "examples" / "station.toml")
    return Devices(config, load_secrets(tmp_path / "secrets.toml", env={}), "mqtt://127.0.0.1:1", nv_dir, {})


def test_a_rebooted_device_keeps_its_last_command_in_memory_and_writes_no_file(tmp_path: Path) -> None:
    devices = _devices(tmp_path, None)
    for device in ("shelf-1", "door-entry"):
        before = devices._make(device)
        before.nv.set_last_seq(41)
        after = devices._make(device)            # what reboot() starts on the same board
        assert after.nv is before.nv and after.nv.last_seq == 41
        assert not isinstance(after.nv, FileNvStore)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets.toml"]


def test_with_a_directory_each_device_keeps_its_record_in_a_file(tmp_path: Path) -> None:
    nv_dir = tmp_path / "nv"
    devices = _devices(tmp_path, nv_dir)
    devices._make("shelf-1").nv.set_last_seq(7)
    again = devices._make("shelf-1")
    assert isinstance(again.nv, FileNvStore) and again.nv.last_seq == 7
    assert (nv_dir / "shelf-1.json").exists()
