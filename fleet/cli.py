"""`fleet`: ingest every station's stream, serve the pages, trace, synthesise.

    fleet ingest --config fleet.toml [--secrets fleet-secrets.toml]
    fleet serve  --config fleet.toml
    fleet trace  WAYBILL|PARCEL_ID|COURIER_ID [--phone +86...] [--json]
    fleet stations | fleet alarms | fleet verify STATION
    fleet synth  --stations 10000 --days 5 [--events-per-day 2000]
    fleet init-db | fleet init-secrets PATH | fleet token [--role operator|admin]
    fleet courier add|enrol|disable|enable|assign|unassign|remove|forget-face|station-key|list ...
    fleet bundles run ... | fleet keys init|next|rotate|list|status|retire DIR
    (fleet/couriers.py, fleet/bundles.py and fleet/keys.py say more)

Every error a person can cause ends with one clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from fleet.config import (
    FleetConfig,
    dsn_with_password,
    generate_fleet_secrets_toml,
    load_fleet_config,
    load_fleet_secrets,
)
from station.config import ConfigError


class CliError(Exception):
    pass


def _config(args: argparse.Namespace) -> FleetConfig:
    cfg = load_fleet_config(getattr(args, "config", None))
    if getattr(args, "dsn", None):
        cfg = cfg.model_copy(update={"database": cfg.database.model_copy(update={"dsn": args.dsn})})
    return cfg


def _dsn(args: argparse.Namespace, cfg: FleetConfig) -> str:
    password = os.environ.get("PS_SECRET_DB_PASSWORD")
    if getattr(args, "secrets", None) or os.environ.get("PS_FLEET_SECRETS_FILE"):
        password = load_fleet_secrets(args.secrets).db_password
    return dsn_with_password(cfg.database.dsn, password)


def _connect(args: argparse.Namespace) -> psycopg.Connection:
    from fleet.store import connect

    cfg = _config(args)
    try:
        return connect(_dsn(args, cfg))
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot reach the fleet database: {str(exc).strip().splitlines()[0]}") from None


def cmd_ingest(args: argparse.Namespace) -> int:
    from fleet.ingest import Ingest

    cfg = _config(args)
    secrets = load_fleet_secrets(args.secrets) if args.secrets else _env_secrets()
    if args.client_id:
        cfg = cfg.model_copy(update={"broker": cfg.broker.model_copy(update={"client_id": args.client_id})})
    ingest = Ingest.from_config(cfg, secrets)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    try:
        ingest.start()
    except psycopg.OperationalError as exc:
        raise CliError(f"cannot reach the fleet database: {str(exc).strip().splitlines()[0]}") from None
    print(f"fleet ingest {ingest.client_id}: {ingest.subscription} on {cfg.broker.host}:{cfg.broker.port}",
          flush=True)
    if ingest.subscribed.wait(30):
        print("subscribed", flush=True)
    last = 0.0
    while not stop.wait(1.0):
        if time.monotonic() - last > 30:
            last = time.monotonic()
            s = ingest.stats
            logging.getLogger("fleet.ingest").info(
                "messages %d inserted %d duplicates %d forks %d rejected %d db errors %d",
                s.messages, s.inserted, s.duplicates, s.forks, s.rejected, s.db_errors)
    ingest.stop()
    return 0


def _env_secrets() -> Any:
    """Ingest needs no token key; read what the environment has."""
    from fleet.config import FleetSecrets

    return FleetSecrets(token_key=b"\0" * 32, broker_password=os.environ.get("PS_SECRET_BROKER_PASSWORD"),
                        db_password=os.environ.get("PS_SECRET_DB_PASSWORD"))


def cmd_serve(args: argparse.Namespace) -> int:
    from fleet.web import create_app
    from station.api.serve import ServeError, serve

    cfg = _config(args)
    secrets = load_fleet_secrets(args.secrets)
    app = create_app(_dsn(args, cfg), secrets, cfg)
    try:
        serve(app, args.host or cfg.serve.host, args.port or cfg.serve.port)
    except ServeError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from fleet.store import trace

    query = args.query
    if args.phone:
        secrets = load_fleet_secrets(args.secrets)
        if secrets.hash_key is None:
            raise CliError("searching by phone needs the stations' hash_key in the fleet secrets")
        from station.domain.phones import normalise_phone, phone_hash

        query = "r:" + phone_hash(normalise_phone(args.phone), secrets.hash_key)
    if not query:
        raise CliError("give a waybill, parcel id, courier id or --phone")
    with _connect(args) as conn:
        rows = trace(conn, query, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0 if rows else 1
    if not rows:
        print(f"nothing found for {query!r}", file=sys.stderr)
        return 1
    for r in rows:
        snap = f" snapshot {r['snapshot']}" if r["snapshot"] else ""
        print(f"{r['ts']}  {r['station']:<12} #{r['seq']:<8} {r['type']:<24} by {r['actor']:<12}"
              f" {r['subject']}{snap}")
    return 0


def cmd_stations(args: argparse.Namespace) -> int:
    from fleet.store import stations

    cfg = _config(args)
    with _connect(args) as conn:
        rows = stations(conn, cfg.serve.online_window_s)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for s in rows:
        gap = f" gap {s['gap'][0]}-{s['gap'][1]}" if s["gap"] else ""
        print(f"{s['station']:<14} {'online ' if s['online'] else 'offline'} seq {s['verified_seq']:<8}"
              f" lag {s['lag_s'] or 0:7.2f} s  alarms {s['open_alarms']}  parcels {s['occupancy']}"
              f"{gap} {s['fleet_alarms']}")
    return 0


def cmd_alarms(args: argparse.Namespace) -> int:
    from fleet.store import close_alarm, fleet_alarms

    with _connect(args) as conn:
        if args.close:
            if not args.station:
                raise CliError("--close needs --station")
            if not close_alarm(conn, args.station, args.close, args.by):
                raise CliError(f"no open {args.close} alarm for {args.station}")
            print(f"closed the {args.close} alarm of {args.station}")
            return 0
        rows = fleet_alarms(conn, args.station, open_only=not args.all)
    for a in rows:
        print(f"{a['opened_at']}  {a['station']:<14} {a['kind']:<8} seq {a['first_seq']}-{a['last_seq']}"
              f" x{a['count']}  {a['message']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from fleet.store import verify_station

    with _connect(args) as conn:
        ok, checked, problem = verify_station(conn, args.station)
    print(f"{args.station}: {'ok' if ok else 'BROKEN'}, {checked} events checked {problem}")
    return 0 if ok else 1


def cmd_init_db(args: argparse.Namespace) -> int:
    from fleet.schema import citus_distribute, create_schema

    with _connect(args) as conn:
        create_schema(conn)
        if args.citus:
            citus_distribute(conn)
    print("fleet schema ready")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from fleet.schema import create_schema
    from fleet.synth import bulk_load

    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done % 200 == 0:
            print(f"  {done} stations, {total} events, {time.monotonic() - start:.0f} s", flush=True)

    with _connect(args) as conn:
        create_schema(conn)
        total = bulk_load(conn, args.stations, args.days, args.events_per_day, args.seed,
                          args.prefix, progress)
        conn.execute("ANALYZE")
    took = time.monotonic() - start
    print(f"wrote {total} events for {args.stations} stations in {took:.1f} s ({total / took:,.0f}/s)")
    return 0


def cmd_init_secrets(args: argparse.Namespace) -> int:
    path = Path(args.path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{path}: exists; not overwriting") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_fleet_secrets_toml())
    print(f"wrote {path}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from fleet.web import make_token

    secrets = load_fleet_secrets(args.secrets)
    print(make_token(secrets.token_key, args.subject, args.ttl, role=args.role))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleet", description="the fleet: every station's log in PostgreSQL")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", help="fleet.toml (default: built-in defaults)")
        sp.add_argument("--secrets", help="fleet secrets file (or PS_FLEET_SECRETS_FILE / PS_SECRET_*)")
        sp.add_argument("--dsn", help="PostgreSQL connection string (overrides [database] dsn)")
        return sp

    ing = common(sub.add_parser("ingest", help="subscribe and write every station's events"))
    ing.add_argument("--client-id", help="this ingest's MQTT client id (stable across restarts)")
    ing.set_defaults(func=cmd_ingest)
    srv = common(sub.add_parser("serve", help="the fleet API and pages"))
    srv.add_argument("--host")
    srv.add_argument("--port", type=int)
    srv.set_defaults(func=cmd_serve)
    tr = common(sub.add_parser("trace", help="every event for a waybill, parcel or courier"))
    tr.add_argument("query", nargs="?", default="")
    tr.add_argument("--phone", help="search by the recipient's phone (needs hash_key)")
    tr.add_argument("--limit", type=int, default=2000)
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)
    st = common(sub.add_parser("stations", help="each station's state"))
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stations)
    al = common(sub.add_parser("alarms", help="the fleet's chain alarms (fork, restore)"))
    al.add_argument("--station")
    al.add_argument("--all", action="store_true")
    al.add_argument("--close", choices=("fork", "restore"), help="close a station's open alarm")
    al.add_argument("--by", default="operator", help="who closes it")
    al.set_defaults(func=cmd_alarms)
    ve = common(sub.add_parser("verify", help="re-walk a station's stored chain"))
    ve.add_argument("station")
    ve.set_defaults(func=cmd_verify)
    idb = common(sub.add_parser("init-db", help="create the schema"))
    idb.add_argument("--citus", action="store_true", help="also distribute every table by station_id")
    idb.set_defaults(func=cmd_init_db)
    sy = common(sub.add_parser("synth", help="write synthetic stations' streams with COPY"))
    sy.add_argument("--stations", type=int, default=100)
    sy.add_argument("--days", type=float, default=1.0)
    sy.add_argument("--events-per-day", type=int, default=2000)
    sy.add_argument("--seed", type=int, default=1)
    sy.add_argument("--prefix", default="st")
    sy.set_defaults(func=cmd_synth)
    sec = sub.add_parser("init-secrets", help="write a new fleet secrets file")
    sec.add_argument("path")
    sec.set_defaults(func=cmd_init_secrets)
    tok = common(sub.add_parser("token", help="an operator token for the fleet pages"))
    tok.add_argument("--subject", default="op-1")
    tok.add_argument("--role", choices=("operator", "admin"), default="operator",
                     help="operator reads; admin also enrols couriers' faces")
    tok.add_argument("--ttl", type=float, default=12 * 3600)
    tok.set_defaults(func=cmd_token)
    for name, what in (("courier", "the courier registry: add, enrol faces, disable, assign (fleet courier -h)"),
                       ("bundles", "the courier bundle publisher (fleet bundles -h)"),
                       ("keys", "the bundle signing keys: init, next, rotate, status (fleet keys -h)")):
        sub.add_parser(name, help=what, add_help=False)
    return p


# commands with an argument parser of their own, in their own module
_DELEGATED = {"courier": "fleet.couriers", "bundles": "fleet.bundles", "keys": "fleet.keys"}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        import importlib

        return int(importlib.import_module(_DELEGATED[argv[0]]).main(argv[1:]))
    args = build_parser().parse_args(argv)
    for name in ("stations", "days", "events_per_day", "limit"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            print(f"fleet: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    try:
        return int(args.func(args))
    except (CliError, ConfigError) as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"fleet: database: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
