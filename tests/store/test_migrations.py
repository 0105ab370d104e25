"""Migrations run in order and only forward: a database made by an older release is brought
up to date on open, and one made by a newer release is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from station.store.db import Store, StoreError
from station.store.schema import MIGRATIONS, _split, migrate


def test_a_version_1_database_gains_the_sensor_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for statement in _split(MIGRATIONS[0]):
        conn.execute(statement)
    for table in ("sensed", "slot_counts", "slot_lifts"):  # as version 1 was first released
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.close()
    with Store(path) as store:
        tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = store.query_one("SELECT value FROM meta WHERE key = 'schema_version'")["value"]
    assert {"sensed", "slot_counts", "slot_lifts"} <= tables
    assert int(version) == len(MIGRATIONS)


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    assert migrate(conn) == migrate(conn) == len(MIGRATIONS)


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with Store(path):
        pass
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises((StoreError, RuntimeError), match="newer"):
        Store(path).open()


def test_version_4_fills_the_device_event_register_from_the_log(tmp_path: Path) -> None:
    """A database that logged device events before the register existed knows them after
    the migration, as a replay of its log would (#14.9)."""
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for step in MIGRATIONS[:3]:
        for statement in _split(step):
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    conn.execute("INSERT INTO events VALUES (1, '2026-01-01T00:00:00.000000Z', 'door.forced_open',"
                 " 'door-entry', 'door-entry', '{\"boot_id\":\"3-ab\",\"evt_seq\":9}', NULL, ?, ?)",
                 ("0" * 64, "1" * 64))
    conn.execute("INSERT INTO events VALUES (2, '2026-01-01T00:00:00.000000Z', 'door.unlock.requested',"
                 " 'kiosk', 'door-entry', '{}', NULL, ?, ?)", ("1" * 64, "2" * 64))
    conn.close()
    with Store(path) as store:
        rows = store.query("SELECT device, boot_id, evt_seq FROM device_events")
    assert [tuple(r.values()) for r in rows] == [("door-entry", "3-ab", 9)]
