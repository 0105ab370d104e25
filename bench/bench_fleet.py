"""The fleet (issue 15): each figure beside its baseline, measured in the same run.

  ingest events/s:   fleet.store.ingest_batch (judging, COPY, search keys, chain walk,
                     projections, one transaction per 500 events from 50 stations arriving
                     interleaved) vs a raw COPY of the same rows into the same `events`
                     table; and the whole MQTT path (publisher -> Mosquitto -> `Ingest`
                     with manual acks after commit) vs raw paho publish -> receive.
  trace p50/p95:     fleet.store.trace for existing waybills over a big fleet (`--stations`
                     x `--events` each, written by `fleet synth`'s COPY) vs the same query
                     over 100 stations. Target: p95 < 1000 ms on 2 cores.
  end-to-end lag:    a station commit (Store.append returns) -> its row visible in the
                     fleet's PostgreSQL, through UpstreamForwarder, Mosquitto and Ingest,
                     vs a raw paho QoS 1 publish -> receive on the same broker.

    python -m bench.bench_fleet --quick                      # seconds
    python -m bench.bench_fleet                              # 10,000 stations x 100 events
    python -m bench.bench_fleet --stations 10000 --events 1000   # the issue's 10,000,000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from fleet.core import parse_message
from fleet.ingest import Ingest
from fleet.pg import PostgresProcess
from fleet.store import _b, ingest_batch, trace
from fleet.synth import ChainWriter, bulk_load_parallel, sample_keys, station_stream
from station.mosquitto import MosquittoProcess
from station.store.db import Store
from station.store.eventlog import Event
from station.upstream import UpstreamForwarder

ROOT = Path(__file__).resolve().parents[1]


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _streams(stations: int, per_station: int) -> list[tuple[ChainWriter, list[Any]]]:
    out = []
    for i in range(stations):
        w = ChainWriter(f"in{i:04d}")
        recs = []
        for rec in station_stream(w.station_id, per_station / 2000, 2000, 5):
            recs.append(rec)
        out.append((w, recs))
    return out


def _interleaved(streams: list[tuple[ChainWriter, list[Any]]]) -> list[bytes]:
    """Many stations at once, each in its own order: round robin over the stations."""
    payloads: list[bytes] = []
    longest = max(len(r) for _, r in streams)
    for k in range(longest):
        for w, recs in streams:
            if k < len(recs):
                payloads.append(w.payload(recs[k]))
    return payloads


def bench_ingest(pg: PostgresProcess, events: int) -> dict[str, Any]:
    streams = _streams(50, max(20, events // 50))
    payloads = _interleaved(streams)
    parsed = [parse_message(p) for p in payloads]
    dsn = pg.fresh_database("bench_ingest")
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        for i in range(0, len(parsed), 500):
            ingest_batch(conn, parsed[i:i + 500])
        ours = len(parsed) / (time.perf_counter() - t0)
    raw_dsn = pg.fresh_database("bench_copy")
    with psycopg.connect(raw_dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        for i in range(0, len(parsed), 500):
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                    "COPY events (station_id, seq, epoch, ts, type, actor, subject, data, snapshot,"
                    " prev_hash, hash) FROM STDIN") as cp:
                for e in parsed[i:i + 500]:
                    cp.write_row((e.station_id, e.seq, e.epoch, e.at, e.type, e.actor, e.subject,
                                  e.data_json, e.snapshot, _b(e.prev_hash), _b(e.hash)))
        raw = len(parsed) / (time.perf_counter() - t0)
    return {"events": len(parsed), "ingest_batch_per_s": ours, "raw_copy_per_s": raw,
            "payloads": payloads}


def bench_ingest_mqtt(pg: PostgresProcess, payloads: list[bytes]) -> dict[str, Any]:
    dsn = pg.fresh_database("bench_mqtt")
    with MosquittoProcess(extra_conf=["max_queued_messages 1000000"]) as broker:
        ingest = Ingest(dsn, broker.host, broker.port, client_id="bench-ingest").start()
        assert ingest.subscribed.wait(10)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
        pub.max_inflight_messages_set(1000)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        t0 = time.perf_counter()
        infos = [pub.publish(f"ps/v1/{json.loads(p)['station']}/station/events", p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(60)
        deadline = time.monotonic() + 300
        while ingest.stats.inserted < len(payloads) and time.monotonic() < deadline:
            time.sleep(0.01)
        ours = ingest.stats.inserted / (time.perf_counter() - t0)
        batches = ingest.stats.batches
        ingest.stop()
        # baseline: the same payloads, raw paho publish -> receive, no database
        got = threading.Semaphore(0)
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
        ready = threading.Event()
        sub.on_connect = lambda c, *a: c.subscribe("bench/#", qos=1)
        sub.on_subscribe = lambda *a: ready.set()
        sub.on_message = lambda *a: got.release()
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        ready.wait(10)
        t0 = time.perf_counter()
        for p in payloads:
            pub.publish("bench/x", p, qos=1)
        for _ in payloads:
            got.acquire(timeout=60)
        raw = len(payloads) / (time.perf_counter() - t0)
        sub.loop_stop()
        pub.loop_stop()
    return {"mqtt_ingest_per_s": ours, "raw_paho_per_s": raw, "batches": batches}


def bench_trace(pg: PostgresProcess, stations: int, per_station: int, queries: int,
                workers: int, small: int = 100) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, n in (("big", stations), ("small", small)):
        dsn = pg.fresh_database(f"bench_trace_{label}")
        t0 = time.perf_counter()
        total = bulk_load_parallel(dsn, n, per_station / 2000, 2000, seed=9, prefix="st", workers=workers)
        load_s = time.perf_counter() - t0
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE")
            keys = sample_keys(conn, queries)
            for q in keys[:5]:
                trace(conn, q)  # warm the cache as a serving process would be
            times, found = [], []
            for q in keys:
                t = time.perf_counter()
                rows = trace(conn, q)
                times.append((time.perf_counter() - t) * 1000)
                found.append(len(rows))
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        out[label] = {"stations": n, "events": total, "load_s": load_s, "load_per_s": total / load_s,
                      "p50_ms": _pct(times, 50), "p95_ms": _pct(times, 95), "queries": len(times),
                      "events_per_trace": statistics.mean(found) if found else 0, "db_bytes": size}
    return out


def bench_lag(pg: PostgresProcess, samples: int) -> dict[str, Any]:
    dsn = pg.fresh_database("bench_lag")
    tmp = Path(tempfile.mkdtemp(prefix="ps-bench-fleet-"))
    with MosquittoProcess(workdir=tmp / "broker") as broker:
        ingest = Ingest(dsn, broker.host, broker.port, client_id="bench-lag", batch_wait_s=0.0).start()
        assert ingest.subscribed.wait(10)
        store = Store(tmp / "st.db").open()
        fwd = UpstreamForwarder(store, "st-lag", broker.host, broker.port, poll_s=0.5)
        fwd.start()
        lags: list[float] = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(samples):
                rec = store.append(Event("bench.tick", "room", data={"n": i}))[0]
                t0 = time.perf_counter()
                while conn.execute("SELECT 1 FROM events WHERE station_id = 'st-lag' AND seq = %s",
                                   (rec.seq,)).fetchone() is None:
                    time.sleep(0.0005)
                lags.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.02)
        fwd.stop()
        ingest.stop()
        store.close()
        # baseline: raw paho QoS 1 publish -> receive on the same broker
        got = threading.Event()
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-lag-sub")
        ready = threading.Event()
        sub.on_connect = lambda c, *a: c.subscribe("bench/lag", qos=1)
        sub.on_subscribe = lambda *a: ready.set()
        sub.on_message = lambda *a: got.set()
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        ready.wait(10)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-lag-pub")
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        raw: list[float] = []
        for _ in range(samples):
            got.clear()
            t0 = time.perf_counter()
            pub.publish("bench/lag", b"x" * 400, qos=1)
            got.wait(5)
            raw.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.005)
        sub.loop_stop()
        pub.loop_stop()
    return {"p50_ms": _pct(lags, 50), "p95_ms": _pct(lags, 95), "raw_p50_ms": _pct(raw, 50),
            "raw_p95_ms": _pct(raw, 95), "samples": samples}


def run(quick: bool = False, stations: int | None = None, per_station: int | None = None,
        workers: int = 2, only_trace: bool = False) -> dict[str, Any]:
    stations = stations or (100 if quick else 10000)
    per_station = per_station or (100 if quick else 100)
    random.seed(1)
    with PostgresProcess(settings={"shared_buffers": "256MB", "max_wal_size": "4GB",
                                   "checkpoint_timeout": "30min"}) as pg:
        if only_trace:
            tr = bench_trace(pg, stations, per_station, 300, workers, 100)
            return {"rows": _trace_rows(tr, workers), "trace": tr}
        ing = bench_ingest(pg, 1500 if quick else 25000)
        mq = bench_ingest_mqtt(pg, ing.pop("payloads")[: (1000 if quick else 20000)])
        tr = bench_trace(pg, stations, per_station, 30 if quick else 300, workers, 10 if quick else 100)
        lag = bench_lag(pg, 30 if quick else 300)
    rows = [
        {"figure": f"fleet ingest_batch, 500 events/commit from 50 stations ({ing['events']:,} events)"
                   " (baseline raw COPY of the same rows)",
         "ours": ing["ingest_batch_per_s"], "baseline": ing["raw_copy_per_s"], "unit": "events/s", "target": None},
        {"figure": "fleet ingest over MQTT: publisher -> Mosquitto -> Ingest, acks after commit"
                   " (baseline raw paho publish -> receive)",
         "ours": mq["mqtt_ingest_per_s"], "baseline": mq["raw_paho_per_s"], "unit": "events/s",
         "target": ">= 230 events/s (10,000 stations x 2,000 a day)"},
        *_trace_rows(tr, workers),
        {"figure": "fleet end-to-end lag p50, station commit -> fleet row (baseline raw paho QoS 1 hop)",
         "ours": lag["p50_ms"], "baseline": lag["raw_p50_ms"], "unit": "ms", "target": None},
        {"figure": "fleet end-to-end lag p95, station commit -> fleet row (baseline raw paho QoS 1 hop)",
         "ours": lag["p95_ms"], "baseline": lag["raw_p95_ms"], "unit": "ms", "target": None},
    ]
    return {"rows": rows, "ingest": ing, "mqtt": mq, "trace": tr, "lag": lag}


def _trace_rows(tr: dict[str, Any], workers: int) -> list[dict[str, Any]]:
    big, small = tr["big"], tr["small"]
    return [
        {"figure": f"fleet trace p50, {big['events']:,} events from {big['stations']:,} stations"
                   f" (baseline same query, {small['events']:,} events from {small['stations']} stations)",
         "ours": big["p50_ms"], "baseline": small["p50_ms"], "unit": "ms", "target": None},
        {"figure": f"fleet trace p95, {big['events']:,} events from {big['stations']:,} stations"
                   f" (baseline same query, {small['events']:,} events from {small['stations']} stations)",
         "ours": big["p95_ms"], "baseline": small["p95_ms"], "unit": "ms", "target": "p95 < 1000 ms"},
        {"figure": f"fleet synth COPY load, {big['stations']:,} stations ({workers} processes)",
         "ours": big["load_per_s"], "baseline": None, "unit": "events/s", "target": None},
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--stations", type=int)
    ap.add_argument("--events", type=int, help="events per station in the big fleet")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only-trace", action="store_true", help="only the trace figures (a big load)")
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args.quick, args.stations, args.events, args.workers, args.only_trace)
    result["seconds"] = time.perf_counter() - t0
    for row in result["rows"]:
        base = row["baseline"]
        ratio = f"  x{row['ours'] / base:.2f}" if base else ""
        print(f"{row['figure']}\n    ours {row['ours']:,.1f} {row['unit']}"
              + (f"   baseline {base:,.1f}{ratio}" if base else ""))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1, default=str))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
