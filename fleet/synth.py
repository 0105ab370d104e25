"""`fleet synth`: realistic forwarded streams for many stations without running them.

The shapes are the station's own (the event types, actors, subjects and data keys its flows
write: shelving sessions of couriers, pickups of customers, the doors, now and then an
alarm), and every row is chained and hashed with the station's own `row_hash`, so what the
fleet stores from here is indistinguishable from what real stations forward. `bulk_load`
writes the streams with COPY straight into the fleet's tables (projections included), which
is how 10,000 stations' history is made in minutes; `ChainWriter` alone gives tests a
station's chain to forward, to reorder and to rewrite.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from fleet.core import ON_SHELF, Incoming, effects_of, event_keys
from station.store.eventlog import GENESIS, EventRecord, canonical_json

CARRIERS = ("SF", "YTO", "ZTO", "JD", "EMS")


@dataclass
class ChainWriter:
    """One station's log, hashed exactly as the station hashes it."""

    station_id: str
    seq: int = 0
    prev: str = GENESIS
    epoch: int = 0
    epoch_seq: int = 1
    records: list[EventRecord] = field(default_factory=list)

    def append(self, type_: str, subject: str, actor: str, data: dict[str, Any], at: float,
               snapshot: str | None = None) -> EventRecord:
        self.seq += 1
        ts = _fast_iso(at)
        data_json = _fast_json(data)
        h = _fast_hash(self.seq, ts, type_, actor, subject, data_json, snapshot, self.prev)
        rec = EventRecord(self.seq, ts, type_, actor, subject, data, snapshot, self.prev, h)
        self.prev = h
        self.records.append(rec)
        return rec

    def fork_at(self, seq: int) -> ChainWriter:
        """A copy that holds rows 1..seq-1: what someone with the SD card starts a rewrite from
        (or what a restored backup holds)."""
        kept = self.records[:seq - 1]
        return ChainWriter(self.station_id, seq - 1, kept[-1].hash if kept else GENESIS,
                           self.epoch, self.epoch_seq, list(kept))

    def payload(self, rec: EventRecord) -> bytes:
        body = rec.as_dict()
        body["station"] = self.station_id
        body["epoch"], body["epoch_seq"] = (self.epoch, self.epoch_seq) if rec.seq >= self.epoch_seq \
            else (0, 1)
        return canonical_json(body).encode()

    def incoming(self, rec: EventRecord) -> Incoming:
        e, es = (self.epoch, self.epoch_seq) if rec.seq >= self.epoch_seq else (0, 1)
        return Incoming(self.station_id, rec.seq, e, es, rec.ts, rec.type, rec.actor, rec.subject,
                        canonical_json(rec.data), rec.snapshot, rec.prev_hash, rec.hash)


# The station's canonical forms (station.store.eventlog: canonical_json, row_hash, utc_iso),
# written out for the few value types synth uses, because generating ten million events is
# bound by them. tests/fleet/test_synth.py checks them against the station's own functions.

_enc = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for str
_iso_cache: dict[int, str] = {}


def _fast_iso(at: float) -> str:
    sec = int(at)
    micro = int(round((at - sec) * 1e6))
    if micro >= 1_000_000:
        sec, micro = sec + 1, micro - 1_000_000
    head = _iso_cache.get(sec)
    if head is None:
        if len(_iso_cache) > 4096:
            _iso_cache.clear()
        head = _iso_cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{head}.{micro:06d}Z"


def _fast_value(v: Any) -> str:
    if isinstance(v, str):
        return _enc(v)
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, float)):
        return repr(v) if isinstance(v, float) else str(v)
    if isinstance(v, list):
        return "[" + ",".join(_fast_value(x) for x in v) + "]"
    return canonical_json(v)


def _fast_json(data: dict[str, Any]) -> str:
    return "{" + ",".join(f"{_enc(k)}:{_fast_value(data[k])}" for k in sorted(data)) + "}"


