"""The fleet's courier registry (#20.2, ADR 0131): carriers' couriers enrolled once, assigned
to stations, and the stations' bundle keys. PostgreSQL, in tables of their own.

A PIN is hashed (argon2) here at enrolment and never kept in clear; what a station needs of a
courier travels to it sealed for it alone (fleet/bundles.py). Run as

    python -m fleet.couriers --dsn DSN add ID --carrier SF --name "Li Lei" --stations st-1,st-2
    python -m fleet.couriers --dsn DSN disable ID | enable ID | assign ID st-3 | unassign ID st-3
    python -m fleet.couriers --dsn DSN station-key st-1 HEX     # `station bundle pubkey` there
    python -m fleet.couriers --dsn DSN list

(the PIN from $PS_COURIER_PIN or asked)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import psycopg
from argon2 import PasswordHasher

DDL = """
CREATE TABLE IF NOT EXISTS fleet_couriers (
    id TEXT PRIMARY KEY,
    carrier TEXT NOT NULL,
    name TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    pin_hash TEXT NOT NULL,
    valid_from DOUBLE PRECISION,
    valid_until DOUBLE PRECISION,
    faces JSONB NOT NULL DEFAULT '[]',
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS fleet_courier_stations (
    courier_id TEXT NOT NULL REFERENCES fleet_couriers(id) ON DELETE CASCADE,
    station_id TEXT NOT NULL,
    PRIMARY KEY (courier_id, station_id)
);
CREATE INDEX IF NOT EXISTS fleet_courier_stations_station ON fleet_courier_stations(station_id);
CREATE TABLE IF NOT EXISTS fleet_station_keys (
    station_id TEXT PRIMARY KEY,
    x25519_public TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_bundles (
    station_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    content_digest TEXT NOT NULL,
    published_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""
_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_PIN = re.compile(r"^\d{4,8}$")
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)  # the station's parameters


class RegistryError(ValueError):
    pass


def create_tables(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for statement in DDL.split(";"):
            if statement.strip():
                conn.execute(statement)


def add(conn: psycopg.Connection, courier_id: str, carrier: str, name: str, pin: str,
        stations: Sequence[str] = (), valid_from: float | None = None, valid_until: float | None = None) -> None:
    if not _ID.match(courier_id):
        raise RegistryError("courier id: 1-32 letters, digits, - or _")
    if not _PIN.match(pin):
        raise RegistryError("a PIN is 4-8 digits")
    with conn.transaction():
        conn.execute("INSERT INTO fleet_couriers(id, carrier, name, pin_hash, valid_from, valid_until)"
                     " VALUES (%s,%s,%s,%s,%s,%s)", (courier_id, carrier, name, HASHER.hash(pin), valid_from, valid_until))
        for st in stations:
            conn.execute("INSERT INTO fleet_courier_stations VALUES (%s,%s) ON CONFLICT DO NOTHING", (courier_id, st))


def set_active(conn: psycopg.Connection, courier_id: str, active: bool) -> None:
    with conn.transaction():
        n = conn.execute("UPDATE fleet_couriers SET active = %s, updated_at = now() WHERE id = %s",
                         (active, courier_id)).rowcount
    if n != 1:
        raise RegistryError(f"no courier {courier_id}")


def assign(conn: psycopg.Connection, courier_id: str, station_id: str, assigned: bool = True) -> None:
    with conn.transaction():
        if assigned:
            conn.execute("INSERT INTO fleet_courier_stations VALUES (%s,%s) ON CONFLICT DO NOTHING",
                         (courier_id, station_id))
        else:
            conn.execute("DELETE FROM fleet_courier_stations WHERE courier_id = %s AND station_id = %s",
                         (courier_id, station_id))


def set_station_key(conn: psycopg.Connection, station_id: str, public_hex: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{64}", public_hex):
        raise RegistryError("a station's bundle key is 64 hex digits (station bundle pubkey)")
    with conn.transaction():
        conn.execute("INSERT INTO fleet_station_keys VALUES (%s,%s) ON CONFLICT (station_id)"
                     " DO UPDATE SET x25519_public = excluded.x25519_public", (station_id, public_hex))


def couriers_for(conn: psycopg.Connection, station_id: str) -> list[dict[str, Any]]:
    """What `station_id` must know: its assigned couriers, in a stable order."""
    rows = conn.execute(
        "SELECT c.id, c.carrier, c.name, c.active, c.pin_hash, c.valid_from, c.valid_until, c.faces"
        " FROM fleet_couriers c JOIN fleet_courier_stations s ON s.courier_id = c.id"
        " WHERE s.station_id = %s ORDER BY c.id", (station_id,)).fetchall()
    return [{"id": r[0], "carrier": r[1], "name": r[2], "active": r[3], "pin_hash": r[4],
             "valid_from": r[5], "valid_until": r[6], "faces": r[7] or []} for r in rows]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fleet.couriers", description="the fleet's courier registry")
    p.add_argument("--dsn", default=os.environ.get("FLEET_DSN", ""))
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("courier_id")
    a.add_argument("--carrier", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--stations", default="", help="comma separated station ids")
    for name in ("disable", "enable"):
        sub.add_parser(name).add_argument("courier_id")
    for name in ("assign", "unassign"):
        sp = sub.add_parser(name)
        sp.add_argument("courier_id")
        sp.add_argument("station_id")
    k = sub.add_parser("station-key")
    k.add_argument("station_id")
    k.add_argument("public_hex")
    sub.add_parser("list")
    args = p.parse_args(argv)
    try:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            create_tables(conn)
            if args.cmd == "add":
                pin = os.environ.get("PS_COURIER_PIN") or __import__("getpass").getpass("PIN (4-8 digits): ")
                add(conn, args.courier_id, args.carrier, args.name, pin,
                    [s for s in args.stations.split(",") if s])
            elif args.cmd in ("disable", "enable"):
                set_active(conn, args.courier_id, args.cmd == "enable")
            elif args.cmd in ("assign", "unassign"):
                assign(conn, args.courier_id, args.station_id, args.cmd == "assign")
            elif args.cmd == "station-key":
                set_station_key(conn, args.station_id, args.public_hex)
            elif args.cmd == "list":
                for r in conn.execute("SELECT c.id, c.carrier, c.name, c.active, array_agg(s.station_id)"
                                      " FROM fleet_couriers c LEFT JOIN fleet_courier_stations s ON s.courier_id = c.id"
                                      " GROUP BY c.id ORDER BY c.id").fetchall():
                    print(json.dumps({"id": r[0], "carrier": r[1], "name": r[2], "active": r[3],
                                      "stations": [s for s in r[4] if s]}))
    except (RegistryError, psycopg.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.cmd}: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
