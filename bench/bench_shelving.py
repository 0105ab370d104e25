"""Station overhead per shelved parcel over a real Mosquitto with the firmware (issue 4, DESIGN §8).

Figures (ms), one guided courier shelving parcel after parcel:
  scan -> lit:        Shelving.scan(..., wait_lights=True): checks, slot choice, the durable
                      `parcel.scanned` commit, the signed lights command to the shelf firmware
                      and its signed ack.
  placement -> code:  from the shelf's `placement` event entering the station
                      (StationCore.on_device_event) to the commit of `parcel.shelved` with the
                      code digest and the queued SMS (store listener): what the station adds.
  put -> code (info): from the simulated hand (HAL sensor put) to the same commit; includes the
                      firmware's 50 ms debounce and its tick, which are the shelf's, not ours.
Baseline, same broker, same run: raw paho publish -> echo client -> publish back, QoS 1
(bench.bench_mqtt_roundtrip._raw_roundtrip).
One core, paced (issue 18.5): the same parcels through a second station started on one CPU
with its broker, firmware and this driver (bench.cpus.one_cpu), beside the unpinned figure:
the latency an edge box with one core for all of it would give at a courier's pace.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.bench_mqtt_roundtrip import _raw_roundtrip
from bench.cpus import one_cpu
from tests.support import stack
from tests.support.stack import LiveStation


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextmanager
def live_station(tmp: Path, capacity: int = 4, **overrides: Any) -> Iterator[LiveStation]:
    """The example room (capacity per slot raised so one run holds enough parcels) on a real
    broker with the firmware, as the e2e tests run it."""
    original = stack.example_config

    def patched(t: Any, **o: Any) -> Any:
        cfg = original(t, **o)
        shelves = [s if s.outbound else s.model_copy(update={"capacity": capacity}) for s in cfg.shelves]
        return cfg.model_copy(update={"shelves": shelves})

    stack.example_config = patched
    try:
        with LiveStation(tmp, station_overrides=overrides) as ls:
            yield ls
    finally:
        stack.example_config = original


def wait_for(pred: Any, timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.0005)
    raise RuntimeError("condition not met")


def _shelve_timed(ls: LiveStation, n: int, prof: Any = None) -> tuple[list[float], list[float], list[float]]:
    """n guided parcels after five warm-up ones: (scan -> lit, placement -> code, hand -> code) ms."""
    core = ls.core
    core.couriers.add("c-sf", "SF", "Li", "1234")
    sess = core.shelving.open_session("c-sf", "guided")
    marks: dict[str, float] = {}
    done: dict[str, float] = {}
    lock = threading.Lock()
    original = core.on_device_event

    def timed_event(device: str, kind: str, data: dict[str, Any]) -> None:
        if kind == "placement":
            with lock:
                marks["in"] = time.perf_counter()
        original(device, kind, data)

    core.on_device_event = timed_event  # bootstrap looks the method up per event

    def listener(events: Any) -> None:
        for e in events:
            if e.type == "parcel.shelved":
                done[e.data["waybill"]] = time.perf_counter()

    core.ctx.store.subscribe(listener)
    scan_ms: list[float] = []
    place_ms: list[float] = []
    hand_ms: list[float] = []
    for i in range(n + 5):  # five warm-up parcels
        waybill = f"SF{i:013d}"
        if prof:
            prof.enable()
        t0 = time.perf_counter()
        r = core.shelving.scan(sess["session_id"], waybill, f"139{i:08d}", "S")
        t1 = time.perf_counter()
        if prof:
            prof.disable()
        if not r.lights_acked:
            raise RuntimeError(f"lights not acked: {r}")
        th = time.perf_counter()
        ls.put(r.slot)
        wait_for(lambda w=waybill: w in done)
        if i >= 5:
            scan_ms.append((t1 - t0) * 1000)
            place_ms.append((done[waybill] - marks["in"]) * 1000)
            hand_ms.append((done[waybill] - th) * 1000)
    core.ctx.store.unsubscribe(listener)
    return scan_ms, place_ms, hand_ms


def run(quick: bool = False, profile: bool = False) -> dict[str, Any]:
    n = 60 if quick else 300
    n_raw = 200 if quick else 1000
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="bench-shelving-") as tmp, live_station(Path(tmp)) as ls:
        scan_ms, place_ms, hand_ms = _shelve_timed(ls, n, prof)
        shelved = ls.core.ctx.store.query_one("SELECT COUNT(*) n FROM parcels")["n"]
        raw = _raw_roundtrip(ls.broker, n_raw)
        hot = None
        if prof:
            import io
            import pstats

            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(12)
            hot = s.getvalue()
    # the edge-box profile (#18.5): a new station started on one CPU, its broker, firmware
    # and this driver with it
    with one_cpu() as cpu, tempfile.TemporaryDirectory(prefix="bench-shelving-1cpu-") as tmp, \
            live_station(Path(tmp)) as ls:
        one_scan, one_place, _ = _shelve_timed(ls, n)
    per_parcel = [a + b for a, b in zip(scan_ms, place_ms)]
    raw_p50, raw_p99 = pct(raw, 50), pct(raw, 99)
    rows = [
        {"figure": "shelving: scan -> slot lit and acked, p50", "ours": pct(scan_ms, 50),
         "baseline": raw_p50, "unit": "ms", "target": None},
        {"figure": "shelving: scan -> slot lit and acked, p99", "ours": pct(scan_ms, 99),
         "baseline": raw_p99, "unit": "ms", "target": "p99 < 50 ms", "target_ms": 50},
        {"figure": "shelving: placement event -> code issued (committed), p50", "ours": pct(place_ms, 50),
         "baseline": raw_p50, "unit": "ms", "target": None},
        {"figure": "shelving: placement event -> code issued (committed), p99", "ours": pct(place_ms, 99),
         "baseline": raw_p99, "unit": "ms", "target": "p99 < 50 ms", "target_ms": 50},
        {"figure": "shelving: station time per parcel (both steps), p99", "ours": pct(per_parcel, 99),
         "baseline": raw_p99, "unit": "ms", "target": None},
        {"figure": "shelving: hand put -> code issued incl. 50 ms firmware debounce, p50 (info)",
         "ours": pct(hand_ms, 50), "baseline": raw_p50, "unit": "ms", "target": None},
        {"figure": "shelving: parcels/s the station alone could take (1 / mean station time)",
         "ours": 1000.0 / (sum(per_parcel) / len(per_parcel)), "baseline": None, "unit": "parcels/s",
         "target": "> 0.4 (one courier, 2-3 s per parcel)"},
    ]
    where = "all on one CPU" if cpu is not None else "unpinned: this OS cannot pin"
    rows += [
        {"figure": f"one core, paced: shelving scan -> slot lit and acked, p99 (station, firmware, broker and "
                   f"driver {where}; baseline: the same unpinned)",
         "ours": pct(one_scan, 99), "baseline": pct(scan_ms, 99), "unit": "ms", "target": "p99 < 50 ms",
         "target_ms": 50},
        {"figure": f"one core, paced: shelving placement event -> code issued, p99 ({where}; baseline: unpinned)",
         "ours": pct(one_place, 99), "baseline": pct(place_ms, 99), "unit": "ms", "target": "p99 < 50 ms",
         "target_ms": 50},
    ]
    return {"rows": rows, "n": n, "n_raw": n_raw, "shelved": shelved, "profile": hot,
            "raw_paho_p50_ms": raw_p50, "raw_paho_p99_ms": raw_p99}


def main() -> None:
    out = run(quick="--quick" in sys.argv, profile="--profile" in sys.argv)
    print(f"Shelving overhead per parcel, n={out['n']} parcels, raw paho n={out['n_raw']}, same broker")
    for r in out["rows"]:
        base = "" if r["baseline"] is None else f"   baseline {r['baseline']:.3f}  x{r['ours'] / r['baseline']:.1f}"
        print(f"  {r['figure']:<80} {r['ours']:9.3f} {r['unit']}{base}")
    if out["profile"]:
        print(out["profile"])


if __name__ == "__main__":
    main()