def _fast_hash(seq: int, ts: str, type_: str, actor: str, subject: str, data_json: str,
               snapshot: str | None, prev_hash: str) -> str:
    snap = "null" if snapshot is None else _enc(snapshot)
    text = (f"[{seq},{_enc(ts)},{_enc(type_)},{_enc(actor)},{_enc(subject)},{_enc(data_json)},"
            f"{snap},{_enc(prev_hash)}]")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class StationDay:
    """Writes a station's day in the shapes its flows use: couriers shelve batches of
    parcels, customers pick them up later (most the same day), doors open and close."""

    def __init__(self, writer: ChainWriter, rng: random.Random, start: float) -> None:
        self.w = writer
        self.rng = rng
        self.t = start
        self.waiting: list[tuple[str, str, str, str]] = []  # parcel_id, waybill, slot, recipient
        self.n = 0

    def _tick(self, lo: float = 0.5, hi: float = 4.0) -> float:
        self.t += self.rng.uniform(lo, hi)
        return self.t

    def courier(self, parcels: int) -> None:
        w, rng = self.w, self.rng
        sid = f"shv_{self.w.station_id}_{self.n}"
        courier = f"c{rng.randrange(1, 400):04d}"
        carrier = rng.choice(CARRIERS)
        w.append("auth.face.accepted", courier, courier, {"courier_id": courier, "distance": 0.31},
                 self._tick(), snapshot=f"{rng.getrandbits(128):032x}")
        w.append("door.unlock.requested", "door-entry", courier, {"session_id": sid}, self._tick())
        w.append("shelving.opened", sid, courier, {"session_id": sid, "courier_id": courier,
                                                   "carrier": carrier, "mode": "guided", "colour": "white"},
                 self._tick())
        for _ in range(parcels):
            self.n += 1
            waybill = f"{carrier}{rng.randrange(10**11, 10**12)}"
            pid = f"pcl_{rng.getrandbits(48):012x}"
            pending = f"pnd_{rng.getrandbits(40):010x}"
            slot = f"{rng.randrange(1, 5)}-{rng.randrange(1, 6)}-{rng.randrange(1, 13):02d}"
            recipient = f"{rng.getrandbits(256):064x}"
            w.append("parcel.scanned", waybill, courier, {
                "pending_id": pending, "session_id": sid, "waybill": waybill, "carrier": carrier,
                "size": "M", "recipient_hash": recipient, "phone_masked": "138****0000",
                "target_slot": slot, "deadline": self.t + 3 * 86400}, self._tick(1, 3))
            w.append("slot.sensed", slot, "shelf", {"slot": slot, "count": 1, "change": "put"},
                     self._tick(0.5, 2))
            w.append("parcel.shelved", pid, courier, {
                "parcel_id": pid, "pending_id": pending, "waybill": waybill, "carrier": carrier,
                "size": "M", "slot": slot, "recipient_hash": recipient, "phone_masked": "138****0000",
                "code_digest": f"{rng.getrandbits(256):064x}", "courier_id": courier,
                "deadline": self.t + 3 * 86400}, self._tick(0.1, 0.3))
            self.waiting.append((pid, waybill, slot, recipient))
        w.append("shelving.closed", sid, courier, {"session_id": sid, "shelved": parcels}, self._tick())

    def customer(self) -> None:
        if not self.waiting:
            return
        w, rng = self.w, self.rng
        pid, waybill, slot, recipient = self.waiting.pop(rng.randrange(len(self.waiting)))
        sess = f"pk_{rng.getrandbits(48):012x}"
        w.append("pickup.opened", sess, "kiosk-1", {
            "session_id": sess, "recipient_hash": recipient, "colour": rng.choice(("red", "green", "blue")),
            "parcels": [pid], "slots": [slot], "expires_at": self.t + 300, "method": "code"}, self._tick())
        w.append("door.unlock.requested", "door-entry", "kiosk-1", {"session_id": sess}, self._tick(0.1, 0.5))
        w.append("pickup.slot.taken", slot, "customer", {"session_id": sess, "slot": slot,
                                                         "parcel_id": pid}, self._tick(5, 30))
        w.append("parcel.picked_up", pid, "customer", {"parcel_id": pid, "session_id": sess,
                                                       "waybill": waybill}, self._tick(5, 20))
        w.append("exit.passed", "cam-doc", "customer", {"session_id": sess, "picked_up": [pid],
                                                        "left_waiting": 0},
                 self._tick(0.5, 2), snapshot=f"{rng.getrandbits(128):032x}")
        w.append("pickup.closed", sess, "station", {"session_id": sess, "reason": "exit"}, self._tick())

    def alarm(self) -> None:
        aid = f"alm_{self.rng.getrandbits(40):010x}"
        self.w.append("alarm.raised", "door-exit", "station", {"alarm_id": aid, "kind": "door.held_open",
                                                               "message": "exit door held open"}, self._tick())
        if self.rng.random() < 0.8:
            self.w.append("alarm.acknowledged", aid, "op-1", {"alarm_id": aid}, self._tick(60, 600))


def station_stream(station_id: str, days: float, events_per_day: int, seed: int,
                   start: datetime | None = None) -> Iterator[EventRecord]:
    """About `events_per_day` events a day for `days` days, yielded as they are written."""
    rng = random.Random(f"{seed}/{station_id}")
    start_at = (start or datetime(2026, 11, 1, tzinfo=UTC)).timestamp()
    writer = ChainWriter(station_id)
    day = StationDay(writer, rng, start_at)
    target = int(days * events_per_day)
    step = max(1.0, days * 86400 / max(target, 1))
    emitted = 0
    writer.append("station.started", station_id, "station", {"version": "0.1.0", "last_seq_before": 0},
                  day._tick())
    while writer.seq < target:
        r = rng.random()
        if r < 0.12:
            day.courier(rng.randrange(4, 12))
        elif r < 0.995:
            day.customer() if day.waiting else day.courier(rng.randrange(4, 12))
        else:
            day.alarm()
        day.t += step * rng.uniform(2, 10)
        new = writer.records[emitted:]
        emitted = len(writer.records)
        yield from new
        if len(writer.records) > 5000:  # keep memory flat for long streams
            writer.records.clear()
            emitted = 0


