"""The event log (DESIGN §3, issue 9 item 4).

  durable appends/s:  one `Store.transaction()` with one `tx.emit(Event)` per commit (hash
                      chain, canonical JSON, projection dispatch, WAL + synchronous=FULL)
                      vs raw sqlite3 inserts of the same row shape, one per commit, on a
                      connection with the same pragmas (station.store.db.connect). Target
                      (issue 18.4): ours >= 0.8 x raw.
  big log:            1,000,000 events built by direct appends in batches of 10,000 per
                      transaction (not through the flows), then `verify_chain` and
                      `replay_into` speed (events/s), and a filtered query (one subject's
                      door events via iter_events(types=["door.*"], subject=...)) beside a
                      full scan of the same filter done in Python over every row (baseline).
  growth:             the filtered query at 10,000 / 100,000 / 1,000,000 events.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from station.store.db import Store, connect
from station.store.eventlog import Event, canonical_json, iter_events, verify_chain
from station.store.replay import replay_into

TYPES = ("slot.sensed", "command.acked", "door.opened", "door.closed", "device.heartbeat",
         "notify.failed", "light.state")


def _event(rng: random.Random, i: int) -> Event:
    t = TYPES[i % len(TYPES)]
    if t.startswith("door."):
        dev = subject = rng.choice(("door-entry", "door-exit"))
    else:  # like a parcel's story: a handful of events per subject
        dev, subject = f"shelf-{rng.randrange(1, 4)}", f"pcl_{i // 5:08d}"
    return Event(t, subject, dev, {"row": rng.randrange(1, 6), "col": rng.randrange(1, 11),
                               "n": i, "note": "bench"})


def appends_per_second(tmp: Path, n: int, block: int = 50) -> tuple[float, float]:
    """Ours and raw alternate in blocks of `block` commits so disk noise hits both alike."""
    rng = random.Random(1)
    store = Store(tmp / "durable.db").open()
    events = [_event(rng, i) for i in range(n)]
    conn = connect(tmp / "raw.db")
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, type TEXT NOT NULL,"
                 " actor TEXT NOT NULL, subject TEXT NOT NULL, data TEXT NOT NULL, snapshot TEXT,"
                 " prev_hash TEXT NOT NULL, hash TEXT NOT NULL)")
    for idx in ("CREATE INDEX e_ts ON events(ts)", "CREATE INDEX e_type ON events(type, seq)",
                "CREATE INDEX e_subject ON events(subject, seq)"):
        conn.execute(idx)
    rows = [(i + 1, "2026-01-01T00:00:00.000000Z", e.type, e.actor, e.subject, json.dumps(e.data),
             None, "0" * 64, "f" * 64) for i, e in enumerate(events)]
    t_ours = t_raw = 0.0
    for start in range(0, n, block):
        t0 = time.perf_counter()
        for e in events[start:start + block]:
            with store.transaction() as tx:
                tx.emit(e)
        t1 = time.perf_counter()
        for row in rows[start:start + block]:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", row)
            conn.execute("COMMIT")
        t2 = time.perf_counter()
        t_ours += t1 - t0
        t_raw += t2 - t1
    store.close()
    conn.close()
    return n / t_ours, n / t_raw


def _median_ms(fn: Any, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[len(times) // 2]


def _filtered(conn: sqlite3.Connection, subject: str) -> tuple[float, float, int]:
    """One parcel's story (`station log tail --subject`): (median ms for the indexed query,
    ms for a Python full scan of the same filter, hits)."""
    types = ["slot.*", "command.*", "notify.*", "light.*", "device.*"]
    hits = list(iter_events(conn, subject=subject, types=types))
    ours = _median_ms(lambda: list(iter_events(conn, subject=subject, types=types)))
    t0 = time.perf_counter()
    scan = sum(1 for _, t, s in conn.execute("SELECT seq, type, subject FROM events")
               if s == subject and t.split(".")[0] in ("slot", "command", "notify", "light", "device"))
    base = (time.perf_counter() - t0) * 1000
    assert scan == len(hits)
    return ours, base, len(hits)


def _filtered_recent(conn: sqlite3.Connection) -> float:
    """The operator page's query: the last 50 door events of one door."""
    return _median_ms(lambda: list(iter_events(conn, types=["door.*"], subject="door-exit",
                                               limit=50, descending=True)))


