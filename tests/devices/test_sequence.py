"""The station's command sequence stays above what every device has accepted (#22.5).

A restored backup or a lost `.devseq`, after a clock that once ran fast, left the station
numbering commands below the devices' NV `last_seq`: every command was refused `replayed`.
The real firmware (in-process, over the test broker) holds the other end.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from station.devices.link import SeqSource

from .conftest import wait_until

HOUR_US = 3600 * 1_000_000


def _nv(path: Path, last_seq: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"last_seq": last_seq, "boot_counter": 3}))


@pytest.mark.parametrize("devseq", ["lost", "restored"])
def test_a_lost_or_restored_devseq_after_a_fast_clock_does_not_make_commands_replayed(
        devseq, cfg, secrets, fleet, make_link, events, tmp_path):
    ahead = time.time_ns() // 1000 + HOUR_US  # what the door took while the clock ran fast
    _nv(fleet.nv_dir / "door-entry.json", ahead)
    fleet.door("door-entry")
    seq_path = tmp_path / "station.devseq"
    if devseq == "restored":
        seq_path.write_text(str(time.time_ns() // 1000 - HOUR_US))  # an old backup's mark
    link = make_link(cfg, secrets, seq_path=seq_path)
    assert link.wait_reported("door-entry", lambda s: s["time"]["trusted"], 5)

    outcome = link.unlock("door-entry", pulse_s=0.1).wait(5)
    assert outcome.status == "acked", outcome
    assert not events.of("device.command_refused", "door-entry")
    assert fleet.running["door-entry"].nv.last_seq > ahead
    assert int(seq_path.read_text()) > ahead  # the mark on disk is past it as well


def test_a_replayed_refusal_bumps_past_the_device_once(cfg, secrets, fleet, make_link, events):
    door = fleet.door("door-entry")
    link = make_link(cfg, secrets)
    assert link.wait_reported("door-entry", lambda s: s["time"]["trusted"], 5)
    # the door took a far higher seq than its retained state says (a state lost in transit)
    ahead = time.time_ns() // 1000 + HOUR_US
    door.nv.set_last_seq(ahead)

    outcome = link.unlock("door-entry", pulse_s=0.1).wait(5)
    assert outcome.status == "acked", outcome
    refused = events.wait("device.command_refused", "door-entry")
    assert refused.data["reason"] == "replayed"
    bumps = events.of("device.seq_bumped", "door-entry")
    assert len(bumps) == 1 and bumps[0].data["reported"] == ahead
    assert door.nv.last_seq > ahead
    # and from now on the first try works
    mark = events.mark()
    assert link.unlock("door-entry", pulse_s=0.1).wait(5).status == "acked"
    assert not [e for e in events.events[mark:] if e.kind in ("device.seq_bumped", "device.command_refused")]


def test_a_second_replayed_refusal_is_final(cfg, secrets, fleet, make_link, events):
    """A device claiming a seq beyond any honest clock is not followed there: one bump, then
    the refusal stands (the operator sees it), and the sequence is not thrown away."""
    door = fleet.door("door-entry")
    link = make_link(cfg, secrets)
    assert link.wait_reported("door-entry", lambda s: s["time"]["trusted"], 5)
    door.nv.set_last_seq(SeqSource.MAX_OBSERVED + 5)

    outcome = link.unlock("door-entry", pulse_s=0.1).wait(5)
    assert (outcome.status, outcome.reason) == ("refused", "replayed")
    wait_until(lambda: len(events.of("device.command_refused", "door-entry")) == 2, 5, "two refusals")
    assert len(events.of("device.seq_bumped", "door-entry")) == 1
    assert link._seq.next() < SeqSource.MAX_OBSERVED


def test_the_devseq_file_and_its_directory_are_synced(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    source = SeqSource(tmp_path / "x.devseq")
    source.next()
    assert synced == ["file", "dir"]
    assert source.observe(time.time_ns() // 1000 + HOUR_US)
    assert synced == ["file", "dir", "file", "dir"]
    assert not source.observe(-1) and not source.observe(SeqSource.MAX_OBSERVED)
