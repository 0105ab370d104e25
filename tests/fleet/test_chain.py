"""Chain anchoring over a real PostgreSQL (issue 15 items 2-3, #22.6): repeats, out-of-order
arrival, gaps, forks and declared restores, through the ingest's one transaction per batch."""

from __future__ import annotations

import random

import psycopg
import pytest

from fleet.core import BadMessage, parse_message
from fleet.store import close_alarm, fleet_alarms, ingest_batch, stations, trace, verify_station
from fleet.synth import ChainWriter, StationDay


def _station(sid: str, couriers: int = 3, seed: int = 1) -> ChainWriter:
    w = ChainWriter(sid)
    day = StationDay(w, random.Random(seed), 1_790_000_000.0)
    for _ in range(couriers):
        day.courier(5)
        for _ in range(3):
            day.customer()
    return w


def _ingest(db: psycopg.Connection, w: ChainWriter, recs: list) -> object:
    return ingest_batch(db, [parse_message(w.payload(r)) for r in recs])


def _head(db: psycopg.Connection, sid: str) -> dict:
    return next(s for s in stations(db) if s["station"] == sid)


def test_repeats_are_dropped_by_station_and_seq(db: psycopg.Connection) -> None:
    w = _station("st-a")
    first = _ingest(db, w, w.records)
    again = _ingest(db, w, w.records[:10] + w.records[:10])
    assert first.inserted == len(w.records) and first.duplicates == 0
    assert again.inserted == 0 and again.duplicates == 20
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == len(w.records)
    assert _head(db, "st-a")["verified_seq"] == len(w.records)
    assert fleet_alarms(db) == []


def test_out_of_order_arrival_is_fine_and_the_chain_verifies(db: psycopg.Connection) -> None:
    w = _station("st-b")
    recs = list(w.records)
    random.Random(5).shuffle(recs)
    for i in range(0, len(recs), 7):
        _ingest(db, w, recs[i:i + 7])
    head = _head(db, "st-b")
    assert head["verified_seq"] == len(recs) and head["gap"] is None
    assert verify_station(db, "st-b") == (True, len(recs), "")
    assert fleet_alarms(db) == []


def test_a_gap_is_reported_with_its_range_until_it_fills(db: psycopg.Connection) -> None:
    w = _station("st-c")
    n = len(w.records)
    _ingest(db, w, w.records[:10] + w.records[20:])
    head = _head(db, "st-c")
    assert head["verified_seq"] == 10 and head["gap"] == [11, 20]
    _ingest(db, w, w.records[10:15])
    assert _head(db, "st-c")["gap"] == [16, 20]
    _ingest(db, w, w.records[15:20])
    head = _head(db, "st-c")
    assert head["verified_seq"] == n and head["gap"] is None
    assert fleet_alarms(db) == []


def test_a_rewritten_tail_forwarded_again_is_a_fork_naming_the_first_differing_seq(
        db: psycopg.Connection) -> None:
    """Whoever holds the SD card can recompute every hash of a rewritten tail, but not the
    copy the fleet holds."""
    honest = _station("st-d")
    _ingest(db, honest, honest.records)
    held = len(honest.records)
    forged = honest.fork_at(12)  # rows 1..11 kept, 12.. rewritten consistently
    day = StationDay(forged, random.Random(99), 1_790_000_000.0 + 10)
    while forged.seq < held + 5:
        day.courier(3)
    assert forged.records[11].hash != honest.records[11].hash
    res = _ingest(db, forged, forged.records[6:])  # a resend from some cursor on
    assert res.forks == held - 11
    alarms = fleet_alarms(db, "st-d")
    assert [(a["kind"], a["first_seq"]) for a in alarms] == [("fork", 12)]
    assert "seq 12" in alarms[0]["message"]
    # the fleet's copy is untouched, and the rewrite is kept as evidence
    assert verify_station(db, "st-d", upto=held) == (True, held, "")
    assert db.execute("SELECT min(seq) FROM conflicts WHERE station_id = 'st-d'").fetchone()[0] == 12
    assert _head(db, "st-d")["verified_seq"] == held
    # the forger goes on: still one alarm, still the first differing seq, nothing verified
    more = StationDay(forged, random.Random(98), 1_790_000_900.0)
    more.courier(3)
    _ingest(db, forged, forged.records[-12:])
    assert [(a["kind"], a["first_seq"]) for a in fleet_alarms(db, "st-d")] == [("fork", 12)]
    assert _head(db, "st-d")["verified_seq"] == held
    assert close_alarm(db, "st-d", "fork", "op-1") and fleet_alarms(db, "st-d") == []


def test_a_chain_that_does_not_continue_the_fleets_is_a_fork(db: psycopg.Connection) -> None:
    honest = _station("st-e")
    _ingest(db, honest, honest.records[:30])
    forged = honest.fork_at(25)
    day = StationDay(forged, random.Random(7), 1_790_000_100.0)
    while forged.seq < 40:
        day.courier(2)
    _ingest(db, forged, forged.records[30:])  # only rows the fleet never saw
    alarms = fleet_alarms(db, "st-e")
    assert [(a["kind"], a["first_seq"]) for a in alarms] == [("fork", 31)]
    assert _head(db, "st-e")["verified_seq"] == 30


