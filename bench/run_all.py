"""`make bench`: every headline figure beside its baseline from the same run (issue 9).

    python -m bench.run_all            # full run (< 15 min on 2 cores), rewrites docs/
    python -m bench.run_all --quick    # a fast smoke of every bench (writes to var/bench-quick/)
    python -m bench.run_all --only retention   # measure one section again, keep the others' rows

Exits 1 when any section raised (its rows are not written; the document lists it under
"Benchmarks that did not run"), so a benchmark that rots fails `make bench`, and `make test`
(which runs the quick smoke) fails with it.

Writes docs/benchmarks.md (table: figure, ours, baseline, ratio, target, machine, date),
docs/benchmarks.json and docs/benchmarks-growth.png. Where a DESIGN §8 target is missed the
document says by how much and what dominates (a cProfile of the path)."""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import platform
import pstats
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# (section name, module in bench/) for benchmarks that need nothing from another section
PLAIN_SECTIONS: tuple[tuple[str, str], ...] = (("fleet", "bench_fleet"), ("retention", "bench_retention"),
                                               ("cpu", "bench_cpu"))


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mosquitto = ""
    try:
        from station.mosquitto import find_mosquitto

        done = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True, timeout=5,
                              check=False)
        mosquitto = (done.stdout.splitlines() or [""])[0]
    except (OSError, RuntimeError, subprocess.SubprocessError):
        mosquitto = "Mosquitto (version unknown)"
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "sqlite": __import__("sqlite3").sqlite_version,
            "mosquitto": mosquitto, "load_average_1min": os.getloadavg()[0]}


def _ratio(row: dict[str, Any]) -> float | None:
    ours, base = row.get("ours"), row.get("baseline")
    if ours is None or base in (None, 0) or not isinstance(base, (int, float)):
        return None
    if isinstance(ours, float) and math.isnan(ours):
        return None
    return ours / base


_TARGET = re.compile(r"p(\d+)\s*<\s*([\d.]+)\s*ms")


def verdict(row: dict[str, Any]) -> tuple[bool | None, str]:
    """(met?, how far off) for rows that carry a DESIGN §8 target."""
    ours = row.get("ours")
    if ours is None:
        return None, ""
    if "target_ratio_min" in row:
        r = _ratio(row)
        if r is None:
            return None, ""
        need = row["target_ratio_min"]
        return r >= need, "" if r >= need else f"ratio {r:.2f} vs >= {need} ({(need - r) / need * 100:.0f}% short)"
    limit = row.get("target_ms")
    if limit is None and isinstance(row.get("target"), str):
        m = _TARGET.search(row["target"])
        if m and f"p{m.group(1)}" in row["figure"]:
            limit = float(m.group(2))
    if limit is None:
        return None, ""
    ok = ours < limit
    return ok, "" if ok else f"{ours:.1f} ms vs < {limit:g} ms: over by {ours - limit:.1f} ms (x{ours / limit:.2f})"


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 0.1:
            return f"{v:.2f}"
        return f"{v:.4f}"
    return str(v)


def profile_shelving() -> str:
    """Where the scan -> lit path spends its time (cProfile, a short run)."""
    from bench import bench_shelving

    out = bench_shelving.run(quick=True, profile=True)
    return _trim_profile(out["profile"] or "")


def profile_entry() -> str:
    from bench import bench_entry

    prof = cProfile.Profile()
    prof.enable()
    bench_entry.run(quick=True)
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats("station|firmware", 15)
    return _trim_profile(s.getvalue())


def _trim_profile(text: str) -> str:
    keep = [ln for ln in text.splitlines() if ln.strip()][:30]
    return "\n".join(ln.replace(str(ROOT) + "/", "") for ln in keep)


