"""The fleet's PostgreSQL adapter: one transaction per ingest batch, and the read queries.

`ingest_batch` is the only writer. It locks the batch's station rows (in station order, so
two ingest processes sharing the load can never deadlock), judges every event against the
rows already held (fleet.core.judge), copies the new rows in, walks each touched station's
chain from its verified head, applies the verified events to the projections and commits.
The MQTT adapter acknowledges the batch's messages only after this returns (ADR 0111).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from fleet.core import (
    ON_SHELF,
    ChainRow,
    Head,
    Held,
    Incoming,
    StationHead,
    Verdict,
    Walk,
    declares_restore,
    effects_of,
    event_keys,
    judge,
    resend_from,
    trace_keys,
    walk_chain,
)
from station.store.eventlog import GENESIS, canonical_json

EVENT_COLS = ("station_id", "seq", "epoch", "ts", "type", "actor", "subject", "data", "snapshot",
              "prev_hash", "hash")
WALK_PAGE = 20000


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


@dataclass
class BatchResult:
    inserted: int = 0
    duplicates: int = 0
    forks: int = 0
    stale: int = 0
    restores: int = 0
    rejected: int = 0
    verified: int = 0
    stations: int = 0
    alarms: list[str] = field(default_factory=list)
    behind: dict[str, int | None] = field(default_factory=dict)


def _b(hex_: str) -> bytes:
    return bytes.fromhex(hex_)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row_to_incoming(station_id: str, r: tuple[Any, ...]) -> Incoming:
    seq, epoch, ts, type_, actor, subject, data, snapshot, prev_hash, hash_ = r
    return Incoming(station_id, seq, epoch, 1, _iso(ts), type_, actor, subject, data, snapshot,
                    bytes(prev_hash).hex(), bytes(hash_).hex())


def ingest_batch(conn: psycopg.Connection, events: list[Incoming],
                 rejects: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
                 heads: list[Head] = ()) -> BatchResult:  # type: ignore[assignment]
    """Write one batch in one transaction; see module doc. `rejects`: (station, reason,
    sample) of messages that were not usable events, counted in the same commit; `heads`:
    the stations' own word on how far their logs go. `res.behind` says, per station of the
    batch, from which seq the fleet misses events (a gap, or a head beyond its chain)."""
    res = BatchResult(rejected=len(rejects))
    with conn.transaction(), conn.cursor() as cur:
        for station_id, reason, sample in rejects:
            cur.execute(
                "INSERT INTO rejected(station_id, reason, sample) VALUES (%s, %s, %s)"
                " ON CONFLICT (station_id, reason) DO UPDATE SET count = rejected.count + 1,"
                " last_at = now(), sample = EXCLUDED.sample", (station_id, reason, sample[:500]))
        latest: dict[str, Head] = {h.station_id: h for h in heads}
        if latest:
            sids = sorted(latest)
            cur.execute(
                "INSERT INTO stations(station_id, reported_seq, last_seen)"
                " SELECT s, r, now() FROM unnest(%s::text[], %s::bigint[]) AS u(s, r) ORDER BY s"
                " ON CONFLICT (station_id) DO UPDATE SET reported_seq = EXCLUDED.reported_seq,"
                " last_seen = now()", (sids, [latest[s].seq for s in sids]))
        touched = sorted(set(latest) | {e.station_id for e in events})
        if not events:
            _behind(cur, touched, res)
            return res
        by_station: dict[str, list[Incoming]] = defaultdict(list)
        for ev in events:
            by_station[ev.station_id].append(ev)
        stations = sorted(by_station)
        res.stations = len(stations)
        # one statement locks every row of the batch, in station order: no deadlock between
        # ingest processes whose batches share stations
        cur.execute(
            "INSERT INTO stations(station_id) SELECT s FROM unnest(%s::text[]) AS s ORDER BY s"
            " ON CONFLICT (station_id) DO UPDATE SET last_seen = now()"
            " RETURNING station_id, epoch, epoch_seq, verified_seq, verified_hash, max_seq, fork_seq",
            (stations,))
        heads_: dict[str, StationHead] = {}
        max_seq: dict[str, int] = {}
        fork_seq: dict[str, int | None] = {}
        for sid, epoch, epoch_seq, vseq, vhash, mseq, fseq in cur.fetchall():
            heads_[sid] = StationHead(epoch, epoch_seq, vseq, bytes(vhash).hex())
            max_seq[sid], fork_seq[sid] = mseq, fseq

        restored: set[str] = set()
        for sid in stations:  # a newer epoch: the station declared a restore
            newest = max(by_station[sid], key=lambda e: e.epoch)
            if declares_restore(heads_[sid], newest):
                restored.add(sid)
                heads_[sid] = _declare_restore(cur, sid, heads_[sid], newest.epoch, newest.epoch_seq, res)
                max_seq[sid] = min(max_seq[sid], newest.epoch_seq - 1)
                fork_seq[sid] = None

        cur.execute(
            "SELECT e.station_id, e.seq, e.epoch, e.hash FROM events e"
            " JOIN unnest(%s::text[], %s::bigint[]) AS k(station_id, seq)"
            " ON e.station_id = k.station_id AND e.seq = k.seq",
            ([e.station_id for e in events], [e.seq for e in events]))
        held = {(sid, seq): Held(seq, ep, bytes(h).hex()) for sid, seq, ep, h in cur.fetchall()}

        new_rows: dict[str, dict[int, Incoming]] = defaultdict(dict)
        stale: list[Incoming] = []
        forks: dict[str, list[Incoming]] = defaultdict(list)
        for sid in stations:
            head = heads_[sid]
            for ev in sorted(by_station[sid], key=lambda e: e.seq):
                earlier = new_rows[sid].get(ev.seq)
                h = held.get((sid, ev.seq)) or (Held(earlier.seq, earlier.epoch, earlier.hash)
                                                if earlier else None)
                verdict = judge(ev, h, head)
                if verdict is Verdict.NEW:
                    new_rows[sid][ev.seq] = ev
                elif verdict is Verdict.DUPLICATE:
                    res.duplicates += 1
                elif verdict is Verdict.STALE:
                    stale.append(ev)
                else:
                    forks[sid].append(ev)

        inserted = [ev for sid in stations for ev in new_rows[sid].values()]
        if inserted:
            with cur.copy(f"COPY events ({', '.join(EVENT_COLS)}) FROM STDIN") as cp:
                for ev in inserted:
                    cp.write_row((ev.station_id, ev.seq, ev.epoch, ev.at, ev.type, ev.actor, ev.subject,
                                  ev.data_json, ev.snapshot, _b(ev.prev_hash), _b(ev.hash)))
            with cur.copy("COPY event_keys (station_id, key, seq) FROM STDIN") as cp:
                for ev in inserted:
                    for key in event_keys(ev):
                        cp.write_row((ev.station_id, key, ev.seq))
        res.inserted = len(inserted)
        if stale:
            res.stale = len(stale)
            cur.executemany(
                "INSERT INTO superseded_events(station_id, epoch, seq, ts, type, actor, subject, data,"
                " snapshot, prev_hash, hash, received_at, superseded_by)"
                " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), epoch FROM stations"
                " WHERE station_id = %s ON CONFLICT DO NOTHING",
                [(e.station_id, e.epoch, e.seq, e.at, e.type, e.actor, e.subject, e.data_json,
                  e.snapshot, _b(e.prev_hash), _b(e.hash), e.station_id) for e in stale])
        for sid, evs in forks.items():
            res.forks += len(evs)
            cur.executemany(
                "INSERT INTO conflicts(station_id, seq, epoch, hash, prev_hash, payload)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(sid, e.seq, e.epoch, _b(e.hash), _b(e.prev_hash), _payload(e)) for e in evs])
            first = min(e.seq for e in evs)
            _raise_alarm(cur, sid, "fork", first, max(e.seq for e in evs),
                         f"fork: seq {first} arrived with another hash than the one the fleet holds")
            res.alarms.append(f"fork {sid} {first}")

        now = datetime.now(UTC)
        updates: list[tuple[Any, ...]] = []
        parcel_rows: list[tuple[Any, ...]] = []
        for sid in stations:
            mine = new_rows[sid]
            if (not mine or fork_seq[sid] is not None) and sid not in restored:
                # nothing new, or a chain stuck at a fork (an operator's matter): no walk,
                # so a forked station's growing tail is never re-read batch after batch
                if mine:
                    cur.execute("UPDATE stations SET max_seq = greatest(max_seq, %s),"
                                " events = events + %s, last_seen = %s WHERE station_id = %s",
                                (max(mine), len(mine), now, sid))
                else:
                    _touch(cur, sid, now)
                continue
            walk, advanced = _walk(cur, sid, heads_[sid], mine, max_seq[sid])
            res.verified += len(advanced)
            if walk.fork_seq is not None and walk.fork_seq != fork_seq[sid]:
                _raise_alarm(cur, sid, "fork", walk.fork_seq, walk.fork_seq,
                             f"fork: seq {walk.fork_seq} does not continue the chain the fleet holds"
                             f" (its prev_hash is not the hash of seq {walk.fork_seq - 1})")
                res.alarms.append(f"fork {sid} {walk.fork_seq}")
            parcel_rows.extend(_apply(cur, sid, advanced))
            top = max(mine) if mine else 0
            newest_ts = max((e.at for e in mine.values()), default=None)
            updates.append((walk.verified_seq, _b(walk.verified_hash), top,
                            walk.gap[0] if walk.gap else None, walk.gap[1] if walk.gap else None,
                            walk.fork_seq, len(mine), now, newest_ts, newest_ts, now, newest_ts, sid))
        # one pipelined round trip each, not one per station of the batch
        if parcel_rows:
            cur.executemany(PARCEL_UPSERT, parcel_rows)
            cur.execute("UPDATE stations s SET occupancy = (SELECT count(*) FROM parcels p"
                        " WHERE p.station_id = s.station_id AND p.state = ANY(%s))"
                        " WHERE s.station_id = ANY(%s)",
                        (sorted(ON_SHELF), sorted({r[0] for r in parcel_rows})))
        if updates:
            cur.executemany(
                "UPDATE stations SET verified_seq = %s, verified_hash = %s,"
                " max_seq = greatest(max_seq, %s), gap_from = %s, gap_to = %s,"
                " fork_seq = coalesce(%s, fork_seq), events = events + %s, last_seen = %s,"
                " last_event_ts = greatest(last_event_ts, %s),"
                " lag_s = CASE WHEN %s::timestamptz IS NULL THEN lag_s"
                "         ELSE extract(epoch FROM %s - %s::timestamptz) END"
                " WHERE station_id = %s", updates)
        _behind(cur, touched, res)
    return res


def _behind(cur: psycopg.Cursor[Any], sids: list[str], res: BatchResult) -> None:
    if not sids:
        return
    cur.execute("SELECT station_id, verified_seq, gap_from, reported_seq, fork_seq FROM stations"
                " WHERE station_id = ANY(%s)", (sids,))
    for sid, vseq, gap_from, reported, fseq in cur.fetchall():
        seq = resend_from(vseq, gap_from, reported, fseq)
        res.behind[sid] = seq


def _payload(e: Incoming) -> str:
    return canonical_json({"station": e.station_id, "seq": e.seq, "epoch": e.epoch, "ts": e.ts,
                           "type": e.type, "actor": e.actor, "subject": e.subject,
                           "data": e.data, "snapshot": e.snapshot, "prev_hash": e.prev_hash,
                           "hash": e.hash})


def _touch(cur: psycopg.Cursor[Any], sid: str, now: datetime) -> None:
    cur.execute("UPDATE stations SET last_seen = %s WHERE station_id = %s", (now, sid))


def _walk(cur: psycopg.Cursor[Any], sid: str, head: StationHead, mine: dict[int, Incoming],
          stored_max: int) -> tuple[Walk, list[Incoming]]:
    """Walk from the verified head; in the usual case (in order, nothing stored above the
    head) only the batch's own rows, without reading anything back."""
    in_memory = stored_max <= head.verified_seq
    if in_memory:
        rows = [mine[s] for s in sorted(mine)]
        walk = walk_chain(head, (ChainRow(e.seq, e.prev_hash, e.hash) for e in rows))
        adv = set(walk.advanced)
        return walk, [e for e in rows if e.seq in adv]
    advanced: list[Incoming] = []
    walk = Walk(head.verified_seq, head.verified_hash)
    while True:
        cur.execute(
            "SELECT seq, epoch, ts, type, actor, subject, data, snapshot, prev_hash, hash"
            " FROM events WHERE station_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (sid, walk.verified_seq, WALK_PAGE))
        rows = [_row_to_incoming(sid, r) for r in cur.fetchall()]
        step = walk_chain(StationHead(head.epoch, head.epoch_seq, walk.verified_seq, walk.verified_hash),
                          (ChainRow(e.seq, e.prev_hash, e.hash) for e in rows))
        adv = set(step.advanced)
        advanced.extend(e for e in rows if e.seq in adv)
        walk = Walk(step.verified_seq, step.verified_hash, walk.advanced + step.advanced,
                    step.gap, step.fork_seq)
        if len(rows) < WALK_PAGE or step.gap or step.fork_seq is not None:
            return walk, advanced


PARCEL_UPSERT = (
    "INSERT INTO parcels(station_id, parcel_id, waybill, carrier, state, slot, courier_id,"
    " recipient_hash, shelved_at, updated_at, last_seq)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s = 'shelved' THEN %s::timestamptz END, %s, %s)"
    " ON CONFLICT (station_id, parcel_id) DO UPDATE SET state = EXCLUDED.state,"
    " waybill = coalesce(EXCLUDED.waybill, parcels.waybill),"
    " carrier = coalesce(EXCLUDED.carrier, parcels.carrier),"
    " slot = coalesce(EXCLUDED.slot, parcels.slot),"
    " courier_id = coalesce(EXCLUDED.courier_id, parcels.courier_id),"
    " recipient_hash = coalesce(EXCLUDED.recipient_hash, parcels.recipient_hash),"
    " shelved_at = coalesce(EXCLUDED.shelved_at, parcels.shelved_at),"
    " updated_at = EXCLUDED.updated_at, last_seq = EXCLUDED.last_seq")


def _apply(cur: psycopg.Cursor[Any], sid: str, advanced: list[Incoming]) -> list[tuple[Any, ...]]:
    """Applies the station's own alarms; returns the parcel rows for the batch's one upsert
    (in seq order, so a parcel's last change wins)."""
    if not advanced:
        return []
    fx = effects_of(advanced)
    rows = [(sid, p.parcel_id, p.waybill, p.carrier, p.state, p.slot, p.courier_id,
             p.recipient_hash, p.state, p.at, p.at, p.seq) for p in fx.parcels]
    if fx.alarms_raised or fx.alarms_cleared:
        cur.executemany(
            "INSERT INTO station_alarms(station_id, alarm_id, kind, message, raised_at, raised_seq)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(sid, *a) for a in fx.alarms_raised])
        if fx.alarms_cleared:
            cur.execute("UPDATE station_alarms SET cleared = true WHERE station_id = %s"
                        " AND alarm_id = ANY(%s)", (sid, fx.alarms_cleared))
        cur.execute("UPDATE stations SET open_alarms = (SELECT count(*) FROM station_alarms"
                    " WHERE station_id = %s AND NOT cleared) WHERE station_id = %s", (sid, sid))
    return rows


def _raise_alarm(cur: psycopg.Cursor[Any], sid: str, kind: str, first: int, last: int,
                 message: str) -> None:
    """One open alarm per station and kind; a later occurrence widens it, and the message
    always names the first seq that differs."""
    cur.execute(
        "INSERT INTO fleet_alarms(station_id, kind, first_seq, last_seq, message)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (station_id, kind) WHERE closed_at IS NULL DO UPDATE SET"
        " message = CASE WHEN EXCLUDED.first_seq < fleet_alarms.first_seq THEN EXCLUDED.message"
        "           ELSE fleet_alarms.message END,"
        " first_seq = least(fleet_alarms.first_seq, EXCLUDED.first_seq),"
        " last_seq = greatest(fleet_alarms.last_seq, EXCLUDED.last_seq),"
        " count = fleet_alarms.count + 1, updated_at = now()",
        (sid, kind, first, last, message))


def _declare_restore(cur: psycopg.Cursor[Any], sid: str, head: StationHead, epoch: int,
                     epoch_seq: int, res: BatchResult) -> StationHead:
    """The station says: from `epoch_seq` on, my log is a new incarnation. Keep the rows it
    replaces aside (evidence), raise a `restore` alarm naming how many, and rebuild the
    station's projections from its chain (a restore is rare; correctness over speed)."""
    cur.execute(
        "INSERT INTO superseded_events(station_id, epoch, seq, ts, type, actor, subject, data,"
        " snapshot, prev_hash, hash, received_at, superseded_by)"
        " SELECT station_id, epoch, seq, ts, type, actor, subject, data, snapshot, prev_hash, hash,"
        " received_at, %s FROM events WHERE station_id = %s AND seq >= %s ON CONFLICT DO NOTHING",
        (epoch, sid, epoch_seq))
    cur.execute("DELETE FROM event_keys WHERE station_id = %s AND seq >= %s", (sid, epoch_seq))
    cur.execute("DELETE FROM events WHERE station_id = %s AND seq >= %s", (sid, epoch_seq))
    replaced = cur.rowcount
    cur.execute("DELETE FROM parcels WHERE station_id = %s", (sid,))
    cur.execute("DELETE FROM station_alarms WHERE station_id = %s", (sid,))
    cur.execute(
        "UPDATE stations SET epoch = %s, epoch_seq = %s, verified_seq = 0, verified_hash = %s,"
        " max_seq = (SELECT coalesce(max(seq), 0) FROM events WHERE station_id = %s),"
        " events = (SELECT count(*) FROM events WHERE station_id = %s),"
        " fork_seq = NULL, gap_from = NULL, gap_to = NULL, occupancy = 0, open_alarms = 0"
        " WHERE station_id = %s", (epoch, epoch_seq, _b(GENESIS), sid, sid, sid))
    _raise_alarm(cur, sid, "restore", epoch_seq, epoch_seq + max(replaced - 1, 0),
                 f"restore declared: epoch {epoch} from seq {epoch_seq}; {replaced} events the"
                 " fleet held from there on are superseded (kept)")
    res.restores += 1
    res.alarms.append(f"restore {sid} {epoch_seq}")
    return StationHead(epoch, epoch_seq, 0, GENESIS)


# --- reading ---------------------------------------------------------------------------------


def trace(conn: psycopg.Connection, query: str, limit: int = 2000) -> list[dict[str, Any]]:
    """Every event for a waybill, parcel id, courier id or recipient hash, across stations,
    in time order. A waybill's parcel ids (per station) are followed too, so the pickup
    session and the exit that only name the parcel are part of its story."""
    keys = trace_keys(query)
    if not keys:
        return []
    sql = """
        WITH direct AS (
            SELECT station_id, seq FROM event_keys WHERE key = ANY(%(keys)s)
        ), parcel AS (
            SELECT station_id, 'p:' || parcel_id AS key FROM parcels WHERE waybill = %(q)s
        ), via_parcel AS (
            SELECT k.station_id, k.seq FROM event_keys k JOIN parcel p
              ON k.station_id = p.station_id AND k.key = p.key
        ), hits AS (
            SELECT station_id, seq FROM direct UNION SELECT station_id, seq FROM via_parcel
        )
        SELECT e.station_id, e.seq, e.ts, e.type, e.actor, e.subject, e.data, e.snapshot,
               encode(e.hash, 'hex'), s.console_url
        FROM hits h JOIN events e ON e.station_id = h.station_id AND e.seq = h.seq
        JOIN stations s ON s.station_id = e.station_id
        ORDER BY e.ts, e.station_id, e.seq LIMIT %(limit)s
    """
    rows = conn.execute(sql, {"keys": keys, "q": query.strip(), "limit": limit}).fetchall()  # type: ignore[arg-type]
    return [{"station": r[0], "seq": r[1], "ts": _iso(r[2]), "type": r[3], "actor": r[4],
             "subject": r[5], "data": r[6], "snapshot": r[7], "hash": r[8], "console_url": r[9]}
            for r in rows]


def stations(conn: psycopg.Connection, online_window_s: float = 900.0) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT s.station_id, s.epoch, s.verified_seq, s.max_seq, s.gap_from, s.gap_to, s.events,"
        " s.last_seen, s.last_event_ts, s.lag_s, s.occupancy, s.open_alarms, s.console_url,"
        " s.last_seen > now() - make_interval(secs => %s),"
        " (SELECT string_agg(a.kind || ' at seq ' || a.first_seq, '; ' ORDER BY a.kind)"
        "    FROM fleet_alarms a WHERE a.station_id = s.station_id AND a.closed_at IS NULL)"
        " FROM stations s ORDER BY (SELECT count(*) FROM fleet_alarms a WHERE a.station_id ="
        " s.station_id AND a.closed_at IS NULL) DESC, s.open_alarms DESC, s.station_id",
        (online_window_s,)).fetchall()
    out = []
    for r in rows:
        out.append({"station": r[0], "epoch": r[1], "verified_seq": r[2], "max_seq": r[3],
                    "gap": [r[4], r[5]] if r[4] is not None else None, "events": r[6],
                    "last_seen": _iso(r[7]) if r[7] else None,
                    "last_event": _iso(r[8]) if r[8] else None, "lag_s": r[9],
                    "occupancy": r[10], "open_alarms": r[11], "console_url": r[12],
                    "online": bool(r[13]), "fleet_alarms": r[14] or ""})
    return out


def fleet_alarms(conn: psycopg.Connection, station_id: str | None = None,
                 open_only: bool = True) -> list[dict[str, Any]]:
    where, args = [], []
    if station_id:
        where.append("station_id = %s")
        args.append(station_id)
    if open_only:
        where.append("closed_at IS NULL")
    sql = ("SELECT station_id, kind, first_seq, last_seq, count, message, opened_at, closed_at"
           " FROM fleet_alarms" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY opened_at")
    return [{"station": r[0], "kind": r[1], "first_seq": r[2], "last_seq": r[3], "count": r[4],
             "message": r[5], "opened_at": _iso(r[6]), "closed_at": _iso(r[7]) if r[7] else None}
            for r in conn.execute(sql, args).fetchall()]  # type: ignore[arg-type]


def close_alarm(conn: psycopg.Connection, station_id: str, kind: str, by: str) -> bool:
    """An operator has looked at a fork or a restore. Closing a fork does not unstick the
    station's chain: the fleet keeps both versions and waits for a decision it cannot make."""
    cur = conn.execute("UPDATE fleet_alarms SET closed_at = now(), closed_by = %s"
                       " WHERE station_id = %s AND kind = %s AND closed_at IS NULL",
                       (by, station_id, kind))
    return cur.rowcount > 0


def verify_station(conn: psycopg.Connection, station_id: str,
                   upto: int | None = None) -> tuple[bool, int, str]:
    """Re-walk a station's stored chain from genesis (to `upto`), recomputing every hash."""
    from station.store.eventlog import row_hash

    prev, expected, checked = GENESIS, 1, 0
    with conn.cursor(name=f"verify_{station_id}") if not conn.autocommit else conn.cursor() as cur:
        cur.execute("SELECT seq, ts, type, actor, subject, data, snapshot, prev_hash, hash"
                    " FROM events WHERE station_id = %s AND seq <= %s ORDER BY seq",
                    (station_id, upto if upto is not None else 2**62))
        for seq, ts, type_, actor, subject, data, snapshot, ph, h in cur:
            ph, h = bytes(ph).hex(), bytes(h).hex()
            if seq != expected:
                return False, checked, f"seq {expected} is missing"
            if ph != prev:
                return False, checked, f"seq {seq}: prev_hash does not match"
            if row_hash(seq, _iso(ts), type_, actor, subject, data, snapshot, ph) != h:
                return False, checked, f"seq {seq}: hash does not match its content"
            prev, expected, checked = h, seq + 1, checked + 1
    return True, checked, ""
