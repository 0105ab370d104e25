"""The hash-chained event log: tampering with the database file is caught, by seq."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.store.db import Store
from station.store.eventlog import GENESIS, Event, iter_events, row_hash, verify_chain

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.t = 1_767_225_600.0

    def __call__(self) -> float:
        self.t += 1.5
        return self.t


def build_log(path: Path, n: int = 40) -> Store:
    store = Store(path, clock=Clock()).open()
    for i in range(1, n + 1):
        store.append(Event("note.test", f"subject-{i}", "tester",
                           {"i": i, "marker": f"row-{i:04d}-payload", "text": "x" * (i % 7)}))
    return store


def tamper(path: Path, needle: bytes) -> None:
    """Flip one character of a string that occurs exactly once in the database file."""
    data = bytearray(path.read_bytes())
    assert data.count(needle) == 1, f"{needle!r} is not unique in the file"
    at = data.index(needle) + len(needle) - 1
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    path.write_bytes(bytes(data))


def unique_window(path: Path, text: str, width: int = 14) -> bytes:
    blob = path.read_bytes()
    raw = text.encode()
    for start in range(0, len(raw) - width + 1):
        window = raw[start:start + width]
        if window[-1:].isdigit() and blob.count(window) == 1:
            return window
    raise AssertionError(f"no unique window ending in a digit in {text!r}")


def verify_file(path: Path):
    conn = sqlite3.connect(path)
    try:
        return verify_chain(conn)
    finally:
        conn.close()


def test_a_fresh_log_verifies_and_chains_from_genesis(tmp_path: Path) -> None:
    store = build_log(tmp_path / "s.db")
    result = verify_chain(store.conn)
    assert result.ok and result.checked == 40
    events = list(iter_events(store.conn))
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:]))
    e = events[5]
    from station.store.eventlog import canonical_json
    assert e.hash == row_hash(e.seq, e.ts, e.type, e.actor, e.subject, canonical_json(e.data),
                              e.snapshot, e.prev_hash)
    store.close()


@pytest.mark.parametrize("target", [1, 17, 40])
def test_verify_names_the_tampered_row(tmp_path: Path, target: int) -> None:
    path = tmp_path / "s.db"
    build_log(path).close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    tamper(path, f"row-{target:04d}-payload".encode())
    result = verify_file(path)
    assert not result.ok
    assert result.first_bad_seq == target
    assert result.checked == target - 1
    assert "hash" in result.problem


def test_verify_names_a_tampered_row_written_by_the_flows(tmp_path: Path, secrets) -> None:
    from tests.flows.harness import make_station, phone, sf_waybill

    st = make_station(tmp_path, secrets)
    st.add_courier()
    for n in range(5):
        st.shelve(sf_waybill(n), phone(n))
    scanned = st.events("parcel.scanned")[2]
    st.store.close()
    path = Path(st.config.station.database)
    tamper(path, unique_window(path, scanned["data"]))
    result = verify_file(path)
    assert not result.ok and result.first_bad_seq == scanned["seq"]


def test_verify_names_a_row_deleted_from_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    build_log(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER events_no_delete")  # what someone with the file could do
    conn.execute("DELETE FROM events WHERE seq = 23")
    conn.commit()
    conn.close()
    result = verify_file(path)
    assert not result.ok and result.first_bad_seq == 23 and "missing" in result.problem


def test_a_rewritten_chain_tail_is_caught_at_the_first_changed_row(tmp_path: Path) -> None:
    """Recomputing one row's hash is not enough: the next row's prev_hash gives it away."""
    path = tmp_path / "s.db"
    build_log(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER events_no_update")
    row = conn.execute("SELECT seq, ts, type, actor, subject, data, snapshot, prev_hash FROM events"
                       " WHERE seq = 10").fetchone()
    data = row[5].replace("row-0010", "row-9999")
    new_hash = row_hash(row[0], row[1], row[2], row[3], row[4], data, row[6], row[7])
    conn.execute("UPDATE events SET data = ?, hash = ? WHERE seq = 10", (data, new_hash))
    conn.commit()
    conn.close()
    result = verify_file(path)
    assert not result.ok and result.first_bad_seq == 11 and "prev_hash" in result.problem


def test_update_and_delete_of_events_are_refused(tmp_path: Path) -> None:
    store = build_log(tmp_path / "s.db", 3)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.conn.execute("UPDATE events SET data = '{}' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.conn.execute("DELETE FROM events WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.conn.execute("DELETE FROM events")
    assert verify_chain(store.conn).ok and verify_chain(store.conn).checked == 3
    store.close()


def test_a_failed_transaction_leaves_no_event_and_the_chain_continues(tmp_path: Path) -> None:
    store = build_log(tmp_path / "s.db", 3)
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.emit(Event("note.test", "lost", data={"i": 99}))
            raise RuntimeError("boom")
    assert store.last_seq == 3
    store.append(Event("note.test", "kept", data={"i": 4}))
    assert verify_chain(store.conn).ok and store.last_seq == 4
    store.close()


def test_reopened_store_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    build_log(path, 5).close()
    store = Store(path, clock=Clock()).open()
    store.append(Event("note.test", "after", data={}))
    assert store.last_seq == 6 and verify_chain(store.conn).ok
    store.close()


def test_a_clock_step_back_does_not_reorder_event_times(tmp_path: Path) -> None:
    times = iter([1000.0, 2000.0, 1500.0, 2500.0])
    store = Store(tmp_path / "s.db", clock=lambda: next(times)).open()
    for i in range(4):
        store.append(Event("note.test", str(i)))
    ts = [e.ts for e in iter_events(store.conn)]
    assert ts == sorted(ts)
    store.close()


# --- the operator's command ------------------------------------------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "300", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True, timeout=60, env=env,
                          cwd=ROOT)


def test_cli_log_verify_names_the_tampered_row_by_seq(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    build_log(path).close()
    ok = run_cli("log", "verify", "--db", str(path))
    assert ok.returncode == 0, ok.stderr
    assert "40" in ok.stdout
    tamper(path, b"row-0031-payload")
    bad = run_cli("log", "verify", "--db", str(path))
    assert bad.returncode != 0
    assert "seq 31" in bad.stdout + bad.stderr


def test_cli_log_verify_names_a_deleted_row(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    build_log(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute("DELETE FROM events WHERE seq = 7")
    conn.commit()
    conn.close()
    bad = run_cli("log", "verify", "--db", str(path))
    assert bad.returncode != 0 and "seq 7" in bad.stdout + bad.stderr


def test_a_waiter_wakes_on_the_next_commit_and_times_out_without_one(tmp_path: Path) -> None:
    """Long polls (a handheld waiting for "shelved") block on this instead of polling."""
    import threading

    store = build_log(tmp_path / "w.db", 3)
    assert store.wait_for_commit(2, 0.0) is True          # already past seq 2
    assert store.wait_for_commit(3, 0.05) is False        # nothing new: times out
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(store.wait_for_commit(3, 10.0)))
    waiter.start()
    store.append(Event("test.poke", "s", "t", {}))
    waiter.join(5)
    assert woke == [True]


@settings(max_examples=3000, deadline=None)
@given(st.floats(min_value=-1e9, max_value=4.2e9, allow_nan=False, allow_infinity=False))
def test_utc_iso_is_datetimes_format_to_the_digit(epoch: float) -> None:
    """The commit path stamps events without datetime (ten times cheaper); the text must be
    exactly what datetime gives, rounding included."""
    from datetime import UTC, datetime

    from station.store.eventlog import utc_iso

    assert utc_iso(epoch) == datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@settings(max_examples=3000, deadline=None)
@given(st.floats(min_value=-1e9, max_value=4.2e9, allow_nan=False, allow_infinity=False))
def test_an_events_time_from_its_stamp_is_what_parsing_the_stamp_gives(epoch: float) -> None:
    """The commit path hands the projections the time of the stamp it wrote without
    parsing it back; replay parses it. The two must agree to the bit, or a replayed
    projection would differ from the live one."""
    from station.store.eventlog import parse_utc, stamp, utc_iso

    text, at = stamp(epoch)
    assert text == utc_iso(epoch)
    assert at == parse_utc(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=8))
def test_canonical_json_and_its_read_back_are_json_dumps_and_loads(data: dict) -> None:
    """canonical_json keeps a C encoder built once and a live event's data is copied instead
    of parsed again when it is flat: both must give what the slow way gives, key order too."""
    import json

    from station.store.eventlog import canonical_json, read_back

    text = canonical_json(data)
    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    back = read_back(data, text)
    assert back == json.loads(text) and list(back) == list(json.loads(text))
    assert back is not data


def test_read_back_parses_what_a_copy_would_get_wrong() -> None:
    """A tuple, a str or int subclass, a non-str key: JSON turns them into something else,
    and the live event must carry that something else, as the log does."""
    import enum
    import json

    from station.store.eventlog import canonical_json, read_back

    class Colour(enum.StrEnum):
        RED = "red"

    class Size(enum.IntEnum):
        S = 1

    for data in ({"a": (1, 2)}, {"c": Colour.RED}, {"s": Size.S}, {1: "x"}, {"b": True, "n": None}):
        text = canonical_json(data)
        back, slow = read_back(data, text), json.loads(text)  # type: ignore[arg-type]
        assert back == slow and [type(v) for v in back.values()] == [type(v) for v in slow.values()]


def test_a_waiter_that_starts_while_commits_go_on_never_misses_one(tmp_path: Path) -> None:
    """A commit skips the condition's lock when nobody waits; a waiter registers before it
    reads the tip, so one that comes while commits race past still sees the next one."""
    import threading

    store = build_log(tmp_path / "r.db", 1)
    stop = threading.Event()

    def commits() -> None:
        while not stop.is_set():
            store.append(Event("test.poke", "s", "t", {}))

    writer = threading.Thread(target=commits)
    writer.start()
    try:
        for _ in range(300):
            assert store.wait_for_commit(store.last_seq, 10.0) is True
    finally:
        stop.set()
        writer.join(10)


def _reference_row_hash(*row: object) -> str:
    """The chain's definition, spelled out the slow way (json.dumps of the row)."""
    import hashlib
    import json

    text = json.dumps(list(row), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize("text", ["", "plain", 'quote " and \\ backslash', "tab\tnew\nline\r\x00\x1f\x7f",
                                  "中文 ünïcödé 😀", "\u2028\u2029"])
def test_row_hash_is_the_canonical_json_of_the_row_byte_for_byte(text: str) -> None:
    """The hash written out directly is the hash of canonical_json([...]): every chain ever
    written (and the fleet's check of it) depends on the two being the same."""
    import json

    from station.store.eventlog import canonical_json

    data = canonical_json({"t": text, "n": 1.5, "z": None, "k": [1, True]})
    assert data == json.dumps({"t": text, "n": 1.5, "z": None, "k": [1, True]}, sort_keys=True,
                              separators=(",", ":"), ensure_ascii=False)
    for snapshot in (None, text, "ab" * 32):
        for seq in (1, 2**63 - 1):
            row = (seq, "2026-01-01T00:00:00.000000Z", "slot." + text, text, text, data, snapshot, "f" * 64)
            assert row_hash(*row) == _reference_row_hash(*row)
    # rows of other types (a float seq, a None subject) take the reference path
    assert row_hash(3.0, "t", "x", "a", None, "{}", None, GENESIS) == _reference_row_hash(  # type: ignore[arg-type]
        3.0, "t", "x", "a", None, "{}", None, GENESIS)


def test_the_chain_continues_from_an_append_by_another_connection(tmp_path: Path) -> None:
    """The tip is read again only when another connection has committed (data_version): a
    CLI appending beside the running station, in either order, leaves one unbroken chain."""
    from station.store.db import Store

    path = tmp_path / "s.db"
    station, cli = Store(path).open(), Store(path).open()
    station.append(Event("a.one", "s"))
    cli.append(Event("b.cli", "s"), Event("b.cli", "s"))
    station.append(Event("a.two", "s"))
    station.append(Event("a.three", "s"))
    cli.append(Event("b.cli", "s"))
    with pytest.raises(RuntimeError):  # a rolled-back transaction leaves the tip as it was
        with station.transaction() as tx:
            tx.emit(Event("a.undone", "s"))
            raise RuntimeError("undo")
    station.append(Event("a.four", "s"))
    result = verify_chain(station.conn)
    assert result.ok and result.checked == 7, result
    assert [e.type for e in iter_events(station.conn)][-1] == "a.four"
    station.close()
    cli.close()