def write_docs(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmarks.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    m = result["machine"]
    lines = [
        "# Benchmarks",
        "",
        ("Generated by `make bench` (`python -m bench.run_all`"
         + (" --quick" if result["quick"] else "") + "); do not edit by hand. "
         "Every figure is measured beside its baseline in the same run on the same machine "
         "(these machines are shared and noisy: compare ratios, not absolute values across runs). "
         "Targets are DESIGN §8's."),
        "",
        f"- **Date**: {result['date']} (run took {result['seconds']:.0f} s)",
        (f"- **Machine**: {m['cpu']}, {m['cpus']} CPUs, {m['os']}, Python {m['python']}, "
         f"SQLite {m['sqlite']}, {m['mosquitto'] or 'Mosquitto'}; 1-min load average "
         f"{m['load_average_1min']:.2f} at start, {m.get('load_average_1min_end', float('nan')):.2f} "
         "at the end (the machine is shared)"),
        "",
        "| figure | ours | baseline | ratio | unit | target | met | machine | date |",
        "|---|---:|---:|---:|---|---|---|---|---|",
    ]
    kept = [s["name"] for s in result["sections"] if s.get("date", result["date"]) != result["date"]]
    if kept:
        lines[6:6] = [f"- **Kept from earlier runs** (`--only` measured the rest): {', '.join(kept)}; "
                      "each of their rows names the machine and the date that measured it"]
    for sec in result["sections"]:
        sm = sec.get("machine", m)
        short_machine = f"{sm['cpus']} CPU {sm['cpu'][:28]}"
        day = sec.get("date", result["date"])[:10]
        for row in sec.get("rows", []):
            ok, _ = verdict(row)
            r = _ratio(row)
            lines.append("| " + " | ".join([
                row["figure"].replace("|", "/"), fmt(row.get("ours")), fmt(row.get("baseline")),
                "—" if r is None else f"{r:.3g}", row.get("unit", ""), row.get("target") or "",
                {True: "yes", False: "**no**", None: ""}[ok], short_machine, day]) + " |")
    errors = [s for s in result["sections"] if s.get("error")]
    if errors:
        lines += ["", "## Benchmarks that did not run", ""]
        for s in errors:
            lines.append(f"- `{s['name']}`: {s['error'].splitlines()[-1]}")
    lines += ["", "## Targets", ""]
    misses = []
    for sec in result["sections"]:
        for row in sec.get("rows", []):
            ok, how = verdict(row)
            if ok is False:
                misses.append((sec["name"], row, how))
            elif ok:
                lines.append(f"- met: {row['figure']} — {fmt(row['ours'])} {row.get('unit', '')} ({row.get('target')})")
    if misses:
        lines += ["", "### Missed", ""]
        for _name, row, how in misses:
            lines.append(f"- **{row['figure']}**: {how}.")
    for name, note in result.get("profiles", {}).items():
        lines += ["", f"### What dominates: {name}", "", note.get("summary", ""), "",
                  "```", note.get("profile", "").rstrip(), "```"]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in result.get("notes", [])]
    if result.get("chart"):
        lines += ["", "## Growth", "", f"![growth]({result['chart']})", ""]
        for name, curve in result.get("growth_curves", {}).items():
            pts = ", ".join(f"{int(k):,}: {fmt(v)}" for k, v in sorted(curve.items(), key=lambda kv: int(kv[0])))
            lines.append(f"- {name}: {pts}")
    (out_dir / "benchmarks.md").write_text("\n".join(lines) + "\n")


def keep_earlier(result: dict[str, Any], earlier_path: Path) -> dict[str, Any]:
    """`--only`: the sections measured now take their place among an earlier run's, whose rows,
    profiles, notes and chart stay as they were, each row still dated by the run that measured
    it (so a slow section can be measured again without running the hour-long rest)."""
    try:
        earlier = json.loads(earlier_path.read_text())
    except (OSError, ValueError):
        return result
    fresh = {s["name"]: s for s in result["sections"]}
    merged = []
    for sec in earlier.get("sections", []):
        if sec["name"] in fresh:
            merged.append(fresh.pop(sec["name"]))
        elif not sec.get("error"):
            merged.append({**sec, "date": sec.get("date", earlier["date"]),
                           "machine": sec.get("machine", earlier["machine"])})
    merged += fresh.values()
    out = {**result, "sections": merged,
           "profiles": {**earlier.get("profiles", {}), **result["profiles"]},
           "notes": _merged_notes(earlier.get("notes", []), result["notes"])}
    if "chart" not in result and "chart" in earlier:
        out["chart"], out["growth_curves"] = earlier["chart"], earlier.get("growth_curves", {})
    return out


