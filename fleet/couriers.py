"""The fleet's courier registry (#20.2, ADR 0131): carriers' couriers enrolled once, assigned
to stations, and the stations' bundle keys. PostgreSQL, in tables of their own.

A PIN is hashed (argon2) here at enrolment and never kept in clear; what a station needs of a
courier travels to it sealed for it alone (fleet/bundles.py). Run as

    python -m fleet.couriers --dsn DSN add ID --carrier SF --name "Li Lei" --stations st-1,st-2
    python -m fleet.couriers --dsn DSN disable ID | enable ID | assign ID st-3 | unassign ID st-3
    python -m fleet.couriers --dsn DSN station-key st-1 HEX     # `station bundle pubkey` there
    python -m fleet.couriers --dsn DSN list

    python -m fleet.couriers --dsn DSN enrol ID --face a.jpg [b.jpg ...]   # 1-5 photos
    python -m fleet.couriers --dsn DSN remove ID | forget-face ID

(also as `fleet courier ...`; the PIN from $PS_COURIER_PIN or asked). Face photos become
128-d templates with the station's own encoder (station/vision/faces.py), checked as a
station checks them (one sharp, large enough face a photo), and are kept only as
AES-256-GCM ciphertext under the fleet's `template_key` (ADR 0132)."""

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
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS fleet_courier_stations (
    courier_id TEXT NOT NULL REFERENCES fleet_couriers(id) ON DELETE CASCADE,
    station_id TEXT NOT NULL,
    PRIMARY KEY (courier_id, station_id)
);
CREATE INDEX IF NOT EXISTS fleet_courier_stations_station ON fleet_courier_stations(station_id);
ALTER TABLE fleet_couriers DROP COLUMN IF EXISTS faces;
CREATE TABLE IF NOT EXISTS fleet_courier_faces (
    courier_id TEXT NOT NULL REFERENCES fleet_couriers(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    template BYTEA NOT NULL,
    PRIMARY KEY (courier_id, idx)
);
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
ALTER TABLE fleet_bundles ADD COLUMN IF NOT EXISTS signed_by TEXT;
"""
_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_PIN = re.compile(r"^\d{4,8}$")
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)  # the station's parameters


class RegistryError(ValueError):
    pass


class FaceRefused(RegistryError):
    """An enrolment photo failed a check (station/vision/faces.py EnrolmentRefused): `check`
    is image, face_count, face_size, sharpness, exposure or consistency, `image_index` which
    photo it was, so the person enrolling knows what to retake."""

    def __init__(self, image_index: int, check: str, message: str) -> None:
        super().__init__(message)
        self.image_index = image_index
        self.check = check


def template_cipher(key: bytes) -> Any:
    """The station's template cipher (AES-256-GCM, the courier id as associated data) under
    the fleet's own `template_key`."""
    from station.vision.templates import TemplateCipher

    return TemplateCipher(key)


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


def _must_exist(conn: psycopg.Connection, courier_id: str) -> None:
    if conn.execute("SELECT 1 FROM fleet_couriers WHERE id = %s", (courier_id,)).fetchone() is None:
        raise RegistryError(f"no courier {courier_id}")


def enrol_faces(conn: psycopg.Connection, courier_id: str, images: Sequence[bytes], engine: Any,
                cipher: Any) -> int:
    """Templates from 1-5 photos, stored encrypted, replacing the courier's earlier ones;
    the next bundle of each of their stations carries them. Returns how many."""
    from station.vision.faces import EnrolmentRefused

    _must_exist(conn, courier_id)  # before the ~0.1 s a photo costs
    try:
        enrolment = engine.enrol(list(images))
    except EnrolmentRefused as exc:
        raise FaceRefused(exc.image_index, exc.check, f"photo {exc.image_index + 1}: {exc.check}: {exc.detail}") \
            from None
    with conn.transaction():
        # the courier's row locked: two enrolments at once replace one another whole (without
        # it the second's DELETE missed the first's new rows and its INSERT hit their key)
        if conn.execute("SELECT 1 FROM fleet_couriers WHERE id = %s FOR UPDATE", (courier_id,)).fetchone() is None:
            raise RegistryError(f"no courier {courier_id}")
        conn.execute("DELETE FROM fleet_courier_faces WHERE courier_id = %s", (courier_id,))
        for idx, template in enumerate(enrolment.templates):
            conn.execute("INSERT INTO fleet_courier_faces(courier_id, idx, template) VALUES (%s,%s,%s)",
                         (courier_id, idx, cipher.encrypt(template, courier_id)))
        conn.execute("UPDATE fleet_couriers SET updated_at = now() WHERE id = %s", (courier_id,))
    return len(enrolment.templates)


def forget_face(conn: psycopg.Connection, courier_id: str) -> int:
    """Delete a courier's templates (the stations delete theirs with the next bundle)."""
    with conn.transaction():
        _must_exist(conn, courier_id)
        n = conn.execute("DELETE FROM fleet_courier_faces WHERE courier_id = %s", (courier_id,)).rowcount
        conn.execute("UPDATE fleet_couriers SET updated_at = now() WHERE id = %s", (courier_id,))
    return n


def remove(conn: psycopg.Connection, courier_id: str) -> None:
    """The courier, their assignments and their templates, in one statement (ON DELETE
    CASCADE); every station removes them with its next bundle."""
    with conn.transaction():
        if conn.execute("DELETE FROM fleet_couriers WHERE id = %s", (courier_id,)).rowcount != 1:
            raise RegistryError(f"no courier {courier_id}")


def registry(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The registry as an operator may see it: who, where, until when, whether a face is
    enrolled. Never a PIN hash or a template."""
    rows = conn.execute(
        "SELECT c.id, c.carrier, c.name, c.active, c.valid_from, c.valid_until,"
        " COALESCE((SELECT array_agg(s.station_id ORDER BY s.station_id) FROM fleet_courier_stations s"
        "           WHERE s.courier_id = c.id), '{}'),"
        " (SELECT count(*) FROM fleet_courier_faces f WHERE f.courier_id = c.id), c.updated_at"
        " FROM fleet_couriers c ORDER BY c.carrier, c.id").fetchall()
    return [{"id": r[0], "carrier": r[1], "name": r[2], "active": r[3], "valid_from": r[4], "valid_until": r[5],
             "stations": list(r[6]), "face_enrolled": r[7] > 0,
             "updated_at": r[8].isoformat()} for r in rows]


def set_station_key(conn: psycopg.Connection, station_id: str, public_hex: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{64}", public_hex):
        raise RegistryError("a station's bundle key is 64 hex digits (station bundle pubkey)")
    with conn.transaction():
        conn.execute("INSERT INTO fleet_station_keys VALUES (%s,%s) ON CONFLICT (station_id)"
                     " DO UPDATE SET x25519_public = excluded.x25519_public", (station_id, public_hex))


def couriers_for(conn: psycopg.Connection, station_id: str, cipher: Any = None) -> list[dict[str, Any]]:
    """What `station_id` must know: its assigned couriers, in a stable order, with their
    face templates opened (they travel sealed for the station, station/bundles.py). Without
    the template key (`cipher` None) a courier with a face is an error, not a face dropped:
    a bundle without it would delete the station's copy."""
    from station.bundles import encode_template
    from station.vision.templates import TemplateError

    rows = conn.execute(
        "SELECT c.id, c.carrier, c.name, c.active, c.pin_hash, c.valid_from, c.valid_until,"
        " COALESCE((SELECT array_agg(f.template ORDER BY f.idx) FROM fleet_courier_faces f"
        "           WHERE f.courier_id = c.id), '{}')"
        " FROM fleet_couriers c JOIN fleet_courier_stations s ON s.courier_id = c.id"
        " WHERE s.station_id = %s ORDER BY c.id", (station_id,)).fetchall()
    out = []
    for r in rows:
        faces = []
        if r[7] and cipher is None:
            raise RegistryError("courier faces are enrolled: the bundle publisher needs the fleet's"
                                " template_key (--secrets or PS_SECRET_TEMPLATE_KEY)")
        for blob in r[7]:
            try:
                faces.extend(encode_template(t) for t in cipher.decrypt(bytes(blob), r[0]))
            except TemplateError as exc:
                raise RegistryError(f"courier {r[0]}: a face template does not open ({exc});"
                                    " wrong template_key, or enrol the face again") from None
        out.append({"id": r[0], "carrier": r[1], "name": r[2], "active": r[3], "pin_hash": r[4],
                    "valid_from": r[5], "valid_until": r[6], "faces": faces})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from station.config import ConfigError

    p = argparse.ArgumentParser(prog="fleet courier", description="the fleet's courier registry")
    p.add_argument("--dsn", default=os.environ.get("FLEET_DSN", ""))
    p.add_argument("--secrets", help="fleet secrets file (template_key; or PS_SECRET_TEMPLATE_KEY)")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("courier_id")
    a.add_argument("--carrier", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--stations", default="", help="comma separated station ids")
    e = sub.add_parser("enrol", help="the courier's face from 1-5 photos (replaces earlier ones)")
    e.add_argument("courier_id")
    e.add_argument("--face", nargs="+", required=True, metavar="IMG", help="JPEG/PNG photos, one face each")
    for name in ("disable", "enable", "remove", "forget-face"):
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
    done = "done"
    try:
        images: list[bytes] = []
        if args.cmd == "enrol":
            from fleet.config import load_template_key

            key = load_template_key(args.secrets)
            for path in args.face:
                try:
                    images.append(open(path, "rb").read())
                except OSError as exc:
                    raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            create_tables(conn)
            if args.cmd == "add":
                pin = os.environ.get("PS_COURIER_PIN") or __import__("getpass").getpass("PIN (4-8 digits): ")
                add(conn, args.courier_id, args.carrier, args.name, pin,
                    [s for s in args.stations.split(",") if s])
            elif args.cmd == "enrol":
                from station.vision.faces import FaceEngine

                n = enrol_faces(conn, args.courier_id, images, FaceEngine(), template_cipher(key))
                done = f"{n} face template(s) stored encrypted; the stations get them with their next bundle"
            elif args.cmd in ("disable", "enable"):
                set_active(conn, args.courier_id, args.cmd == "enable")
            elif args.cmd == "remove":
                remove(conn, args.courier_id)
            elif args.cmd == "forget-face":
                done = f"{forget_face(conn, args.courier_id)} face template(s) deleted"
            elif args.cmd in ("assign", "unassign"):
                assign(conn, args.courier_id, args.station_id, args.cmd == "assign")
            elif args.cmd == "station-key":
                set_station_key(conn, args.station_id, args.public_hex)
            elif args.cmd == "list":
                for r in registry(conn):
                    print(json.dumps({k: r[k] for k in ("id", "carrier", "name", "active", "stations",
                                                        "face_enrolled")}))
    except (RegistryError, ConfigError, psycopg.Error) as exc:
        print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{args.cmd}: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