def big_log(tmp: Path, sizes: tuple[int, ...], batch: int = 10_000) -> dict[str, Any]:
    rng = random.Random(2)
    store = Store(tmp / "big.db").open()
    growth: dict[int, dict[str, float]] = {}
    built = 0
    t_build = 0.0
    for target in sizes:
        t0 = time.perf_counter()
        while built < target:
            k = min(batch, target - built)
            with store.transaction() as tx:
                for i in range(built, built + k):
                    tx.emit(_event(rng, i))
            built += k
        t_build += time.perf_counter() - t0
        with store.reading() as conn:
            q, base, hits = _filtered(conn, f"pcl_{(target // 2) // 5:08d}")
            recent = _filtered_recent(conn)
        growth[target] = {"query_ms": q, "python_scan_ms": base, "hits": hits, "recent50_ms": recent}
    with store.reading() as conn:
        t0 = time.perf_counter()
        result = verify_chain(conn)
        t_verify = time.perf_counter() - t0
        assert result.ok and result.checked == built, result
        t0 = time.perf_counter()
        last = replay_into(conn, tmp / "replayed.db")
        t_replay = time.perf_counter() - t0
        assert last == built
    store.close()
    return {"events": built, "build_s": t_build, "build_per_s": built / t_build,
            "verify_s": t_verify, "verify_per_s": built / t_verify,
            "replay_s": t_replay, "replay_per_s": built / t_replay, "growth": growth}


def raw_hash_rate(n: int = 200_000) -> float:
    """Baseline for verify/replay: SHA-256 over canonical rows in pure Python, no SQLite."""
    import hashlib

    rows = [[i, "2026-01-01T00:00:00.000000Z", "slot.sensed", "shelf-1", "shelf-1",
             '{"col":3,"n":1,"row":2}', None, "0" * 64] for i in range(n)]
    t0 = time.perf_counter()
    for r in rows:
        hashlib.sha256(canonical_json(r).encode()).hexdigest()
    return n / (time.perf_counter() - t0)


def run(quick: bool = False) -> dict[str, Any]:
    n_appends = 500 if quick else 3000
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-eventlog-", dir="var" if Path("var").is_dir() else None) as t:
        tmp = Path(t)
        ours, raw = appends_per_second(tmp, n_appends)
        big = big_log(tmp, sizes)
    hash_rate = raw_hash_rate(50_000 if quick else 200_000)
    top = big["growth"][big["events"]]
    label = f"{big['events']:,}"
    rows = [
        {"figure": "event log: durable appends/s (one event per commit, synchronous=FULL) vs raw sqlite3 insert+commit",
         "ours": ours, "baseline": raw, "unit": "events/s", "target": ">= 0.8 x raw (issue 18.4)", "target_ratio_min": 0.8},
        {"figure": f"event log: verify_chain over {label} events (baseline: bare SHA-256 of canonical rows)",
         "ours": big["verify_per_s"], "baseline": hash_rate, "unit": "events/s", "target": None},
        {"figure": f"event log: replay_into a new database, {label} events (baseline: verify)",
         "ours": big["replay_per_s"], "baseline": big["verify_per_s"], "unit": "events/s", "target": None},
        {"figure": f"event log: filtered query (one parcel's events by subject+types, {top['hits']} hits) on "
                   f"{label} events (baseline: full scan filtered in Python)",
         "ours": top["query_ms"], "baseline": top["python_scan_ms"], "unit": "ms", "target": None},
        {"figure": f"event log: last 50 door.* events of one door on {label} events (baseline: 10,000-event log)",
         "ours": top["recent50_ms"], "baseline": big["growth"][sizes[0]]["recent50_ms"], "unit": "ms", "target": None},
        {"figure": f"event log: batched build (10,000 events per commit), {label} events",
         "ours": big["build_per_s"], "baseline": raw, "unit": "events/s", "target": None},
    ]
    return {"rows": rows, "appends": n_appends, "big": big, "sha256_per_s": hash_rate}


def main() -> None:
    out = run(quick="--quick" in sys.argv)
    for r in out["rows"]:
        print(f"  {r['figure']:<110} {r['ours']:12.2f} {r['unit']}  baseline {r['baseline']:.2f}"
              f"  ratio {r['ours'] / r['baseline']:.3f}")
    print("growth:", json.dumps(out["big"]["growth"], indent=1))


if __name__ == "__main__":
    main()
