"""Two simulated years of a station's history, then retention (issue 16 item 5).

    python -m bench.bench_retention            # 2 years at 150 parcels a day (~2.1 M events)
    python -m bench.bench_retention --quick    # 400 days at 3 parcels a day, in seconds (a smoke)

History is written by batched inserts of the event shapes the station's own flows write: one
shelving session of three parcels and their three pickups is run through StationCore (the
flows harness: fake devices, fake outbox) and captured, and each copy gets fresh ids,
waybills, recipients and times; per parcel the device and notification traces a real station
also logs (door unlocked/opened/closed/locked, a lights command, notify queued/sent) are
added, about 20 events a parcel as in the week scenario. Every copied event is hashed into
the chain and applied to the projections by the live appliers, so the tables grow as on a
station.

Figures, each beside its baseline from the same run:
  database size before and after retention (file, live pages, a VACUUM INTO copy), archive size;
  hot-path queries (the chain's tip, a code lookup, a recipient's parcels, a slot's count, the
  open sessions) and a one-event durable commit, before vs after;
  `verify` of the live chain before vs after;
  prune throughput (events/s moved to the archive and deleted) vs a raw DELETE of as many rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from station.store.archive import verify_log
from station.store.db import Store
from station.store.eventlog import Event, EventRecord, parse_utc, row_hash, utc_iso
from station.store.projections import apply_event
from station.store.retention import Retention

DAY = 86400.0
T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z
KEEP_DAYS = 90
_ID = re.compile(r"\b([a-z]{3})_[0-9a-f]{16}\b")
_WAYBILL = re.compile(r"\bSF\d{13}\b")
_HEX64 = re.compile(r"\b[0-9a-f]{64}\b")


Block = list[tuple[str, str, str, str, float, int | None]]


def capture_block(tmp: Path) -> tuple[Block, int]:
    """One shelving session of three parcels and their pickups, through the real flows:
    [(type, actor, subject, data_json, seconds after the first event, its seq there or None)],
    parcels. The seq lets each copy point an accepted code at its own copy's attempt."""
    from station.config import load_secrets, write_new_secrets
    from tests.flows.harness import make_station, phone, sf_waybill

    secrets = load_secrets(write_new_secrets(tmp / "secrets.toml"), env={})
    st = make_station(tmp, secrets)
    st.add_courier()
    start = st.store.last_seq
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    shelved = []
    for n in range(3):
        slot, code = st.shelve(sf_waybill(n + 1), phone(n + 1), session_id=sid)
        shelved.append((slot, code, sf_waybill(n + 1)))
    st.core.shelving.close_session(sid)
    for slot, code, waybill in shelved:
        st.clock.advance(3600)
        st.core.pickup.enter_with_code(code, "k1")
        st.take(slot)
        st.core.exit.check([waybill])
    rows = st.store.query("SELECT seq, ts, type, actor, subject, data FROM events WHERE seq > ? ORDER BY seq",
                          (start,))
    st.store.close()
    t_first = parse_utc(rows[0]["ts"])
    block: Block = [(r["type"], r["actor"], r["subject"], r["data"], parse_utc(r["ts"]) - t_first, r["seq"])
                    for r in rows]
    # what a real station also logs per parcel: the door's own reports of the entry, the
    # lights command, and the notification's queueing and delivery
    for k in range(3):
        at = 3600.0 * (k + 1)
        pickup_session = "pks_" + "0" * 15 + str(k)
        block += [
            ("notify.queued", "station", f"msg_{k:016x}", json.dumps({"channel": "sms", "kind": "pickup_code",
             "message_id": f"msg_{k:016x}", "phone_masked": "138****0001"}, sort_keys=True, separators=(",", ":")), 1.0,
             None),
            ("notify.sent", "station", f"msg_{k:016x}", json.dumps({"attempts": 1, "channel": "sms",
             "message_id": f"msg_{k:016x}"}, sort_keys=True, separators=(",", ":")), 2.0, None),
            ("light.set", "station", "shelf-1", json.dumps({"device": "shelf-1", "lights": {"1-1-01": {
             "colours": ["#00C853"], "pattern": "solid", "ttl_s": 600}}, "session_id": pickup_session},
             sort_keys=True, separators=(",", ":")), at + 0.2, None),
        ]
        for j, kind in enumerate(("door.unlocked", "door.opened", "door.closed", "door.locked")):
            block.append((kind, "door-entry", "door-entry", json.dumps(
                {"boot_id": "b-0000000000000000", "evt_seq": 4 * k + j, "cmd_id": f"cmd_{k:016x}"},
                sort_keys=True, separators=(",", ":")), at + 0.3 + j, None))
    block.sort(key=lambda b: b[4])
    return block, 3


