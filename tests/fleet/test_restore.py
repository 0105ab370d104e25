"""#22.6: a restored backup is visible upstream. The station's real log is backed up,
written on, restored and written on again, forwarded over a real Mosquitto each time; the
fleet records a declared restore (never a fork), keeps the replaced events, and still calls
a restore that was not declared a fork."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from fleet.ingest import Ingest
from fleet.store import fleet_alarms, verify_station
from station.store.db import Store
from station.upstream import current_epoch, declare_restore, epoch_of, log_epochs

from .support import append, fleet_broker, forwarder, until, verified


def _backup(src: Path, dst: Path) -> None:
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    b.close()


def _forward_all(store: Store, station: str, broker: object, dsn: str) -> None:
    fwd = forwarder(store, station, broker)
    fwd.start()
    try:
        assert fwd.wait_forwarded(store.last_seq, 30)
    finally:
        fwd.stop()


@pytest.mark.parametrize("declared", [True, False])
def test_a_restore_is_told_apart_from_a_rewrite(tmp_path: Path, fleet_dsn: str, declared: bool) -> None:
    live = tmp_path / "station.db"
    with fleet_broker(tmp_path / "broker") as broker:
        ingest = Ingest(fleet_dsn, broker.host, broker.port, client_id="fleet-r").start()
        assert ingest.subscribed.wait(10)
        try:
            store = Store(live).open()
            append(store, 40)
            _forward_all(store, "st-rs", broker, fleet_dsn)
            _backup(live, tmp_path / "backup.db")  # taken at seq 40, cursor 40
            append(store, 30, "after.backup")  # 41..70 reach the fleet, then the disk dies
            _forward_all(store, "st-rs", broker, fleet_dsn)
            with store.reading() as conn:
                old_epoch = current_epoch(conn)
            store.close()
            until(lambda: verified(fleet_dsn, "st-rs") == 70, 30, "fleet holds 70")

            live.unlink()
            _backup(tmp_path / "backup.db", live)
            store = Store(live).open()
            if declared:
                epoch = declare_restore(store, source="backup.db", previous_epoch=old_epoch)
                assert epoch > old_epoch
                with store.reading() as conn:
                    assert epoch_of(log_epochs(conn), 41) == (epoch, 41)
                    assert epoch_of(log_epochs(conn), 40) == (0, 1)
            append(store, 50, "after.restore")  # new, different events under 41..
            _forward_all(store, "st-rs", broker, fleet_dsn)
            last = store.last_seq
            store.close()
            if declared:
                until(lambda: verified(fleet_dsn, "st-rs") == last, 30, "fleet follows the restore")
            else:
                until(lambda: fleet_alarms(psycopg.connect(fleet_dsn, autocommit=True), "st-rs"), 30,
                      "fork alarm")
        finally:
            ingest.stop()
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        alarms = [(a["kind"], a["first_seq"]) for a in fleet_alarms(conn, "st-rs")]
        if declared:
            assert alarms == [("restore", 41)]
            assert verify_station(conn, "st-rs") == (True, last, "")
            row = conn.execute("SELECT type FROM events WHERE station_id = 'st-rs' AND seq = 41").fetchone()
            assert row == ("station.restored",)
            kept = conn.execute("SELECT count(*), min(seq), max(seq) FROM superseded_events"
                                " WHERE station_id = 'st-rs'").fetchone()
            assert kept == (30, 41, 70)
        else:
            assert alarms == [("fork", 41)]
            assert verified(fleet_dsn, "st-rs") == 70


def test_two_restores_of_the_same_backup_get_different_epochs(tmp_path: Path) -> None:
    """The backup does not know of the first restore: the epoch is above what the replaced
    database said (when it can be read) and never below the wall clock's seconds."""
    live = tmp_path / "station.db"
    store = Store(live).open()
    append(store, 5)
    store.close()
    _backup(live, tmp_path / "backup.db")
    epochs = []
    for clock in (1_800_000_000.0, 1_800_000_000.0, 1_800_000_050.0):
        with Store(live).open() as old, old.reading() as conn:
            previous = current_epoch(conn)  # what the replaced database said
        live.unlink()
        _backup(tmp_path / "backup.db", live)
        with Store(live).open() as store:
            epochs.append(declare_restore(store, previous_epoch=previous, clock=lambda c=clock: c))
    assert epochs == [1_800_000_000, 1_800_000_001, 1_800_000_050]


def test_station_backup_and_restore_commands_declare_the_restore_upstream(
        tmp_path: Path, fleet_dsn: str) -> None:
    """The operator's own commands (`station backup`, `station restore`), end to end."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]

    def station(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "station.cli", *args], cwd=root, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    live = tmp_path / "station.db"
    with fleet_broker(tmp_path / "broker") as broker:
        ingest = Ingest(fleet_dsn, broker.host, broker.port, client_id="fleet-rc").start()
        assert ingest.subscribed.wait(10)
        try:
            store = Store(live).open()
            append(store, 40)
            _forward_all(store, "st-rc", broker, fleet_dsn)
            store.close()
            station("backup", "--db", str(live), str(tmp_path / "bk"))
            store = Store(live).open()
            append(store, 30, "after.backup")
            _forward_all(store, "st-rc", broker, fleet_dsn)
            store.close()
            until(lambda: verified(fleet_dsn, "st-rc") == 70, 30, "fleet holds 70")
            station("restore", "--db", str(live), str(tmp_path / "bk"))
            store = Store(live).open()
            append(store, 20, "after.restore")
            _forward_all(store, "st-rc", broker, fleet_dsn)
            last = store.last_seq
            store.close()
            until(lambda: verified(fleet_dsn, "st-rc") == last, 30, "fleet follows the restore")
        finally:
            ingest.stop()
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        assert [(a["kind"], a["first_seq"]) for a in fleet_alarms(conn, "st-rc")] == [("restore", 41)]
        assert verify_station(conn, "st-rc") == (True, last, "")
