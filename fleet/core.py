"""The fleet's pure core: what a forwarded event is, how it is judged against the copy the
fleet already holds, how a station's chain is walked, and what each event changes in the
projections. No I/O here: the PostgreSQL and MQTT adapters call these functions.

The rules (ADR 0110, 0112):
- an event's own hash must match its content (the station's canonical row), or the message
  is rejected as corrupt: it is not evidence of anything;
- the same (station, seq) with the same hash is a repeat, dropped;
- the same (station, seq) with another hash, in the same or an older incarnation (epoch),
  is a FORK: someone rewrote history the fleet already holds;
- a newer epoch (declared by `station backup restore`) supersedes the fleet's rows from the
  epoch's first seq on: they are kept aside, never deleted, and the restore is an alarm of
  its own kind, so a declared restore is told apart from a silent rewrite;
- the chain is walked in seq order from the last verified row: a missing seq is a gap that
  waits to be filled, a `prev_hash` that is not the stored hash before it is a fork.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from station.store.eventlog import GENESIS, canonical_json, row_hash

STATION_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"
TS_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")  # station.store.eventlog.utc_iso
HEX64 = re.compile(r"^[0-9a-f]{64}$")
# a JSON escape for U+0000 (an even run of backslashes before it is escaped backslashes):
# PostgreSQL's text cannot hold that character, and the event's strings go into text columns
NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
MAX_PAYLOAD = 256 * 1024


class BadMessage(ValueError):
    """A message that is not a usable event; the reason is short and safe to log."""


class _Wire(BaseModel):
    """The upstream message (station/upstream.py event_payload) as it arrives."""

    model_config = ConfigDict(extra="ignore", strict=True)

    station: str = Field(pattern=STATION_ID)
    seq: int = Field(ge=1, lt=2**62)
    ts: str
    type: str = Field(min_length=1, max_length=100)
    actor: str = Field(max_length=200)
    subject: str = Field(max_length=200)
    data: dict[str, Any]
    snapshot: str | None = Field(default=None, max_length=200)
    prev_hash: str
    hash: str
    epoch: int = Field(default=0, ge=0, lt=2**62)
    epoch_seq: int = Field(default=1, ge=1, lt=2**62)


@dataclass(frozen=True)
class Incoming:
    """One forwarded event, its hash checked."""

    station_id: str
    seq: int
    epoch: int
    epoch_seq: int
    ts: str
    type: str
    actor: str
    subject: str
    data_json: str
    snapshot: str | None
    prev_hash: str
    hash: str

    @cached_property
    def data(self) -> dict[str, Any]:
        return json.loads(self.data_json)

    @cached_property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.ts)  # the form TS_FORMAT admits; Z is UTC


def parse_message(payload: bytes, topic_station: str | None = None) -> Incoming:
    """Bytes from the broker -> a checked event, or BadMessage saying why not."""
    if len(payload) > MAX_PAYLOAD:
        raise BadMessage("payload too large")
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadMessage("not JSON") from None
    if NUL_ESCAPE.search(payload):
        raise BadMessage("NUL character")
    try:
        wire = _Wire.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BadMessage(f"bad field {'.'.join(str(p) for p in first['loc'])}") from None
    if topic_station is not None and wire.station != topic_station:
        raise BadMessage("station in payload differs from the topic")
    try:
        at = datetime.fromisoformat(wire.ts) if TS_FORMAT.match(wire.ts) else None
    except ValueError:
        at = None  # the right shape, not a date (month 99)
    if at is None:
        raise BadMessage("bad field ts")
    if not (HEX64.match(wire.hash) and HEX64.match(wire.prev_hash)):
        raise BadMessage("bad hash format")
    if wire.epoch_seq > wire.seq:
        raise BadMessage("epoch_seq after seq")
    try:
        data_json = canonical_json(wire.data)
        data_json.encode("utf-8")  # a lone surrogate (\ud800) decodes but is not UTF-8
    except (ValueError, RecursionError):
        raise BadMessage("bad field data") from None
    if row_hash(wire.seq, wire.ts, wire.type, wire.actor, wire.subject, data_json,
                wire.snapshot, wire.prev_hash) != wire.hash:
        raise BadMessage("hash does not match the event's content")
    ev = Incoming(wire.station, wire.seq, wire.epoch, wire.epoch_seq, wire.ts, wire.type,
                  wire.actor, wire.subject, data_json, wire.snapshot, wire.prev_hash, wire.hash)
    ev.__dict__["data"] = wire.data  # already parsed: the cached_properties' slots
    ev.__dict__["at"] = at
    return ev


def station_of_topic(topic: str, leaf: str = "events") -> str | None:
    """ps/v1/{station}/station/{leaf} -> station (None for another shape)."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "ps" and parts[3] == "station" and parts[4] == leaf:
        return parts[2]
    return None