class Copier:
    """Fresh ids, waybills, recipient hashes and device event numbers for each copy."""

    def __init__(self) -> None:
        self.n = 0

    def copy(self, block: Block) -> Block:
        mapping: dict[str, str] = {}

        def fresh(kind: str, old: str) -> str:
            if old not in mapping:
                self.n += 1
                if kind == "id":
                    mapping[old] = f"{old[:4]}{self.n:016x}"
                elif kind == "wb":
                    mapping[old] = f"SF{self.n:013d}"
                else:
                    mapping[old] = hashlib.sha256(str(self.n).encode()).hexdigest()
            return mapping[old]

        def sub(text: str) -> str:
            text = _ID.sub(lambda m: fresh("id", m.group(0)), text)
            text = _WAYBILL.sub(lambda m: fresh("wb", m.group(0)), text)
            return _HEX64.sub(lambda m: fresh("hex", m.group(0)), text)

        out = []
        for type_, actor, subject, data, dt, orig_seq in block:
            data = sub(data)
            if '"evt_seq":' in data:
                self.n += 1
                obj = json.loads(data)
                obj["evt_seq"] = self.n
                data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            out.append((type_, actor, sub(subject), data, dt, orig_seq))
        return out


def build_history(path: Path, days: int, per_day: int, block: Block, parcels_per_block: int) -> dict[str, Any]:
    """`days` of history at `per_day` parcels, batched: one transaction a simulated day."""
    store = Store(path).open()
    store.close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # the bench's bulk load; the station runs FULL
    seq, prev = 0, "0" * 64
    copier = Copier()
    blocks = max(1, per_day // parcels_per_block)
    t0 = time.perf_counter()
    for d in range(days):
        conn.execute("BEGIN")
        for b in range(blocks):
            base = T0 + d * DAY + b * (DAY / blocks) * 0.5
            copied: dict[int, int] = {}  # the captured seq -> this copy's
            for type_, actor, subject, data, dt, orig_seq in copier.copy(block):
                seq += 1
                if orig_seq is not None:
                    copied[orig_seq] = seq
                if '"attempt":' in data:  # an accepted code clears its own copy's attempt
                    obj = json.loads(data)
                    obj["attempt"] = copied[obj["attempt"]]
                    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                ts = utc_iso(base + dt)
                digest = row_hash(seq, ts, type_, actor, subject, data, None, prev)
                conn.execute("INSERT INTO events(seq, ts, type, actor, subject, data, snapshot, prev_hash, hash)"
                             " VALUES (?,?,?,?,?,?,?,?,?)", (seq, ts, type_, actor, subject, data, None, prev, digest))
                apply_event(conn, EventRecord(seq, ts, type_, actor, subject, json.loads(data), None, prev, digest))
                prev = digest
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"events": seq, "parcels": days * blocks * parcels_per_block, "build_s": elapsed,
            "end_ts": T0 + days * DAY}


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def sizes(path: Path) -> dict[str, float]:
    conn = sqlite3.connect(str(path))
    try:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        rows = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("events", "parcels", "sessions", "pending_placements", "device_events", "auth_failures")}
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    return {"file_mb": (path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 1e6,
            "live_mb": (count - free) * page / 1e6, "rows": rows}  # type: ignore[dict-item]


def hot_paths(store: Store, repeats: int) -> dict[str, float]:
    live = store.query_one("SELECT code_digest, recipient_hash, slot FROM parcels WHERE state = 'shelved' LIMIT 1")
    if live is None:
        live = store.query_one("SELECT code_digest, recipient_hash, slot FROM parcels ORDER BY rowid DESC LIMIT 1")
    conn = sqlite3.connect(str(store.path))
    try:
        q = {
            "tip": ("SELECT seq, hash, ts FROM events ORDER BY seq DESC LIMIT 1", ()),
            "code_lookup": ("SELECT * FROM parcels WHERE code_digest = ?", (live["code_digest"],)),
            "recipient_parcels": ("SELECT * FROM parcels WHERE recipient_hash = ? AND state = 'shelved'",
                                  (live["recipient_hash"],)),
            "slot_count": ("SELECT COUNT(*) FROM parcels WHERE slot = ? AND state IN ('shelved', 'expired', "
                           "'recalled', 'dropped_off')", (live["slot"],)),
            "open_sessions": ("SELECT * FROM sessions WHERE state = 'open' AND kind = 'pickup'", ()),
            "events_of_subject": ("SELECT * FROM events WHERE subject = ? ORDER BY seq DESC LIMIT 50", ("door-entry",)),
        }
        out = {name: _median_ms(lambda s=sql, a=args: conn.execute(s, a).fetchall(), repeats)
               for name, (sql, args) in q.items()}
    finally:
        conn.close()
    out["commit_one_event"] = _median_ms(
        lambda: store.append(Event("note.bench", "bench", "bench", {"x": 1})), max(10, repeats // 20))
    return out


def verify_s(store: Store) -> tuple[float, int]:
    t = time.perf_counter()
    with store.snapshot() as conn:
        result = verify_log(conn)
    assert result.ok, result
    return time.perf_counter() - t, result.checked


def raw_delete_rate(path: Path, through_seq: int, batch: int) -> float:
    """Baseline: the same rows deleted by plain DELETEs in the same batches, no archive."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
    t = time.perf_counter()
    done = 0
    while done < through_seq:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM events WHERE seq > ? AND seq <= ?", (done, min(done + batch, through_seq)))
        conn.execute("COMMIT")
        done += batch
    elapsed = time.perf_counter() - t
    conn.close()
    return through_seq / elapsed


def run(quick: bool = False, per_day: int | None = None, days: int | None = None) -> dict[str, Any]:
    per_day = per_day or (3 if quick else 150)
    days = days or (400 if quick else 730)
    repeats = 100 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp_s:
        tmp = Path(tmp_s)
        block, per_block = capture_block(tmp / "capture")
        db = tmp / "station.db"
        built = build_history(db, days, per_day, block, per_block)
        before = sizes(db)
        baseline_copy = tmp / "baseline.db"
        shutil.copyfile(db, baseline_copy)
        now = built["end_ts"]
        store = Store(db, clock=lambda: now).open()
        hot_before = hot_paths(store, repeats)
        verify_before, checked_before = verify_s(store)
        retention = Retention(store, tmp / "archive", keep_days=KEEP_DAYS, segment_events=50_000,
                              batch_events=2_000)
        t = time.perf_counter()
        result = retention.run(now)
        prune_s = time.perf_counter() - t
        hot_after = hot_paths(store, repeats)
        verify_after, checked_after = verify_s(store)
        store.close()
        after = sizes(db)
        vacuumed = tmp / "vacuumed.db"
        conn = sqlite3.connect(str(db))
        conn.execute(f"VACUUM INTO '{vacuumed}'")
        conn.close()
        archive_mb = sum(p.stat().st_size for p in (tmp / "archive").iterdir()) / 1e6
        raw_rate = raw_delete_rate(baseline_copy, result.through_seq, 2_000)
        parcels = built["parcels"]
        out = {
            "days": days, "parcels_per_day": per_day, "parcels": parcels, "events": built["events"],
            "events_per_parcel": round(built["events"] / parcels, 1), "keep_days": KEEP_DAYS,
            "build_s": round(built["build_s"], 1),
            "db_before": before, "db_after": after, "db_after_vacuum_mb": vacuumed.stat().st_size / 1e6,
            "archive_mb": archive_mb, "archived_events": result.archived, "segments": result.segments,
            "db_bytes_per_parcel_unpruned": before["live_mb"] * 1e6 / parcels,
            "archive_bytes_per_parcel": archive_mb * 1e6 / max(1, parcels * result.archived / built["events"]),
            "hot_ms_before": hot_before, "hot_ms_after": hot_after,
            "verify_s_before": verify_before, "verify_events_before": checked_before,
            "verify_s_after": verify_after, "verify_events_after": checked_after,
            "prune_s": prune_s, "prune_events_per_s": result.archived / prune_s if prune_s else None,
            "raw_delete_events_per_s": raw_rate,
        }
    label = f"{days} days x {per_day}/day, keep {KEEP_DAYS} days"
    hb, ha = out["hot_ms_before"], out["hot_ms_after"]
    out["rows"] = [
        {"figure": f"retention: live database after retention ({label}; baseline: the same history unpruned)",
         "ours": after["live_mb"], "baseline": before["live_mb"], "unit": "MB", "target": None},
        {"figure": f"retention: pickup-code lookup after retention ({label}; baseline: before)",
         "ours": ha["code_lookup"], "baseline": hb["code_lookup"], "unit": "ms", "target": None},
        {"figure": f"retention: one-event durable commit after retention ({label}; baseline: before)",
         "ours": ha["commit_one_event"], "baseline": hb["commit_one_event"], "unit": "ms", "target": None},
        {"figure": f"retention: verify of the live chain after retention ({label}; baseline: before)",
         "ours": out["verify_s_after"], "baseline": out["verify_s_before"], "unit": "s", "target": None},
        {"figure": "retention: events archived and deleted per second (baseline: raw DELETE of as many rows, same batches)",
         "ours": out["prune_events_per_s"], "baseline": raw_rate, "unit": "events/s", "target": None},
    ]
    return out


def report(r: dict[str, Any]) -> str:
    lines = [
        f"history: {r['days']} days x {r['parcels_per_day']} parcels/day = {r['parcels']:,} parcels, "
        f"{r['events']:,} events ({r['events_per_parcel']} a parcel), built in {r['build_s']} s",
        f"retention keeps {r['keep_days']} days: {r['archived_events']:,} events -> {r['segments']} segments, "
        f"{r['archive_mb']:.1f} MB of archive ({r['archive_bytes_per_parcel']:.0f} B a parcel)",
        "",
        f"{'figure':<28}{'before':>14}{'after':>14}",
        f"{'database file (MB)':<28}{r['db_before']['file_mb']:>14.1f}{r['db_after']['file_mb']:>14.1f}",
        f"{'live pages (MB)':<28}{r['db_before']['live_mb']:>14.1f}{r['db_after']['live_mb']:>14.1f}",
        f"{'VACUUM INTO copy (MB)':<28}{'':>14}{r['db_after_vacuum_mb']:>14.1f}",
    ]
    for table, n in r["db_before"]["rows"].items():
        lines.append(f"{'rows ' + table:<28}{n:>14,}{r['db_after']['rows'][table]:>14,}")
    for name, ms in r["hot_ms_before"].items():
        lines.append(f"{name + ' (ms, median)':<28}{ms:>14.3f}{r['hot_ms_after'][name]:>14.3f}")
    lines += [
        f"{'verify live chain (s)':<28}{r['verify_s_before']:>14.2f}{r['verify_s_after']:>14.2f}"
        f"   ({r['verify_events_before']:,} -> {r['verify_events_after']:,} events)",
        "",
        f"prune: {r['prune_events_per_s']:,.0f} events/s archived and deleted ({r['prune_s']:.1f} s) vs raw DELETE "
        f"{r['raw_delete_events_per_s']:,.0f} events/s (ratio {r['prune_events_per_s'] / r['raw_delete_events_per_s']:.2f})",
        f"database per parcel before retention: {r['db_bytes_per_parcel_unpruned']:.0f} B",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--per-day", type=int)
    p.add_argument("--days", type=int, help="simulated days (730; 400 with --quick)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    r = run(quick=args.quick, per_day=args.per_day, days=args.days)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
