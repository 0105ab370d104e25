"""`station`: run the edge service, and the operator's commands beside it.

Every error a person can cause (bad config, missing secrets, wrong arguments, a database
that is not ours) ends with one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from station.config import ConfigError, demo_only_settings, load_config, load_secrets, write_new_secrets
from station.store.db import StoreError

out = Console()
err = Console(stderr=True)
DEFAULT_CONFIG = "examples/station.toml"


class CliError(Exception):
    pass


def _config(args: argparse.Namespace) -> Any:
    return load_config(args.config)


def _secrets(args: argparse.Namespace) -> Any:
    return load_secrets(getattr(args, "secrets", None))


def _db_path(args: argparse.Namespace) -> Path:
    if getattr(args, "db", None):
        path = Path(args.db)
    else:
        path = Path(_config(args).station.database)
    if not path.exists():
        raise CliError(f"{path}: no such database")
    return path


def _open_db(args: argparse.Namespace) -> sqlite3.Connection:
    path = _db_path(args)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        conn.execute("SELECT 1 FROM events LIMIT 1")
    except sqlite3.DatabaseError as exc:
        raise CliError(f"{path}: not a station database ({exc})") from None
    return conn


# --- run ---------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from station.api.serve import ServeError, serve
    from station.bootstrap import build_station

    config = _config(args)
    demo_only = demo_only_settings(config)
    if demo_only:  # ADR 0081: a code in the service log opens the door
        raise CliError(f"{args.config}: {', '.join(demo_only)} = true writes pickup and one-time "
                       "codes into the log; it is for the demo (`make demo`) only, remove it to run the station")
    secrets = _secrets(args)
    if args.mqtt_port:
        config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"port": args.mqtt_port})})
    _setup_logging(args.log_json)
    station = build_station(config, secrets)
    station.start()
    host = args.host or config.api.host
    port = args.port if args.port is not None else config.api.port
    out.print(f"[bold green]station {config.station.id}[/] API on http://{host}:{port}/  "
              f"(broker {config.mqtt.host}:{config.mqtt.port})")
    # systemd's SIGTERM unwinds through the `finally` like Ctrl-C: the station stops its
    # link and forwarder before the process ends, and the stop is a clean exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(station.app, host, port)
    except ServeError as exc:
        raise CliError(str(exc)) from None
    finally:
        station.stop()
    return 0


def _setup_logging(as_json: bool) -> None:
    level = os.environ.get("PS_LOG_LEVEL", "INFO")
    # httpx (the camera grabber) logs every request URL at INFO; a key in a camera URL must not
    # reach logs
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if as_json:
        class JsonFormatter(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                return json.dumps({"ts": self.formatTime(record), "level": record.levelname,
                                   "logger": record.name, "msg": record.getMessage()})
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_init_secrets(args: argparse.Namespace) -> int:
    try:
        path = write_new_secrets(args.path)
    except FileExistsError:
        raise CliError(f"{args.path}: exists; refusing to overwrite station secrets") from None
    out.print(f"wrote {path} (mode 600)")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from station.api.auth import TokenError, make_token

    secrets = _secrets(args)
    try:
        token = make_token(secrets.token_key, args.role, args.subject, args.days * 86400)
    except TokenError as exc:
        raise CliError(str(exc)) from None
    print(token)
    return 0


# --- log -----------------------------------------------------------------------------------


def _archive_dir(args: argparse.Namespace) -> Path | None:
    """--archive, else (for the configured database, not one named by --db) the configured
    archive directory when retention has used one."""
    if getattr(args, "archive", None):
        path = Path(args.archive)
        if not path.is_dir():
            raise CliError(f"{path}: no such archive directory")
        return path
    if getattr(args, "db", None):
        return None
    try:
        configured = Path(_config(args).retention.archive_dir)
    except ConfigError:
        return None
    return configured if configured.is_dir() else None


def cmd_log_verify(args: argparse.Namespace) -> int:
    from station.store.archive import verify_log

    conn = _open_db(args)
    archive = _archive_dir(args)
    result = verify_log(conn, archive)
    for note in result.notes:
        out.print(f"note: {note}", highlight=False)
    if result.ok:
        where = ""
        if result.checkpoint_seq:
            where = (f" from the checkpoint at seq {result.checkpoint_seq}" if archive is None else
                     f", and {result.archived_checked} archived events in {result.segments} segments "
                     f"up to the checkpoint at seq {result.checkpoint_seq}")
        out.print(f"[green]chain verified[/]: {result.checked} events{where}", highlight=False)
        if result.checkpoint_seq and archive is None:
            out.print(f"events 1..{result.checkpoint_seq} are archived: give --archive DIR to verify them too")
        return 0
    err.print(f"[red]chain broken at seq {result.first_bad_seq}[/]: {result.problem} "
              f"({result.checked} events verified before it)", highlight=False)
    return 1


def _print_events(events: Any) -> None:
    for e in events:
        snap = f" snapshot={e.snapshot[:12]}" if e.snapshot else ""
        print(f"{e.seq:>8} {e.ts} {e.type:<28} {e.actor:<14} {e.subject} "
              f"{json.dumps(e.data, ensure_ascii=False)}{snap}")


def cmd_log_tail(args: argparse.Namespace) -> int:
    from station.store.eventlog import iter_events

    conn = _open_db(args)
    last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    _print_events(iter_events(conn, after_seq=max(0, last - args.n)))
    while args.follow:
        time.sleep(0.5)
        rows = list(iter_events(conn, after_seq=last))
        _print_events(rows)
        if rows:
            last = rows[-1].seq
    return 0


def cmd_log_export(args: argparse.Namespace) -> int:
    from station.store.eventlog import iter_events

    conn = _open_db(args)
    types = args.type.split(",") if args.type else None
    events = iter_events(conn, since=args.since, until=args.until, types=types)
    stream = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        if args.format == "jsonl":
            for e in events:
                stream.write(json.dumps(e.as_dict(), ensure_ascii=False) + "\n")
        else:
            writer = csv.writer(stream)
            writer.writerow(["seq", "ts", "type", "actor", "subject", "data", "snapshot", "prev_hash", "hash"])
            for e in events:
                writer.writerow([e.seq, e.ts, e.type, e.actor, e.subject,
                                 json.dumps(e.data, ensure_ascii=False), e.snapshot or "", e.prev_hash, e.hash])
    finally:
        if args.out:
            stream.close()
    return 0


def cmd_log_replay(args: argparse.Namespace) -> int:
    from station.store.replay import replay_into

    conn = _open_db(args)
    until_seq = until_time = None
    if args.until is not None:
        if args.until.isdigit():
            until_seq = int(args.until)
        else:
            until_time = args.until
    try:
        last = replay_into(conn, args.out, until_seq=until_seq, until_time=until_time,
                           archive_dir=_archive_dir(args))
    except FileExistsError as exc:
        raise CliError(str(exc)) from None
    except FileNotFoundError as exc:
        Path(args.out).unlink(missing_ok=True)
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(f"--until: not a sequence number or an ISO time: {exc}") from None
    out.print(f"replayed events 1..{last} into {args.out}")
    return 0


def cmd_log_prune(args: argparse.Namespace) -> int:
    """Run retention now (the station does it every `[retention] interval_s` by itself)."""
    from station.store.db import Store
    from station.store.retention import Retention

    config = _config(args)
    r = config.retention
    if not r.enabled:
        raise CliError(f"{args.config}: [retention] enabled = false: nothing is pruned")
    store = Store(_db_path(args)).open()
    try:
        run = Retention(store, r.archive_dir, keep_days=r.keep_days, segment_events=r.segment_events,
                        batch_events=r.batch_events, upstream=config.upstream.enabled).run(time.time())
    finally:
        store.close()
    held = " (held back by what the fleet has acknowledged)" if run.held_by_upstream else ""
    out.print(f"archived {run.archived} events in {run.segments} segments to {r.archive_dir}; "
              f"the live log starts after seq {run.through_seq}{held}", highlight=False)
    return 0


# --- backup and restore ----------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace) -> int:
    from station.store.backup import BackupError, take_backup

    db = _db_path(args)
    station_id, archive = "", None
    try:
        config = _config(args)
        station_id = config.station.id
        if args.archive:
            archive = Path(config.retention.archive_dir)
    except ConfigError:
        if args.archive:
            raise
    try:
        info = take_backup(db, Path(args.dir), archive_dir=archive, station_id=station_id)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    out.print(f"backup of {db} in {info.directory}: events up to seq {info.last_seq}, "
              f"{info.files} files, {info.bytes / 1e6:.1f} MB; manifest.json holds their hashes",
              highlight=False)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from station.store.backup import BackupError, restore_backup
    from station.store.db import Store
    from station.upstream import current_epoch, declare_restore

    if args.db:
        db = Path(args.db)
        archive = None
    else:
        config = _config(args)
        db = Path(config.station.database)
        archive = Path(config.retention.archive_dir)
    previous_epoch = 0
    if db.exists():
        try:
            old = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                previous_epoch = current_epoch(old)
            finally:
                old.close()
        except sqlite3.DatabaseError:
            previous_epoch = 0
    try:
        info = restore_backup(Path(args.dir), db, archive_dir=archive)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    store = Store(db).open()
    try:
        epoch = declare_restore(store, source=str(args.dir), previous_epoch=previous_epoch)
    finally:
        store.close()
    aside = f"; the database it replaced is {info.kept_aside}" if info.kept_aside else ""
    out.print(f"restored {args.dir} into {db} (events up to seq {info.last_seq}, upstream epoch "
              f"{epoch}){aside}", highlight=False)
    return 0


# --- couriers --------------------------------------------------------------------------------


def _core(args: argparse.Namespace) -> Any:
    """Flows over the database without devices: for registry commands only."""
    from station.flows.context import Ctx
    from station.flows.core import StationCore
    from station.store.db import Store

    config = _config(args)
    secrets = _secrets(args)

    class NoDevices:
        def replace_lights(self, *a: Any) -> Any:
            raise CliError("this command does not drive devices")

        unlock = replace_lights

        def is_online(self, device: str) -> bool:
            return False

    class NoOutbox:
        def enqueue(self, *a: Any) -> str:
            raise CliError("this command sends no messages")

    store = Store(config.station.database).open()
    return StationCore(Ctx(config, secrets, store, NoDevices(), NoOutbox()))


def _ask_pin(args: argparse.Namespace) -> str:
    pin = args.pin or os.environ.get("PS_COURIER_PIN")
    if not pin:
        import getpass

        pin = getpass.getpass("PIN (4-8 digits): ")
    return str(pin)


def cmd_courier(args: argparse.Namespace) -> int:
    from station.flows.errors import FlowError

    core = _core(args)
    try:
        if args.courier_cmd == "add":
            pin = _ask_pin(args)
            c = core.couriers.add(args.courier_id, args.carrier, args.name, pin, actor="cli")
            out.print(f"added courier {c.id} ({c.carrier}, {c.name})")
        elif args.courier_cmd == "pin":
            core.couriers.change_pin(args.courier_id, _ask_pin(args), actor="cli")
            out.print(f"courier {args.courier_id}: new PIN set")
        elif args.courier_cmd == "list":
            table = Table("id", "carrier", "name", "from", "active", "face", "PIN")
            for c in core.couriers.all():
                # ADR 0082: a PIN set before sealing is in the log in clear; it must change
                table.add_row(c.id, c.carrier, c.name, c.source, "yes" if c.active else "no",
                              "yes" if c.has_face else "no",
                              "EXPOSED: change it (station courier pin)" if c.pin_exposed else "sealed")
            out.print(table)
        elif args.courier_cmd in ("disable", "enable"):
            core.couriers.set_active(args.courier_id, args.courier_cmd == "enable", actor="cli")
            out.print(f"courier {args.courier_id} {args.courier_cmd}d")
        elif args.courier_cmd == "remove":
            core.couriers.remove(args.courier_id, actor="cli")
            out.print(f"courier {args.courier_id} removed with their face templates")
    except FlowError as exc:
        raise CliError(exc.message) from None
    finally:
        core.ctx.store.close()
    return 0


# --- operators and kiosk screens (#20.1, ADR 0130) ------------------------------------------


def _ask_password(args: argparse.Namespace) -> str:
    """Never from the command line (it would sit in the shell history and in `ps`)."""
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\n")
    password = os.environ.get("PS_OPERATOR_PASSWORD")
    if not password:
        import getpass

        password = getpass.getpass("password (10 characters or more): ")
    return password


def cmd_operator(args: argparse.Namespace) -> int:
    from station.flows.errors import FlowError

    core = _core(args)
    accounts = core.accounts
    try:
        if args.operator_cmd == "add":
            o = accounts.add(args.operator_id, args.role, _ask_password(args), actor="cli")
            out.print(f"added operator {o.id} ({o.role})")
        elif args.operator_cmd == "passwd":
            accounts.change_password(args.operator_id, _ask_password(args), actor="cli")
            out.print(f"operator {args.operator_id}: new password set; their sessions are ended")
        elif args.operator_cmd == "list":
            table = Table("id", "role", "active", "open sessions")
            for o in accounts.all():
                table.add_row(o.id, o.role, "yes" if o.active else "no", str(o.sessions))
            out.print(table)
        elif args.operator_cmd in ("disable", "enable"):
            accounts.set_active(args.operator_id, args.operator_cmd == "enable", actor="cli")
            out.print(f"operator {args.operator_id} {args.operator_cmd}d")
        elif args.operator_cmd == "remove":
            accounts.remove(args.operator_id, actor="cli")
            out.print(f"operator {args.operator_id} removed; their sessions are ended")
        elif args.operator_cmd == "revoke":
            if args.session:
                n = accounts.revoke(args.session, actor="cli")
            else:
                n = accounts.revoke_all(actor="cli", operator_id=args.operator)
            out.print(f"{n} session(s) ended")
        elif args.operator_cmd == "sessions":
            table = Table("session", "operator", "role", "started", "last seen")
            for row in accounts.sessions():
                table.add_row(row["handle"], row["operator_id"], row["role"], _when(row["started_at"]),
                              _when(row["last_seen"]))
            out.print(table)
    except FlowError as exc:
        raise CliError(exc.message) from None
    finally:
        core.ctx.store.close()
    return 0


def _when(ts: float | None) -> str:
    import datetime as dt

    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_kiosk(args: argparse.Namespace) -> int:
    from station.flows.errors import FlowError

    core = _core(args)
    accounts = core.accounts
    try:
        if args.kiosk_cmd == "pair":
            code = accounts.create_pairing(args.device_id, actor="cli")
            ttl = int(core.ctx.config.operators.pairing_ttl_s)
            # the code is the one secret printed: on the terminal that asked, once, never logged
            print(f"pairing code for {args.device_id}: {code} (type it on the kiosk screen within {ttl} s)")
        elif args.kiosk_cmd == "list":
            table = Table("kiosk", "paired", "revoked", "active")
            for k in accounts.kiosks():
                table.add_row(k["id"], _when(k["paired_at"]), _when(k["revoked_at"]), "yes" if k["active"] else "no")
            out.print(table)
        elif args.kiosk_cmd == "revoke":
            accounts.revoke_kiosk(args.device_id, actor="cli")
            out.print(f"kiosk {args.device_id}: credential revoked; pair it again to use it")
    except FlowError as exc:
        raise CliError(exc.message) from None
    finally:
        core.ctx.store.close()
    return 0


def _ask_phone(args: argparse.Namespace) -> str:
    """Typed in, never an argument (the shell history and `ps` would keep the number in
    clear); hashed at once by the flow (ADR 0154)."""
    if args.phone_stdin:
        return sys.stdin.readline().strip()
    return input("recipient's phone number: ").strip()


def cmd_reachable(args: argparse.Namespace) -> int:
    """Recipients who need a slot within reach: set, clear, list (#19.5, ADR 0154)."""
    from station.domain.errors import DomainError
    from station.flows.errors import FlowError

    core = _core(args)
    reachable = core.reachable
    try:
        if args.reachable_cmd == "list":
            rows = core.ctx.config.care.reachable_rows
            out.print(f"reachable rows: {rows[0]}-{rows[1]} ({len(reachable.slots)} slots)" if rows
                      else "reachable rows: not configured ([care] reachable_rows); flags wait for it",
                      highlight=False)
            table = Table("recipient", "set by", "carrier", "actor", "since")
            for f in reachable.all():
                table.add_row(f["phone_masked"], f["source"], f["carrier"] or "-", f["actor"],
                              _when(f["set_at"]))
            out.print(table)
        else:
            change = reachable.by_operator(_ask_phone(args), args.reachable_cmd == "set", actor="cli")
            what = "needs a reachable slot" if change.needs else "has no reachable-slot flag"
            out.print(f"{change.phone_masked} {what}{'' if change.changed else ' (unchanged)'}",
                      highlight=False)
    except (FlowError, DomainError) as exc:
        raise CliError(exc.message) from None
    finally:
        core.ctx.store.close()
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    """The station's bundle public key (what the fleet seals couriers to), and the last bundle."""
    from station.bundles import current_version, key_id, load_trusted, public_hex, station_bundle_key

    secrets = _secrets(args)
    if args.bundle_cmd == "pubkey":
        print(public_hex(station_bundle_key(secrets.encryption_key).public_key()))
        return 0
    core = _core(args)
    try:
        out.print(f"last courier bundle applied: version {current_version(core.ctx.store) or 'none'}")
        row = core.ctx.store.query_one("SELECT data FROM events WHERE type = 'courier.bundle.applied'"
                                       " ORDER BY seq DESC LIMIT 1")
        if row is not None:
            out.print(f"  signed by fleet key {json.loads(row['data']).get('kid') or '(not named)'}")
        trusted = [key_id(load_trusted(h)) for h in core.ctx.config.bundles.trusted]
        out.print(f"trusted fleet keys: {', '.join(trusted) or 'none ([bundles] is off)'}")
    finally:
        core.ctx.store.close()
    return 0


# --- demo ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="station", description="Parcel station edge controller")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", default=os.environ.get("PS_CONFIG", DEFAULT_CONFIG),
                        help="station TOML (default: %(default)s)")
        sp.add_argument("--secrets", help="secrets file (default: $PS_SECRETS_FILE)")

    run = sub.add_parser("run", help="run the edge service")
    with_config(run)
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--mqtt-port", type=int, help="override [mqtt].port")
    run.add_argument("--log-json", action="store_true", help="log as JSON lines")
    run.set_defaults(fn=cmd_run)

    sec = sub.add_parser("init-secrets", help="write a new secrets file")
    sec.add_argument("path")
    sec.set_defaults(fn=cmd_init_secrets)

    tok = sub.add_parser("token", help="create an API token")
    tok_sub = tok.add_subparsers(dest="token_cmd", required=True)
    create = tok_sub.add_parser("create")
    create.add_argument("--role", required=True, choices=["operator", "courier", "kiosk"])
    create.add_argument("--subject", required=True)
    create.add_argument("--days", type=float, default=365)
    create.add_argument("--secrets")
    create.set_defaults(fn=cmd_token)

    log_p = sub.add_parser("log", help="the event log: verify, tail, export, replay")
    log_sub = log_p.add_subparsers(dest="log_cmd", required=True)

    def with_db(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--db", help="database file (default: the configured one)")
        sp.add_argument("--config", default=os.environ.get("PS_CONFIG", DEFAULT_CONFIG))

    v = log_sub.add_parser("verify", help="walk the hash chain (live, and the archive with --archive)")
    with_db(v)
    v.add_argument("--archive", help="the archive directory (default: [retention] archive_dir)")
    v.set_defaults(fn=cmd_log_verify)
    t = log_sub.add_parser("tail", help="the last events")
    with_db(t)
    t.add_argument("-n", type=int, default=20)
    t.add_argument("-f", "--follow", action="store_true")
    t.set_defaults(fn=cmd_log_tail)
    e = log_sub.add_parser("export", help="export events")
    with_db(e)
    e.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    e.add_argument("--since")
    e.add_argument("--until")
    e.add_argument("--type", help="types, comma separated; a* matches a prefix")
    e.add_argument("--out")
    e.set_defaults(fn=cmd_log_export)
    r = log_sub.add_parser("replay", help="rebuild projections into a new database")
    with_db(r)
    r.add_argument("--until", help="a sequence number or an ISO time")
    r.add_argument("--out", required=True)
    r.add_argument("--archive", help="the archive directory (default: [retention] archive_dir)")
    r.set_defaults(fn=cmd_log_replay)

    pr = log_sub.add_parser("prune", help="move events older than [retention] keep_days to the archive now")
    with_db(pr)
    pr.set_defaults(fn=cmd_log_prune)

    bk = sub.add_parser("backup", help="an online, consistent copy of the database, .devseq and a manifest")
    with_db(bk)
    bk.add_argument("dir", help="a new (or empty) directory")
    bk.add_argument("--archive", action="store_true", help="copy the archive segments too")
    bk.set_defaults(fn=cmd_backup)
    rs = sub.add_parser("restore", help="check a backup and install it (the station must be stopped)")
    with_db(rs)
    rs.add_argument("dir", help="a directory written by `station backup`")
    rs.set_defaults(fn=cmd_restore)

    c = sub.add_parser("courier", help="the courier registry")
    c_sub = c.add_subparsers(dest="courier_cmd", required=True)
    add = c_sub.add_parser("add")
    with_config(add)
    add.add_argument("courier_id")
    add.add_argument("--carrier", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--pin", help="4-8 digits (or $PS_COURIER_PIN, or asked)")
    add.set_defaults(fn=cmd_courier)
    pin = c_sub.add_parser("pin", help="give a courier a new PIN")
    with_config(pin)
    pin.add_argument("courier_id")
    pin.add_argument("--pin", help="4-8 digits (or $PS_COURIER_PIN, or asked)")
    pin.set_defaults(fn=cmd_courier)
    ls = c_sub.add_parser("list")
    with_config(ls)
    ls.set_defaults(fn=cmd_courier)
    for name in ("disable", "enable", "remove"):
        sp = c_sub.add_parser(name)
        with_config(sp)
        sp.add_argument("courier_id")
        sp.set_defaults(fn=cmd_courier)

    o = sub.add_parser("operator", help="operator accounts and their sessions")
    o_sub = o.add_subparsers(dest="operator_cmd", required=True)
    for name, helptext in (("add", "a new operator"), ("passwd", "a new password (ends their sessions)")):
        sp = o_sub.add_parser(name, help=helptext)
        with_config(sp)
        sp.add_argument("operator_id")
        if name == "add":
            sp.add_argument("--role", choices=["viewer", "admin"], required=True)
        sp.add_argument("--password-stdin", action="store_true",
                        help="read the password from stdin (else $PS_OPERATOR_PASSWORD, else asked)")
        sp.set_defaults(fn=cmd_operator)
    for name in ("list", "sessions"):
        sp = o_sub.add_parser(name)
        with_config(sp)
        sp.set_defaults(fn=cmd_operator)
    for name in ("disable", "enable", "remove"):
        sp = o_sub.add_parser(name)
        with_config(sp)
        sp.add_argument("operator_id")
        sp.set_defaults(fn=cmd_operator)
    sp = o_sub.add_parser("revoke", help="end one session (--session), an operator's (--operator) or all")
    with_config(sp)
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--session", help="a session handle (station operator sessions)")
    group.add_argument("--operator", help="every session of this operator")
    sp.set_defaults(fn=cmd_operator)

    b = sub.add_parser("bundle", help="courier bundles from the fleet")
    b_sub = b.add_subparsers(dest="bundle_cmd", required=True)
    for name, helptext in (("pubkey", "the key the fleet seals this station's bundles to"),
                           ("status", "the last bundle applied")):
        sp = b_sub.add_parser(name, help=helptext)
        with_config(sp)
        sp.set_defaults(fn=cmd_bundle)

    rc = sub.add_parser("reachable", help="recipients who need a slot within reach (by number, hashed)")
    rc_sub = rc.add_subparsers(dest="reachable_cmd", required=True)
    for name, helptext in (("set", "flag a recipient: their parcels go to the reachable rows"),
                           ("clear", "remove a recipient's flag")):
        sp = rc_sub.add_parser(name, help=helptext)
        with_config(sp)
        sp.add_argument("--phone-stdin", action="store_true",
                        help="read the number from stdin (else it is asked; never an argument)")
        sp.set_defaults(fn=cmd_reachable)
    sp = rc_sub.add_parser("list", help="the flagged recipients, masked")
    with_config(sp)
    sp.set_defaults(fn=cmd_reachable)

    k = sub.add_parser("kiosk", help="pair and revoke kiosk screens")
    k_sub = k.add_subparsers(dest="kiosk_cmd", required=True)
    for name in ("pair", "revoke"):
        sp = k_sub.add_parser(name)
        with_config(sp)
        sp.add_argument("device_id")
        sp.set_defaults(fn=cmd_kiosk)
    sp = k_sub.add_parser("list")
    with_config(sp)
    sp.set_defaults(fn=cmd_kiosk)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except (ConfigError, CliError, StoreError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