def bulk_load(conn: psycopg.Connection, stations: int, days: float, events_per_day: int = 2000,
              seed: int = 1, prefix: str = "st", progress: Any = None, *, first: int = 0,
              last_station: int | None = None) -> int:
    """Write whole streams with COPY, projections included, as the ingest would leave them.
    Returns the number of events written."""
    from fleet.store import _b

    total = 0
    chunk: list[str] = []
    last_station = stations if last_station is None else last_station

    def flush() -> None:
        nonlocal total
        ev_rows: list[tuple[Any, ...]] = []
        key_rows: list[tuple[Any, ...]] = []
        parcels: dict[tuple[str, str], list[Any]] = {}
        heads: list[tuple[Any, ...]] = []
        for sid in chunk:
            last: EventRecord | None = None
            incoming: list[Incoming] = []
            for rec in station_stream(sid, days, events_per_day, seed):
                ev = Incoming(sid, rec.seq, 0, 1, rec.ts, rec.type, rec.actor, rec.subject,
                              _fast_json(rec.data), rec.snapshot, rec.prev_hash, rec.hash)
                at = _at(rec.ts)
                ev_rows.append((sid, ev.seq, 0, at, ev.type, ev.actor, ev.subject, ev.data_json,
                                ev.snapshot, _b(ev.prev_hash), _b(ev.hash)))
                for k in event_keys(ev):
                    key_rows.append((sid, k, ev.seq))
                if ev.type.startswith("parcel."):
                    incoming.append(ev)
                last = rec
            occupied = 0
            for p in effects_of(incoming).parcels:
                row = parcels.get((sid, p.parcel_id))
                if row is None:
                    parcels[(sid, p.parcel_id)] = [sid, p.parcel_id, p.waybill, p.carrier, p.state,
                                                   p.slot, p.courier_id, p.recipient_hash,
                                                   p.at if p.state == "shelved" else None, p.at, p.seq]
                else:
                    row[4], row[9], row[10] = p.state, p.at, p.seq
            occupied = sum(1 for (s_, _), r in parcels.items() if s_ == sid and r[4] in ON_SHELF)
            if last is not None:
                heads.append((sid, last.seq, _b(last.hash), last.seq, last.seq, _at(last.ts), occupied))
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY events (station_id, seq, epoch, ts, type, actor, subject, data,"
                          " snapshot, prev_hash, hash) FROM STDIN") as cp:
                for r in ev_rows:
                    cp.write_row(r)
            with cur.copy("COPY event_keys (station_id, key, seq) FROM STDIN") as cp:
                for r in key_rows:
                    cp.write_row(r)
            with cur.copy("COPY parcels (station_id, parcel_id, waybill, carrier, state, slot,"
                          " courier_id, recipient_hash, shelved_at, updated_at, last_seq) FROM STDIN") as cp:
                for prow in parcels.values():
                    cp.write_row(prow)
            cur.executemany(
                "INSERT INTO stations(station_id, verified_seq, verified_hash, max_seq, events,"
                " last_event_ts, last_seen, occupancy) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING", [(*h[:6], h[5], h[6]) for h in heads])
        total += len(ev_rows)
        chunk.clear()

    for i in range(first, stations):
        chunk.append(f"{prefix}{i:05d}")
        if len(chunk) >= 20:
            flush()
            if progress:
                progress(i + 1, total)
        if i + 1 >= last_station:
            break
    if chunk:
        flush()
    return total


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


def _load_part(args: tuple[str, int, int, int, float, int, int, str]) -> int:
    dsn, first, last, stations, days, per_day, seed, prefix = args
    with psycopg.connect(dsn, autocommit=True) as conn:
        return bulk_load(conn, stations, days, per_day, seed, prefix, first=first, last_station=last)


def bulk_load_parallel(dsn: str, stations: int, days: float, events_per_day: int = 2000,
                       seed: int = 1, prefix: str = "st", workers: int = 2) -> int:
    """`bulk_load` split by station over `workers` processes, each with its own COPY."""
    import multiprocessing

    if workers <= 1:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return bulk_load(conn, stations, days, events_per_day, seed, prefix)
    bounds = [stations * k // workers for k in range(workers + 1)]
    parts = [(dsn, bounds[k], bounds[k + 1], stations, days, events_per_day, seed, prefix)
             for k in range(workers) if bounds[k] < bounds[k + 1]]
    with multiprocessing.get_context("fork").Pool(len(parts)) as pool:
        return sum(pool.map(_load_part, parts))


def sample_keys(conn: psycopg.Connection, n: int, seed: int = 3) -> list[str]:
    """Waybills that exist, for the trace benchmark."""
    rows = conn.execute("SELECT waybill FROM parcels TABLESAMPLE SYSTEM (1) WHERE waybill IS NOT NULL"
                        " LIMIT %s", (n * 4,)).fetchall()
    if len(rows) < n:
        rows = conn.execute("SELECT waybill FROM parcels WHERE waybill IS NOT NULL LIMIT %s", (n * 4,)).fetchall()
    rng = random.Random(seed)
    picked = [r[0] for r in rows]
    rng.shuffle(picked)
    return picked[:n]


def days_between(a: datetime, b: datetime) -> float:
    return (b - a) / timedelta(days=1)
