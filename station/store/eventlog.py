"""The append-only event log and its hash chain (DESIGN §3).

Each row's hash is SHA-256 over its canonical form, which includes the previous row's hash,
so changing, removing or reordering any row breaks every hash after it; `verify` names the
first row that does not hold."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

GENESIS = "0" * 64

# json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) builds this
# encoder anew on every call; built once, the same bytes cost a third less on the commit path
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# and JSONEncoder.encode still builds its C encoder on every call: this is that encoder,
# built once (a quarter less again; #18.4). No circular-reference markers: an event's data
# is a tree, and a cycle ends in RecursionError instead of ValueError.
_C_CANONICAL = None if c_make_encoder is None else c_make_encoder(
    None, _CANONICAL.default, encode_basestring, None, ":", ",", True, False, True)


def canonical_json(data: Any) -> str:
    """Sorted keys, no spaces, UTF-8 as is: the form every hash and signature is taken of."""
    if _C_CANONICAL is None:
        return _CANONICAL.encode(data)
    return "".join(_C_CANONICAL(data, 0))


_PLAIN = frozenset((str, int, float, bool, type(None)))


def read_back(data: dict[str, Any], data_json: str) -> dict[str, Any]:
    """What `json.loads(canonical_json(data))` returns, without parsing it again when the
    data is flat (most events): a copy with the keys in the canonical order, so what a
    listener sees of a live event is what it would read from the log."""
    if type(data) is dict:
        for k, v in data.items():
            if type(k) is not str or type(v) not in _PLAIN:
                break
        else:
            return {k: data[k] for k in sorted(data)}
    result: dict[str, Any] = json.loads(data_json)
    return result


def utc_iso(epoch: float) -> str:
    """`datetime.fromtimestamp(epoch, UTC)` as ISO with microseconds and Z, to the digit
    (the same rounding: half to even on the fraction), at a tenth of its cost: every event
    is stamped on the commit path."""
    return stamp(epoch)[0]


def stamp(epoch: float) -> tuple[str, float]:
    """utc_iso(epoch) and parse_utc of that text, to the bit, without parsing it back: the
    projections take an event's time from its stamp, and the commit path has both at hand
    (timedelta.total_seconds() is (whole seconds * 10**6 + micros) / 10**6, as here)."""
    frac, whole_f = math.modf(epoch)
    micros = round(frac * 1e6)
    whole = int(whole_f)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    return _second(whole) + f".{micros:06d}Z", (whole * 1_000_000 + micros) / 1_000_000


@functools.lru_cache(maxsize=8)
def _second(whole: int) -> str:
    # the events of one second share it: formatted once, not on every append (#18.4)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def parse_utc(text: str) -> float:
    """ISO time (with Z or offset, or a date) -> epoch seconds."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True)
class Event:
    """An event before it is written: what happened, to whom, by whom."""

    type: str
    subject: str = ""
    actor: str = "station"
    data: dict[str, Any] = field(default_factory=dict)
    snapshot: str | None = None


@dataclass(frozen=True)
class EventRecord:
    seq: int
    ts: str
    type: str
    actor: str
    subject: str
    data: dict[str, Any]
    snapshot: str | None
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "actor": self.actor,
            "subject": self.subject,
            "data": self.data,
            "snapshot": self.snapshot,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def row_hash(
    seq: int, ts: str, type_: str, actor: str, subject: str, data_json: str,
    snapshot: str | None, prev_hash: str,
) -> str:
    """SHA-256 of canonical_json([seq, ts, type, actor, subject, data, snapshot, prev_hash]).

    A row of the usual types is written out directly with the JSON encoder's own string
    escaping (the same characters, byte for byte: tests/store/test_eventlog.py holds it to
    canonical_json), since every append and every verified row pays for it; anything else
    goes through canonical_json itself."""
    if type(seq) is int and type(ts) is str and type(type_) is str and type(actor) is str \
            and type(subject) is str and type(data_json) is str and type(prev_hash) is str \
            and (snapshot is None or type(snapshot) is str):
        canonical = (f"[{seq},{encode_basestring(ts)},{encode_basestring(type_)},{encode_basestring(actor)},"
                     f"{encode_basestring(subject)},{encode_basestring(data_json)},"
                     f"{'null' if snapshot is None else encode_basestring(snapshot)},{encode_basestring(prev_hash)}]")
    else:
        canonical = canonical_json([seq, ts, type_, actor, subject, data_json, snapshot, prev_hash])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


EVENT_COLUMNS = "seq, ts, type, actor, subject, data, snapshot, prev_hash, hash"


def record_from_row(row: tuple[Any, ...]) -> EventRecord:
    seq, ts, type_, actor, subject, data, snapshot, prev_hash, hash_ = row
    return EventRecord(seq, ts, type_, actor, subject, json.loads(data), snapshot, prev_hash, hash_)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str = ""


def verify_chain(conn: sqlite3.Connection, batch: int = 20000) -> VerifyResult:
    """Walk the whole chain in seq order; stop at the first row that does not hold."""
    prev = GENESIS
    expected_seq: int | None = None
    checked = 0
    cursor = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq")
    while True:
        rows = cursor.fetchmany(batch)
        if not rows:
            break
        for seq, ts, type_, actor, subject, data, snapshot, prev_hash, hash_ in rows:
            if expected_seq is not None and seq != expected_seq:
                return VerifyResult(False, checked, expected_seq, f"row {expected_seq} is missing")
            if prev_hash != prev:
                return VerifyResult(False, checked, seq, "prev_hash does not match the row before")
            if row_hash(seq, ts, type_, actor, subject, data, snapshot, prev_hash) != hash_:
                return VerifyResult(False, checked, seq, "hash does not match the row's content")
            prev = hash_
            expected_seq = seq + 1
            checked += 1
    return VerifyResult(True, checked)


def iter_events(
    conn: sqlite3.Connection,
    *,
    after_seq: int = 0,
    until_seq: int | None = None,
    since: str | None = None,
    until: str | None = None,
    types: list[str] | None = None,
    subject: str | None = None,
    actor: str | None = None,
    text: str | None = None,
    limit: int | None = None,
    descending: bool = False,
) -> Iterator[EventRecord]:
    where = ["seq > ?"]
    args: list[Any] = [after_seq]
    if until_seq is not None:
        where.append("seq <= ?")
        args.append(until_seq)
    if since:
        where.append("ts >= ?")
        args.append(since)
    if until:
        where.append("ts <= ?")
        args.append(until)
    if types:
        clauses = []
        for t in types:
            if t.endswith("*"):
                clauses.append("type LIKE ?")
                args.append(t[:-1] + "%")
            else:
                clauses.append("type = ?")
                args.append(t)
        where.append("(" + " OR ".join(clauses) + ")")
    if subject:
        where.append("subject = ?")
        args.append(subject)
    if actor:
        where.append("actor = ?")
        args.append(actor)
    if text:
        where.append("data LIKE ?")
        args.append(f"%{text}%")
    order = "DESC" if descending else "ASC"
    sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY seq {order}"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(int(limit))
    cursor = conn.execute(sql, args)
    while True:
        rows = cursor.fetchmany(5000)
        if not rows:
            return
        for row in rows:
            yield record_from_row(row)
