"""Drive a station that is already running (`shelf-sim run --station-url ...`).

The simulator then brings the room only: the virtual devices (firmware on simulated
hardware, connected to `--broker` with keys derived from `--secrets`) and the people. The
station must send its SMS to our inbox: add a webhook sender with url
http://127.0.0.1:<--sms-port>/sms to its [notify] senders. A broker restart is not played
(the broker is not ours); everything else is."""

from __future__ import annotations

import argparse
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .faults import FaultyNet
from .images import WaybillRenderer
from .kpi import Metrics
from .people import Env
from .runner import Devices, Simulation, check_station, slot_table
from .scenario import Plan, Scenario, build_plan
from .world import Room, SmsInbox


def run_remote(config: Any, scenario: Scenario, args: argparse.Namespace, *,
               progress: Callable[[str, int], None] | None = None,
               on_plan: Callable[[Plan], None] | None = None) -> dict[str, Any]:
    """Run `scenario` against the station at args.station_url; returns the report."""
    from station.config import load_secrets

    missing = [n for n in ("broker", "secrets", "kiosk_token", "operator_token") if not getattr(args, n)]
    if missing:
        raise SystemExit("--station-url needs " + ", ".join("--" + n.replace("_", "-") for n in missing))
    if not check_station(args.station_url):
        raise SystemExit(f"no station answers at {args.station_url}")
    secrets = load_secrets(args.secrets)
    metrics = Metrics()
    sms = SmsInbox(port=args.sms_port)
    nv = Path(tempfile.mkdtemp(prefix="shelf-sim-nv-"))
    nets = {d: FaultyNet(scenario.seed, d, scenario.faults, metrics.net, metrics.net_lock)
            for d in config.device_ids}
    devices = Devices(config, secrets, args.broker, nv, nets).start()
    try:
        shelves = [(s.device, s.rows, s.columns) for s in config.shelves if not getattr(s, "outbound", False)]
        plan = build_plan(scenario, shelves, (config.doors.entry, config.doors.exit))
        if on_plan:
            on_plan(plan)
        env = Env(args.station_url.rstrip("/"), args.kiosk_token, args.operator_token, args.kiosk_token,
                  Room(), sms, dict(devices.shelf_hals), slot_table(config), metrics, scenario.speed,
                  threading.Event(), render_waybills=None if args.no_frames else WaybillRenderer().frame)
        sim = Simulation(scenario, plan, env, devices=devices,
                         entry_door=devices.door_hals[config.doors.entry], progress=progress)
        return sim.run()
    finally:
        devices.stop()
        sms.stop()
