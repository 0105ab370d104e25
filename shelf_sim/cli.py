"""`shelf-sim run`: a scenario against a virtual station, with a KPI report.

    shelf-sim run --config examples/station.toml --scenario examples/day.toml --speed 60 \
        --seed 7 --report var/sim

Without --station-url the simulator brings everything (--embedded): Mosquitto, the station,
the firmware of every shelf and door on simulated hardware, and the people. The station runs
as its own process (`station run`, --station-process, the default) so it does not share a
GIL with the room; --in-process keeps it in this process. The exit status is 1 when an
invariant breaks (wrong slot lit, parcel lost, door opened for nobody...)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from .kpi import summary_lines, write_report
from .scenario import Plan, ScenarioError, load_scenario


def cpu_list(text: str) -> set[int]:
    """A CPU list as `taskset -c` takes it: "1", "0,2", "0-3"; only CPUs this process may use."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi or lo)
            if first < 0 or last < first:
                raise ValueError
            cpus.update(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CPU list (such as 0, 0,2 or 0-3)") from None
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if not allowed:
        raise argparse.ArgumentTypeError("this system cannot pin a process to CPUs")
    if not cpus <= allowed:
        raise argparse.ArgumentTypeError(
            f"CPU {min(cpus - allowed)} is not available here "
            f"(this process may use {','.join(map(str, sorted(allowed)))})")
    return cpus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shelf-sim", description="parcel station simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and report KPIs")
    run.add_argument("--config", default="examples/station.toml", help="station TOML")
    run.add_argument("--scenario", default="examples/day.toml", help="scenario TOML")
    run.add_argument("--speed", type=float, help="time compression (overrides the scenario)")
    run.add_argument("--seed", type=int, help="random seed (overrides the scenario)")
    run.add_argument("--report", type=Path, help="directory for report.json and kpi.png")
    run.add_argument("--workdir", type=Path, help="embedded mode: keep the database etc. here")
    run.add_argument("--embedded", action="store_true",
                     help="own broker, station and devices (the default; see --in-process)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--station-process", dest="station_process", action="store_true", default=True,
                       help="embedded mode: the station as its own process, on a core of its own (default)")
    where.add_argument("--in-process", dest="station_process", action="store_false",
                       help="embedded mode: the station in this process too (one GIL for everything)")
    run.add_argument("--station-cpus", type=cpu_list, metavar="LIST",
                     help="embedded mode: the CPUs the station process may run on, as `taskset -c` "
                          "takes them (0 | 0,2 | 0-3); default any")
    run.add_argument("--sim-cpus", type=cpu_list, metavar="LIST",
                     help="embedded mode: the CPUs the simulator (people, firmware) and its broker run "
                          "on; with --station-cpus on others, the two never hand a core to each other")
    run.add_argument("--station-url", help="drive an existing station instead (see docs/simulator.md)")
    run.add_argument("--broker", help="with --station-url: mqtt://host:port for the virtual devices")
    run.add_argument("--secrets", help="with --station-url: the station's secrets TOML (device keys)")
    run.add_argument("--kiosk-token")
    run.add_argument("--operator-token")
    run.add_argument("--sms-port", type=int, default=0,
                     help="with --station-url: port of our SMS inbox; point the station's webhook here")
    run.add_argument("--no-frames", action="store_true", help="exit by waybill text only")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--json", action="store_true", help="print the report JSON to stdout")
    demo = sub.add_parser("demo", help="`make demo`: broker, station, simulated room, people and the "
                          "hands-on room page, until Ctrl-C / SIGTERM")
    demo.add_argument("--config", default="examples/station.toml", help="station TOML")
    demo.add_argument("--secrets", help="secrets TOML (default: DIR/secrets.toml, made on first run)")
    demo.add_argument("--dir", type=Path, default=Path("var/demo"), help="where the demo keeps its files")
    demo.add_argument("--port", type=int, default=8080, help="HTTP port (a free one if taken)")
    demo.add_argument("--speed", type=float, default=10.0, help="the virtual people's time compression")
    demo.add_argument("--no-people", action="store_true", help="the room and the station only")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `shelf-sim` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from station.config import ConfigError, load_config

    if args.command == "demo":
        from station.api.serve import ServeError

        from .demo import run_demo

        if not args.speed > 0:
            print("shelf-sim: error: --speed must be above 0", file=sys.stderr)
            return 2
        try:
            return run_demo(args.config, base=args.dir, port=args.port, speed=args.speed,
                            people=not args.no_people, secrets_path=args.secrets)
        except (ConfigError, ServeError) as exc:
            print(f"shelf-sim: error: {exc}", file=sys.stderr)
            return 2
    pinned = [opt for opt, v in (("--station-cpus", args.station_cpus), ("--sim-cpus", args.sim_cpus)) if v]
    if pinned and args.station_url:
        print(f"shelf-sim: error: {pinned[0]} pins what this run starts: not with --station-url", file=sys.stderr)
        return 2
    if args.station_cpus and not args.station_process:
        print("shelf-sim: error: --station-cpus needs the station as its own process (not --in-process)",
              file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario, speed=args.speed, seed=args.seed)
        config = load_config(args.config)
    except (ScenarioError, ConfigError) as exc:
        print(f"shelf-sim: error: {exc}", file=sys.stderr)
        return 2
    if args.station_url:
        from .remote import run_remote

        report = _with_progress(args.quiet, lambda progress, on_plan: run_remote(
            config, scenario, args, progress=progress, on_plan=on_plan))
    else:
        from .runner import run_embedded

        try:
            report = _with_progress(args.quiet, lambda progress, on_plan: run_embedded(
                config, scenario, workdir=args.workdir, frames=not args.no_frames, progress=progress,
                on_plan=on_plan, station_process=args.station_process, station_cpus=args.station_cpus,
                sim_cpus=args.sim_cpus))
        except ScenarioError as exc:  # e.g. a face scenario without the gathered test faces
            print(f"shelf-sim: error: {exc}", file=sys.stderr)
            return 2
    if args.report:
        for path in write_report(report, args.report):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        from rich.console import Console

        console = Console()
        console.print(f"[bold]shelf-sim[/] {scenario.name}  seed {scenario.seed}  speed {scenario.speed}")
        for line in summary_lines(report):
            style = "red" if line.startswith("FAIL") else "green" if line.startswith("OK") else ""
            console.print(f"[{style}]{line}[/]" if style else line, highlight=False)
    return 0 if report["ok"] else 1


def _with_progress(quiet: bool, run: Any) -> dict[str, Any]:
    """Run with a rich progress bar of parcels shelved and customers served."""
    if quiet:
        return run(None, None)  # type: ignore[no-any-return]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    lock = threading.Lock()
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False) as bar:
        tasks: dict[str, Any] = {}

        def on_plan(plan: Plan) -> None:
            tasks["parcel"] = bar.add_task("parcels", total=len(plan.parcels))
            tasks["customer"] = bar.add_task("customers", total=len(plan.customers))

        def progress(what: str, n: int) -> None:
            with lock:
                if what in tasks:
                    bar.advance(tasks[what], n)

        return run(progress, on_plan)  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
