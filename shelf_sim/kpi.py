"""KPIs: counters and latency samples collected while a run goes, and the report built from
them (JSON, a terminal summary, a PNG chart).

The report has two halves: `outcome` holds only what the seed decides (counts of things
done, invariants), so two runs with one seed can be compared for equality; `timing` holds
latencies, rates and injected network faults, which depend on the machine and thread
interleaving."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# outcome counts the seed decides (what people did and what the station decided); every other
# count (retries, waits, late lights) depends on timing and goes to `observed`
OUTCOME = ("parcels_shelved", "parcels_not_shelved", "parcels_picked_up", "pickups_completed",
           "customer_entries", "courier_entries", "walk_offs", "courier_wrong_slot_puts",
           "customer_wrong_slot_takes", "wrong_parcels_caught_at_exit", "strangers_refused",
           "parcels_left_on_shelves", "customers_not_admitted", "exit_refused_own_parcels",
           "exit_leave_tries_with_foreign_parcel", "exit_leave_foreign_refused",
           "reboots", "broker_restarts", "stuck_sensors", "dead_leds",
           "customer_extend_asked", "customer_reports_empty", "customer_refusals",
           # courier entry by face (shelf_sim/facecam.py): live couriers admitted and refused
           # (a false reject: they use their PIN), impostors' attacks tried and refused
           "face_entries", "face_live_refused", "face_spoofs_tried", "face_spoofs_refused")
INVARIANTS = ("wrong_slots_lit", "parcels_lost", "doors_opened_without_waiting_parcel",
              "foreign_parcels_let_out", "strangers_let_in", "station_stalled", "spoofs_admitted")


@dataclass
class Metrics:
    """Thread-safe counters and samples; every actor writes here."""

    counts: Counter[str] = field(default_factory=Counter)
    net: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    courier_busy_s: float = 0.0
    courier_full_wait_s: float = 0.0
    net_lock: threading.Lock = field(default_factory=threading.Lock)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inc(self, name: str, n: int = 1, example: str | None = None) -> None:
        with self._lock:
            self.counts[name] += n
            if example is not None and len(self.examples[name]) < 10:
                self.examples[name].append(example)

    def sample(self, name: str, seconds: float) -> None:
        with self._lock:
            self.samples[name].append(seconds)

    def add_courier_time(self, seconds: float, waiting: bool = False) -> None:
        """Courier time in real seconds; `waiting` marks time spent waiting for a full
        station, which is counted in the shift but reported apart."""
        with self._lock:
            if waiting:
                self.courier_full_wait_s += seconds
            else:
                self.courier_busy_s += seconds


def percentiles(values: list[float]) -> dict[str, float | int]:
    """p50/p95/p99/max in milliseconds (nearest rank), and the sample count."""
    if not values:
        return {"n": 0}
    v = sorted(values)

    def rank(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, round(p / 100 * len(v)) - 1))] * 1000, 2)

    return {"n": len(v), "p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99),
            "max_ms": round(v[-1] * 1000, 2)}


def build_report(m: Metrics, plan_summary: dict[str, Any], meta: dict[str, Any],
                 wall_s: float, speed: float) -> dict[str, Any]:
    c = m.counts
    invariants = {k: int(c.get(k, 0)) for k in INVARIANTS}
    courier_hours = m.courier_busy_s / 3600.0  # real seconds: human pace + station waits
    working_hours = (m.courier_busy_s - m.courier_full_wait_s) / 3600.0
    shelved = c.get("parcels_shelved", 0)
    overhead = [a + b for a, b in zip(m.samples.get("scan_to_lit", []), m.samples.get("put_to_shelved", []))]
    report = {
        "scenario": meta,
        "plan": plan_summary,
        "outcome": {k: int(c.get(k, 0)) for k in OUTCOME},
        "observed": {k: int(v) for k, v in sorted(c.items()) if k not in OUTCOME and k not in INVARIANTS},
        "invariants": invariants,
        "ok": all(v == 0 for v in invariants.values()),
        "timing": {
            "wall_s": round(wall_s, 2),
            "simulated_h": round(wall_s * speed / 3600.0, 3),
            "parcels_shelved_per_courier_hour": round(shelved / courier_hours, 1) if courier_hours else None,
            "parcels_shelved_per_courier_hour_not_waiting_for_room": (
                round(shelved / working_hours, 1) if working_hours > 0 else None),
            "station_overhead_per_parcel": percentiles(overhead),
            "latency": {k: percentiles(v) for k, v in sorted(m.samples.items())},
            "network_faults_injected": dict(sorted(m.net.items())),
        },
        "examples": {k: v for k, v in sorted(m.examples.items())},
    }
    return report


def picture_counts(database: str | Path) -> dict[str, Any]:
    """Room pictures (#21.3): of the events a room camera witnesses, how many name a picture
    and how many say none was available (and why), by event type; read from the station's
    database (read-only, beside its writer)."""
    import sqlite3

    uri = Path(database).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT type, json_type(data, '$.picture') AS kind, json_extract(data, '$.picture_reason'),"
            " COUNT(*) FROM events WHERE json_type(data, '$.picture') IS NOT NULL GROUP BY 1, 2, 3").fetchall()
    finally:
        conn.close()
    out: dict[str, Any] = {"with_picture": 0, "without_picture": 0, "by_type": {}, "no_picture_because": {}}
    for type_, kind, reason, n in rows:
        has = kind == "text"
        out["with_picture" if has else "without_picture"] += n
        t = out["by_type"].setdefault(type_, {"with": 0, "without": 0})
        t["with" if has else "without"] += n
        if not has:
            out["no_picture_because"][str(reason)] = out["no_picture_because"].get(str(reason), 0) + n
    return out


def deterministic_view(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a report one seed decides: compare two runs with this."""
    return {k: report[k] for k in ("plan", "outcome", "invariants", "ok")}


def write_report(report: dict[str, Any], directory: Path) -> list[Path]:
    """report.json and kpi.png in `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "report.json"
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    paths = [out]
    chart = write_chart(report, directory / "kpi.png")
    if chart is not None:
        paths.append(chart)
    return paths


def write_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Latency percentiles per operation and the outcome counts, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = {k: v for k, v in report["timing"]["latency"].items() if v.get("n")}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    names = list(lat)
    for i, p in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        ax1.barh([j + i * 0.27 for j in range(len(names))], [lat[n][p] for n in names], height=0.27, label=p)
    ax1.set_yticks([j + 0.27 for j in range(len(names))], names)
    ax1.set_xlabel("milliseconds (wall clock)")
    ax1.set_title("latency percentiles")
    ax1.legend()
    keys = ["parcels_shelved", "pickups_completed", "wrong_parcels_caught_at_exit",
            "customer_wrong_slot_takes", "courier_wrong_slot_puts", "walk_offs", "strangers_refused",
            "face_entries", "face_spoofs_refused"]
    inv = report["invariants"]
    labels = keys + list(inv)
    values = [report["outcome"].get(k, 0) for k in keys] + [inv[k] for k in inv]
    colours = ["#4C72B0"] * len(keys) + ["#C44E52" if inv[k] else "#55A868" for k in inv]
    ax2.barh(labels, values, color=colours)
    ax2.set_title(f"outcome ({'OK' if report['ok'] else 'INVARIANT BROKEN'}); invariants green = 0")
    for y, v in enumerate(values):
        ax2.text(v, y, f" {v}", va="center", fontsize=8)
    fig.suptitle(f"shelf-sim {report['scenario'].get('name')} seed {report['scenario'].get('seed')}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human summary for the terminal."""
    o, t, inv = report["outcome"], report["timing"], report["invariants"]
    lat = t["latency"]

    def pct(name: str) -> str:
        x = lat.get(name) or {}
        return (f"p50 {x['p50_ms']} / p95 {x['p95_ms']} / p99 {x['p99_ms']} ms (n={x['n']})"
                if x.get("n") else "no samples")

    ov = t["station_overhead_per_parcel"]
    mistakes = (f"courier wrong slot {o.get('courier_wrong_slot_puts', 0)}, customer wrong slot "
                f"{o.get('customer_wrong_slot_takes', 0)}, walk-offs {o.get('walk_offs', 0)}")
    faults = (f"net {dict(t['network_faults_injected'])}; reboots {o.get('reboots', 0)}, broker restarts "
              f"{o.get('broker_restarts', 0)}, stuck sensors {o.get('stuck_sensors', 0)}, "
              f"dead LEDs {o.get('dead_leds', 0)}")
    overhead = f"p50 {ov['p50_ms']} / p99 {ov['p99_ms']} ms" if ov.get("n") else "-"
    lines = [
        (f"parcels shelved           {o.get('parcels_shelved', 0)} of {report['plan']['parcels']}"
         f"   ({t['parcels_shelved_per_courier_hour']} per courier-hour,"
         f" {t['parcels_shelved_per_courier_hour_not_waiting_for_room']} not counting waits for room)"),
        f"pickups completed         {o.get('pickups_completed', 0)} of {report['plan']['customers']} customers",
        f"station overhead/parcel   {overhead}",
        f"entry (code->door+lights) {pct('entry')}",
        f"held at the door          {pct('entry_held_for_colour')}",
        f"exit check                {pct('exit')}",
        (f"courier entry by face     {o.get('face_entries', 0)} of "
         f"{report['observed'].get('face_entry_tries', 0)} tries admitted, "
         f"{o.get('face_live_refused', 0)} live refused (PIN instead); impostors "
         f"{o.get('face_spoofs_refused', 0)} of {o.get('face_spoofs_tried', 0)} refused"),
        f"face entry (camera->door) {pct('face_entry')}",
        f"wrong parcels caught      {o.get('wrong_parcels_caught_at_exit', 0)}",
        (f"leave without parcels     {o.get('exit_leave_tries_with_foreign_parcel', 0)} tries with a "
         f"foreign parcel, {o.get('exit_leave_foreign_refused', 0)} refused; "
         f"{report['observed'].get('exit_leave_tries', 0)} tries in all, "
         f"{report['observed'].get('exit_leave_allowed', 0)} opened"),
        f"mistakes made             {mistakes}",
        (f"customer care             {report['observed'].get('customer_extensions', 0)} extended of "
         f"{o.get('customer_extend_asked', 0)} asked, {o.get('customer_reports_empty', 0)} slots "
         f"reported empty, {o.get('customer_refusals', 0)} parcels refused"),
        f"faults                    {faults}",
    ]
    pics = report.get("pictures")
    if pics and pics["with_picture"] + pics["without_picture"]:
        lines.append(f"room pictures             {pics['with_picture']} events with one, "
                     f"{pics['without_picture']} without {pics['no_picture_because'] or ''}")
    for k, v in inv.items():
        lines.append(f"{'OK  ' if v == 0 else 'FAIL'} {k:<38} {v}")
    lines.append(f"wall {t['wall_s']} s = {t['simulated_h']} simulated hours")
    done = min(o.get("parcels_shelved", 0), o.get("parcels_picked_up", 0))
    for who in ("station", "simulator"):
        proc = report.get(f"{who}_process") or {}
        if proc.get("cpu_s") is not None:
            per = f", {1000 * proc['cpu_s'] / done:.1f} ms a parcel" if done else ""
            where = f" on CPUs {','.join(map(str, proc['cpus']))}" if proc.get("cpus") else ""
            lines.append(f"CPU  {who} {proc['cpu_s']:.0f} s{per}{where}")
    return lines
