"""`station backup DIR` / `station restore DIR` (#16.4): an online copy that is consistent
while the station writes, a manifest whose hashes restore checks, a restore that refuses a
changed backup and a running station, and keeps what it replaces."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from station.store.archive import verify_log
from station.store.backup import BackupError, RunLock, check_backup, take_backup
from station.store.db import Store
from station.store.eventlog import Event
from station.store.retention import Retention

from .test_eventlog import ROOT, run_cli
from .test_retention import DAY, T0, history


def test_a_backup_taken_while_commits_go_on_is_one_consistent_state(tmp_path: Path) -> None:
    store, _ = history(tmp_path / "s.db", days=20, per_day=200)
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        while not stop.is_set():
            written.extend(r.seq for r in store.append(Event("door.unlocked", "door-entry", "station", {})))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(written) < 5:  # the writer is going
            pass
        info = take_backup(store.path, tmp_path / "bk")
        during = len(written)
    finally:
        stop.set()
        writer.join(30)
    assert during > 5 or len(written) > during  # commits went on around the copy
    manifest = check_backup(tmp_path / "bk")
    import sqlite3
    with sqlite3.connect(tmp_path / "bk" / "station.db") as conn:
        result = verify_log(conn)
        last = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0]
    assert result.ok and last == manifest["last_seq"] == info.last_seq
    assert set(manifest["files"]) == {"station.db"}
    store.close()


def test_backup_then_restore_through_the_cli_keeps_the_replaced_database(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store, clock = history(db, days=3)
    db.with_suffix(".devseq").write_text("5000")
    backed_up = store.last_seq
    store.close()
    done = run_cli("backup", "--db", str(db), str(tmp_path / "bk"))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"station.db", "station.devseq"} and manifest["last_seq"] == backed_up
    # the station goes on after the backup; its device sequence grows
    store = Store(db).open()
    store.append(Event("note.test", "later", "tester", {}))
    store.close()
    db.with_suffix(".devseq").write_text("9000")
    done = run_cli("restore", "--db", str(db), str(tmp_path / "bk"))
    assert done.returncode == 0, done.stderr
    assert "before-restore" in done.stdout
    restored = Store(db).open()
    try:
        types = [r["type"] for r in restored.query("SELECT type FROM events WHERE seq > ?", (backed_up,))]
        assert types == ["station.restored"]  # the later event is gone, the restore is declared
        with restored.snapshot() as conn:
            assert verify_log(conn).ok
    finally:
        restored.close()
    assert db.with_suffix(".devseq").read_text() == "9000"  # never lowered
    aside = [p for p in tmp_path.iterdir() if ".before-restore-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1


def test_restore_refuses_a_changed_backup_and_touches_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store, _ = history(db, days=2)
    store.close()
    assert run_cli("backup", "--db", str(db), str(tmp_path / "bk")).returncode == 0
    copy = tmp_path / "bk" / "station.db"
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x40
    copy.write_bytes(bytes(data))
    before = db.read_bytes()
    done = run_cli("restore", "--db", str(db), str(tmp_path / "bk"))
    assert done.returncode == 2 and "station.db: changed since the backup" in done.stderr, done.stderr
    assert db.read_bytes() == before


HOLD = textwrap.dedent("""
    import sys, time
    from station.store.backup import RunLock
    lock = RunLock(sys.argv[1]).acquire()  # held while the process lives
    print("locked", flush=True)
    time.sleep(120)
""")


def test_restore_refuses_while_a_station_runs_on_the_database(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store, _ = history(db, days=2)
    store.close()
    assert run_cli("backup", "--db", str(db), str(tmp_path / "bk")).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        done = run_cli("restore", "--db", str(db), str(tmp_path / "bk"))
        assert done.returncode == 2 and "a station is running on this database" in done.stderr, done.stderr
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed, as a crashed station would be): the lock went with it
    RunLock(db).acquire().release()


def test_a_backup_with_the_archive_verifies_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store, clock = history(db, days=10)
    Retention(store, tmp_path / "archive", keep_days=3, segment_events=100).run(T0 + 10 * DAY)
    info = take_backup(db, tmp_path / "bk", archive_dir=tmp_path / "archive")
    store.close()
    manifest = check_backup(tmp_path / "bk")
    assert info.checkpoint_seq == 700 and manifest["checkpoint"]["seq"] == 700
    assert len([f for f in manifest["files"] if f.startswith("archive/")]) == 7


def test_a_running_station_holds_the_run_lock_that_restore_needs(tmp_path: Path) -> None:
    """The lock is taken by Station.start itself (what `station run` calls), and let go on stop."""
    from tests.support.stack import LiveStation

    with LiveStation(tmp_path / "live") as live:
        db = Path(live.config.station.database)
        done = take_backup(db, tmp_path / "bk")
        assert done.last_seq >= 1
        cli = run_cli("restore", "--db", str(db), str(tmp_path / "bk"))
        assert cli.returncode == 2 and "a station is running on this database" in cli.stderr, cli.stderr
    RunLock(db).acquire().release()


def test_a_backup_with_a_segment_missing_from_the_archive_is_refused(tmp_path: Path) -> None:
    """Restore verifies the archive end to end, so a backup that lacks a recorded segment
    could never be restored: the backup says so when it is taken."""
    db = tmp_path / "s.db"
    store, clock = history(db, days=10)
    Retention(store, tmp_path / "archive", keep_days=3, segment_events=100).run(T0 + 10 * DAY)
    store.close()
    sorted((tmp_path / "archive").glob("events-*.jsonl.gz"))[2].unlink()
    with pytest.raises(BackupError, match="archive does not verify"):
        take_backup(db, tmp_path / "bk", archive_dir=tmp_path / "archive")
    # without the archive the database alone is backed up and restorable
    take_backup(db, tmp_path / "bk2")
    assert check_backup(tmp_path / "bk2")["checkpoint"]["seq"] == 700