def _merged_notes(earlier: list[str], fresh: list[str]) -> list[str]:
    """Each note leads with what it is about ("CPU per parcel: ..."): a fresh note replaces
    the earlier one about the same thing, so a note whose text changed is not kept twice."""
    about = lambda note: note.split(":", 1)[0]  # noqa: E731
    renewed = {about(n) for n in fresh}
    return list(dict.fromkeys([*(n for n in earlier if about(n) not in renewed), *fresh]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a fast smoke run (writes var/bench-quick/)")
    ap.add_argument("--out", type=Path, default=None, help="where the docs go (default docs/)")
    ap.add_argument("--skip", action="append", default=[], help="skip a section (mqtt, shelving, "
                    "entry, eventlog, faces, codes, growth, or a PLAIN_SECTIONS name)")
    ap.add_argument("--only", action="append", default=[],
                    help="measure only this section (repeatable); the other sections' rows are kept "
                         "from the benchmarks.json already in the output directory, with their own date")
    args = ap.parse_args(argv)
    known = {"mqtt", "shelving", "entry", "eventlog", "faces", "codes", "growth", *(n for n, _ in PLAIN_SECTIONS)}
    unknown = sorted(set(args.only) - known)
    if unknown:
        ap.error(f"--only {', '.join(unknown)}: no such section (known: {', '.join(sorted(known))})")
    quick = args.quick
    out_dir = args.out or (ROOT / "var" / "bench-quick" if quick else ROOT / "docs")
    started = time.perf_counter()
    result: dict[str, Any] = {"quick": quick, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                              "machine": machine(), "sections": [], "profiles": {}, "notes": []}

    def section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if name in args.skip or (args.only and name not in args.only):
            return {}
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            data = fn()
            err = None
        except Exception:  # noqa: BLE001 - one broken bench must not lose the others' figures
            data, err = {}, traceback.format_exc()
            print(err, file=sys.stderr)
        entry = {"name": name, "seconds": time.perf_counter() - t0, "rows": data.get("rows", []),
                 "data": {k: v for k, v in data.items() if k != "rows"},
                 "date": result["date"], "machine": result["machine"]}
        if err:
            entry["error"] = err
        result["sections"].append(entry)
        for row in entry["rows"]:
            r = _ratio(row)
            print(f"   {row['figure'][:96]:<96} {fmt(row.get('ours')):>10} {row.get('unit', ''):<9}"
                  f" baseline {fmt(row.get('baseline')):>10}  ratio {'—' if r is None else f'{r:.3g}'}",
                  flush=True)
        print(f"   ({entry['seconds']:.0f} s)", flush=True)
        return data

    def mqtt() -> dict[str, Any]:
        from bench import bench_mqtt_roundtrip

        d = bench_mqtt_roundtrip.run(200 if quick else 1000)
        raw = d["raw_paho"]
        rows = []
        for key, label in (("devicelink_fsync_nv", "signed command -> firmware (NV fsync) -> signed ack"),
                           ("devicelink_ram_nv", "signed command -> firmware (RAM NV) -> signed ack")):
            for p in ("p50", "p99"):
                rows.append({"figure": f"MQTT: DeviceLink {label}, {p} (baseline raw paho echo)",
                             "ours": d[key][f"{p}_ms"], "baseline": raw[f"{p}_ms"], "unit": "ms", "target": None})
        return {"rows": rows, **d}

    def plain(module: str) -> Callable[[], dict[str, Any]]:
        """A section whose module has `run(quick) -> {"rows": [...], ...}`."""
        def go() -> dict[str, Any]:
            import importlib

            return importlib.import_module(f"bench.{module}").run(quick=quick)
        return go

    from bench import bench_entry, bench_eventlog, bench_growth, bench_shelving

    section("mqtt", mqtt)
    shelving = section("shelving", lambda: bench_shelving.run(quick=quick))
    entry = section("entry", lambda: bench_entry.run(quick=quick))
    eventlog = section("eventlog", lambda: bench_eventlog.run(quick=quick))
    section("faces", plain("bench_faces"))
    section("codes", plain("bench_codes"))
    growth = section("growth", lambda: bench_growth.run(
        quick=quick, sessions=entry.get("growth_sessions"), log=(eventlog.get("big") or {}).get("growth")))
    # Sections of their own (a module bench/<module>.py with run(quick) -> {"rows": [...]}):
    # add a line here; a missing or raising module fails the run.
    for name, module in PLAIN_SECTIONS:
        section(name, plain(module))

    # what dominates where a target is missed
    missed = {s["name"] for s in result["sections"] for row in s["rows"] if verdict(row)[0] is False}
    if shelving and "shelving" not in args.skip:
        # always: the scan path is the one closest to its target
        result["profiles"]["shelving (scan -> lit)"] = {
            "summary": ("Target missed. " if "shelving" in missed else "Target met; for reference. ")
            + "cProfile of a short run of the scan path (cumulative time): waiting for the shelf's "
              "signed ack (the firmware writes its NV record per command) and SQLite (the durable "
              "commit of parcel.scanned plus the claim queries behind the desired lights) are the "
              "two big items.",
            "profile": profile_shelving()}
        mq = next((sec for sec in result["sections"] if sec["name"] == "mqtt"), None)
        if mq and mq["data"].get("devicelink_fsync_nv"):
            rt = mq["data"]["devicelink_fsync_nv"]
            result["profiles"]["shelving (scan -> lit)"]["summary"] += (
                f" In the same run the bare signed command -> firmware (NV fsync) -> ack round trip "
                f"alone took p50 {rt['p50_ms']:.1f} ms / p99 {rt['p99_ms']:.1f} ms and the raw paho "
                f"echo p99 {mq['data']['raw_paho']['p99_ms']:.1f} ms; the p99 tail moves with the "
                f"machine's load (1-min load average {result['machine']['load_average_1min']:.1f} at "
                f"the start of this run on {result['machine']['cpus']} CPUs).")
    if "entry" in missed:
        result["profiles"]["entry"] = {"summary": "cProfile of a short entry run (station and firmware frames).",
                                       "profile": profile_entry()}
    faces = next((s for s in result["sections"] if s["name"] == "faces"), None)
    if faces and "faces" in missed and faces["data"].get("profile_1000"):
        p = faces["data"]["profile_1000"]
        cpu = next((r for r in faces["rows"] if "CPU time p95" in r["figure"]), None)
        load = faces["data"].get("load_average_1min", {})
        summary = ("From bench_faces' own split of the p50 at 1,000 templates (ms): HOG detection and "
                   "the landmark/alignment/encoding step dominate; matching is a matrix product "
                   "(well under 1 ms).")
        if cpu is not None:
            shared = (f"1-min load average {load.get('before', float('nan')):.1f} before and "
                      f"{load.get('after', float('nan')):.1f} after, on {load.get('cpus')} CPUs")
            summary += f" The same path's CPU time p95 is {cpu['ours']:.0f} ms (the baseline's {cpu['baseline']:.0f} ms)"
            if cpu["ours"] < 300:
                summary += f": the wall-clock p95 over 300 ms is the core being shared ({shared})"
            else:
                summary += f": the path itself is over the target even in CPU time ({shared})"
            wall = next((r for r in faces["rows"] if "1,000 templates (detect+encode+match), p95" in r["figure"]), None)
            if wall is not None and wall.get("baseline"):
                summary += (f"; face_recognition's own path took {wall['baseline']:.0f} ms p95 in the "
                            f"same run (ours x{wall['ours'] / wall['baseline']:.2f}).")
            else:
                summary += "."
        result["profiles"]["faces"] = {"summary": summary, "profile": json.dumps(p, indent=1)}
    if shelving:
        result["notes"].append(
            f"Shelving: {shelving.get('n')} parcels by one guided courier on the example room (slot "
            "capacity raised to 4), Mosquitto on loopback, shelf firmware on the in-memory HAL. "
            "'placement event -> code issued' runs from the placement event entering "
            "StationCore.on_device_event to the commit of parcel.shelved + notify.queued.")
    if entry:
        result["notes"].append(
            "Entry: Pickup.enter_with_code returning with the entry door's signed unlock acked and "
            "every lights command acked; growth keeps 0..49 other sessions open.")
    result["notes"].append("Baselines for the broker figures are bench.bench_mqtt_roundtrip's raw paho "
                           "publish -> echo -> publish QoS 1 round trip on the same broker, same run.")
    result["notes"].append("CPU per parcel: the station process's user + system CPU seconds (/proc) over "
                           "the week slice, start-up excluded. Its profile (py-spy --gil, top hot spots "
                           "before and after the issue 18.3 work, per-thread CPU) and what is left to "
                           "halve it are in docs/simulator.md, 'CPU per parcel'; "
                           "`python -m bench.bench_cpu --parcels 1000 --py-spy out.raw` takes a new one. "
                           "The 'split' rows run the same slice on the week's rig (ADR 0166): the station "
                           "on one CPU, the simulator and its broker on the other.")
    if growth.get("curves"):
        from bench.bench_growth import chart

        png = out_dir / "benchmarks-growth.png"
        chart(growth["curves"], png, f"Growth ({result['date']}, {result['machine']['cpus']} CPUs)")
        result["chart"] = png.name
        result["growth_curves"] = growth["curves"]
    result["seconds"] = time.perf_counter() - started
    result["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    if args.only:
        result = keep_earlier(result, out_dir / "benchmarks.json")
    write_docs(result, out_dir)
    print(f"wrote {out_dir / 'benchmarks.md'} in {result['seconds']:.0f} s")
    failed = [s["name"] for s in result["sections"] if s.get("error")]
    if failed:
        print(f"benchmarks that raised: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