@dataclass(frozen=True)
class Head:
    """A station's word on how far its log goes (station/upstream.py `_publish_head`)."""

    station_id: str
    seq: int
    epoch: int


def parse_head(payload: bytes, topic_station: str) -> Head:
    try:
        raw = json.loads(payload.decode("utf-8"))
        seq, epoch = raw["seq"], raw.get("epoch", 0)
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        raise BadMessage("bad head") from None
    if raw.get("station") != topic_station or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**62 for v in (seq, epoch)):
        raise BadMessage("bad head")
    return Head(topic_station, seq, epoch)


def resend_from(verified_seq: int, gap_from: int | None, reported_seq: int,
                fork_seq: int | None) -> int | None:
    """The seq to ask a station to send again from, or None when the fleet is not missing
    anything it knows of. A fork is for an operator, not for a resend."""
    if fork_seq is not None:
        return None
    if gap_from is not None or reported_seq > verified_seq:
        return verified_seq + 1
    return None


# --- judging one event against what the fleet holds ------------------------------------------


class Verdict(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    FORK = "fork"
    STALE = "stale"  # from an incarnation a declared restore superseded: kept aside


@dataclass(frozen=True)
class Held:
    """The row the fleet holds at (station, seq)."""

    seq: int
    epoch: int
    hash: str


@dataclass(frozen=True)
class StationHead:
    """What the fleet knows of a station's incarnation and its verified chain."""

    epoch: int = 0
    epoch_seq: int = 1
    verified_seq: int = 0
    verified_hash: str = GENESIS


def declares_restore(head: StationHead, ev: Incoming) -> bool:
    """A newer epoch than the fleet's is a restore the station declared."""
    return ev.epoch > head.epoch


def judge(ev: Incoming, held: Held | None, head: StationHead) -> Verdict:
    """`head` is already moved to any epoch `ev` declares (see `declares_restore`)."""
    if ev.epoch < head.epoch and ev.seq >= head.epoch_seq:
        return Verdict.STALE
    if held is None:
        return Verdict.NEW
    if held.hash == ev.hash:
        return Verdict.DUPLICATE
    return Verdict.FORK


# --- walking the chain --------------------------------------------------------------------


@dataclass(frozen=True)
class ChainRow:
    seq: int
    prev_hash: str
    hash: str


@dataclass
class Walk:
    """Where a walk from the verified head stopped, and why."""

    verified_seq: int
    verified_hash: str
    advanced: list[int] = field(default_factory=list)  # seqs newly verified, in order
    gap: tuple[int, int] | None = None  # first missing seq, last missing seq
    fork_seq: int | None = None  # a row whose prev_hash is not the hash before it


def walk_chain(head: StationHead, rows: Iterable[ChainRow]) -> Walk:
    """`rows`: the stored rows above the verified head, in seq order."""
    w = Walk(head.verified_seq, head.verified_hash)
    for row in rows:
        expected = w.verified_seq + 1
        if row.seq < expected:
            continue
        if row.seq > expected:
            w.gap = (expected, row.seq - 1)
            return w
        if row.prev_hash != w.verified_hash:
            w.fork_seq = row.seq
            return w
        w.verified_seq, w.verified_hash = row.seq, row.hash
        w.advanced.append(row.seq)
    return w


# --- what the trace searches by -------------------------------------------------------------

KEY_FIELDS = {"waybill": "w", "parcel_id": "p", "courier_id": "c", "recipient_hash": "r",
              "session_id": "s"}
LIST_FIELDS = {"parcels": "p", "picked_up": "p"}
NOT_PEOPLE = {"", "station", "customer", "system", "operator"}


def event_keys(ev: Incoming) -> set[str]:
    """Search keys of one event: `w:` waybill, `p:` parcel, `c:` courier or actor, `r:` the
    recipient's keyed phone hash, `s:` session. Nothing here is a secret: the station's
    events carry no code, PIN or phone in clear (DESIGN §9)."""
    data = ev.data
    keys: set[str] = set()
    for name, prefix in KEY_FIELDS.items():
        value = data.get(name)
        if isinstance(value, str) and value:
            keys.add(f"{prefix}:{value}")
    for name, prefix in LIST_FIELDS.items():
        value = data.get(name)
        if isinstance(value, list):
            keys.update(f"{prefix}:{v}" for v in value if isinstance(v, str) and v)
    if ev.type.startswith("parcel.") and ev.subject:
        keys.add(f"p:{ev.subject}" if ev.type != "parcel.scanned" else f"w:{ev.subject}")
    if ev.type == "courier.bundle.applied" and isinstance(data.get("kid"), str) and data["kid"]:
        keys.add(f"k:{data['kid']}")
    if ev.actor not in NOT_PEOPLE and not ev.actor.startswith(("kiosk", "door", "cam", "shelf")):
        keys.add(f"c:{ev.actor}")
    return {k for k in keys if len(k) <= 200}


def trace_keys(query: str) -> list[str]:
    """What a person types -> the keys to look up (a waybill, a parcel id, a courier id or a
    recipient hash: we do not know which, so we try each)."""
    q = query.strip()
    if not q or len(q) > 198:
        return []
    if ":" in q and q.split(":", 1)[0] in {"w", "p", "c", "r", "s"}:
        return [q]
    return [f"w:{q}", f"p:{q}", f"c:{q}", f"r:{q}"]


# --- projections ------------------------------------------------------------------------------

PARCEL_STATES = {
    "parcel.shelved": "shelved",
    "parcel.picked_up": "picked_up",
    "parcel.expired": "expired",
    "parcel.recalled": "recalled",
    "parcel.returned": "returned",
    "parcel.collected": "collected",
    "parcel.dropped_off": "dropped_off",
}
ON_SHELF = {"shelved", "dropped_off", "expired"}


@dataclass(frozen=True)
class ParcelChange:
    parcel_id: str
    state: str
    at: datetime
    seq: int
    waybill: str | None = None
    carrier: str | None = None
    slot: str | None = None
    courier_id: str | None = None
    recipient_hash: str | None = None


@dataclass
class Effects:
    """What a run of verified events changes in the projections of one station."""

    parcels: list[ParcelChange] = field(default_factory=list)
    alarms_raised: list[tuple[str, str, str, datetime, int]] = field(default_factory=list)
    alarms_cleared: list[str] = field(default_factory=list)


def effects_of(events: Iterable[Incoming]) -> Effects:
    fx = Effects()
    for ev in events:
        state = PARCEL_STATES.get(ev.type)
        if state is not None:
            d = ev.data
            pid = d.get("parcel_id") or ev.subject
            if isinstance(pid, str) and pid:
                fx.parcels.append(ParcelChange(
                    pid, state, ev.at, ev.seq, _s(d.get("waybill")), _s(d.get("carrier")),
                    _s(d.get("slot")), _s(d.get("courier_id")), _s(d.get("recipient_hash"))))
        elif ev.type == "alarm.raised":
            d = ev.data
            aid = _s(d.get("alarm_id")) or f"seq-{ev.seq}"
            fx.alarms_raised.append((aid, _s(d.get("kind")) or "", (_s(d.get("message")) or "")[:300],
                                     ev.at, ev.seq))
        elif ev.type in ("alarm.acknowledged", "alarm.cleared", "alarm.resolved"):
            cleared = _s(ev.data.get("alarm_id"))
            if cleared:
                fx.alarms_cleared.append(cleared)
    return fx


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