def test_an_honest_station_never_raises_a_fork(db: psycopg.Connection) -> None:
    """Resends, duplicates, reordering and batches of any size, as at-least-once delivery
    over a shared subscription produces them."""
    rng = random.Random(11)
    writers = [_station(f"st-h{i}", couriers=4, seed=i) for i in range(4)]
    stream = []
    for w in writers:
        for r in w.records:
            stream.append((w, r))
            if rng.random() < 0.2:
                stream.append((w, r))
    rng.shuffle(stream)
    while stream:
        k = rng.randrange(1, 60)
        batch, stream = stream[:k], stream[k:]
        ingest_batch(db, [parse_message(w.payload(r)) for w, r in batch])
    assert fleet_alarms(db, open_only=False) == []
    for w in writers:
        assert verify_station(db, w.station_id) == (True, len(w.records), "")
        assert _head(db, w.station_id)["verified_seq"] == len(w.records)


def test_a_declared_restore_is_visible_and_is_not_a_fork(db: psycopg.Connection) -> None:
    """#22.6: after a restore the station writes new events under seqs the fleet holds; the
    new epoch in every forwarded event tells the fleet it is a declared restore."""
    w = _station("st-r")
    _ingest(db, w, w.records)
    held = len(w.records)
    restored = w.fork_at(21)  # the backup holds 1..20
    restored.epoch, restored.epoch_seq = 1_800_000_000, 21
    restored.append("station.restored", "station", "operator",
                    {"epoch": restored.epoch, "first_seq": 21, "restored_last_seq": 20, "source": "b"},
                    1_790_100_000.0)
    day = StationDay(restored, random.Random(3), 1_790_100_001.0)
    day.courier(4)
    res = _ingest(db, restored, restored.records[15:])  # resend from the backup's cursor
    assert res.restores == 1 and res.forks == 0
    alarms = fleet_alarms(db, "st-r")
    assert [(a["kind"], a["first_seq"]) for a in alarms] == [("restore", 21)]
    assert f"{held - 20} events" in alarms[0]["message"]
    head = _head(db, "st-r")
    assert head["verified_seq"] == len(restored.records) and head["epoch"] == 1_800_000_000
    assert verify_station(db, "st-r") == (True, len(restored.records), "")
    kept = db.execute("SELECT count(*) FROM superseded_events WHERE station_id = 'st-r'").fetchone()[0]
    assert kept == held - 20
    # a late copy of the old incarnation is kept aside, not taken for a fork or a new row
    late = _ingest(db, w, w.records[25:30])
    assert late.stale == 5 and late.forks == 0
    assert [a["kind"] for a in fleet_alarms(db, "st-r")] == ["restore"]


def test_a_restore_without_a_new_epoch_is_a_fork(db: psycopg.Connection) -> None:
    w = _station("st-s")
    _ingest(db, w, w.records)
    copied_back = w.fork_at(21)  # the file copied back by hand: no epoch declared
    StationDay(copied_back, random.Random(4), 1_790_100_001.0).courier(3)
    _ingest(db, copied_back, copied_back.records[20:])
    assert [(a["kind"], a["first_seq"]) for a in fleet_alarms(db, "st-s")] == [("fork", 21)]


def test_a_message_whose_hash_does_not_match_is_rejected(db: psycopg.Connection) -> None:
    w = _station("st-x", couriers=1)
    bad = w.payload(w.records[0]).replace(b"\"auth.face.accepted\"", b"\"auth.face.rejected\"")
    with pytest.raises(BadMessage, match="hash"):
        parse_message(bad)
    with pytest.raises(BadMessage, match="topic"):
        parse_message(w.payload(w.records[0]), "st-other")
    for junk in (b"", b"\xff\xfe", b"[]", b'{"seq": "1"}', b"{" * 100000):
        with pytest.raises(BadMessage):
            parse_message(junk)


def test_trace_follows_a_waybill_across_stations_in_time_order(db: psycopg.Connection) -> None:
    a, b = _station("st-t1", seed=1), _station("st-t2", seed=2)
    _ingest(db, a, a.records)
    _ingest(db, b, b.records)
    picked = next(r for r in a.records if r.type == "parcel.picked_up")
    waybill, pid = picked.data["waybill"], picked.data["parcel_id"]
    story = trace(db, waybill)
    types = [e["type"] for e in story]
    assert types == ["parcel.scanned", "parcel.shelved", "pickup.opened", "pickup.slot.taken",
                     "parcel.picked_up", "exit.passed"]
    assert {e["station"] for e in story} == {"st-t1"}
    assert [e["ts"] for e in story] == sorted(e["ts"] for e in story)
    assert story[-1]["snapshot"]
    assert [e["seq"] for e in trace(db, pid)] == [e["seq"] for e in story[1:]]
    courier = story[0]["actor"]
    by_courier = trace(db, courier)
    assert by_courier and all(courier in (e["actor"], e["data"]) for e in by_courier)
    parcel_rows = db.execute("SELECT state FROM parcels WHERE station_id = 'st-t1' AND parcel_id = %s",
                             (pid,)).fetchall()
    assert parcel_rows == [("picked_up",)]


def test_a_nul_escape_is_rejected_but_an_escaped_backslash_before_u0000_is_not() -> None:
    """PostgreSQL's text cannot hold U+0000; a literal backslash followed by `u0000` is text."""
    from station.store.eventlog import GENESIS, canonical_json, row_hash

    def signed(subject: str) -> bytes:
        ts = "2026-12-01T10:00:00.000000Z"
        h = row_hash(1, ts, "test.tick", "station", subject, "{}", None, GENESIS)
        return canonical_json({"station": "st-n", "seq": 1, "ts": ts, "type": "test.tick",
                               "actor": "station", "subject": subject, "data": {},
                               "snapshot": None, "prev_hash": GENESIS, "hash": h}).encode()

    assert parse_message(signed("a\\u0000b")).subject == "a\\u0000b"
    for bad in ("a\x00b", "a\\\x00b"):
        with pytest.raises(BadMessage, match="NUL"):
            parse_message(signed(bad))
