"""Courier bundles out of the fleet (#20.2, ADR 0131): for every station with a registered
bundle key, the couriers assigned to it, sealed for it and signed with the fleet's key
(station/bundles.py has the format), published retained with QoS 1 on
`ps/v1/<station>/fleet/couriers`. A new version goes out when what a station must know
changes (a courier added, disabled, reassigned, a new PIN); the version is recorded only
after the broker has acknowledged the message.

    python -m fleet.bundles keygen /etc/fleet/bundle-signing.pem    # prints the public key
    python -m fleet.bundles run --dsn DSN --broker mqtt://H:P --keys DIR [--secrets FILE] [--interval 2]

`--keys DIR` is a key directory of fleet/keys.py (`fleet keys init|next|rotate`): the
active key signs, re-read every round; when it changes, every station's bundle is signed
again as a new version (ADR 0133). `--signing-key FILE` is one fixed key, as before.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from fleet import couriers as registry
from station.bundles import MAX_BUNDLE_BYTES, bundle_topic, public_hex, seal_bundle

log = logging.getLogger("fleet.bundles")


def keygen(path: Path) -> str:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_hex(key.public_key())


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def _digest(couriers: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(couriers, sort_keys=True).encode()).hexdigest()


def due(conn: psycopg.Connection, cipher: Any = None, kid: str | None = None,
        errors: dict[str, str] | None = None) -> list[tuple[str, str, int, list[dict[str, Any]], str]]:
    """(station, its public key, next version, couriers, digest) for each station whose
    couriers changed since its last published bundle, or whose last bundle another key than
    `kid` signed (the fleet rolled its key). A station whose couriers cannot be read (a
    template that does not open) is skipped with a message, not the others; with `errors`
    (station -> its last message) the same message is not repeated every round."""
    out = []
    for station_id, pub in conn.execute("SELECT station_id, x25519_public FROM fleet_station_keys"
                                        " ORDER BY station_id").fetchall():
        try:
            couriers = registry.couriers_for(conn, station_id, cipher)
        except registry.RegistryError as exc:
            if errors is None or errors.get(station_id) != str(exc):
                log.error("bundle for %s not made: %s", station_id, exc)
            if errors is not None:
                errors[station_id] = str(exc)
            continue
        if errors is not None:
            errors.pop(station_id, None)
        digest = _digest(couriers)
        row = conn.execute("SELECT version, content_digest, signed_by FROM fleet_bundles WHERE station_id = %s",
                           (station_id,)).fetchone()
        if row is None or row[1] != digest or (kid is not None and row[2] != kid):
            out.append((station_id, pub, (row[0] if row else 0) + 1, couriers, digest))
    return out


class Publisher:
    def __init__(self, dsn: str, broker: str, signer: Ed25519PrivateKey | Any, username: str | None = None,
                 password: str | None = None, cipher: Any = None) -> None:
        """`signer`: one key, or a fleet.keys.SigningKeys (the active key of a directory)."""
        from fleet.keys import fixed

        self.dsn = dsn
        self.keys = fixed(signer) if isinstance(signer, Ed25519PrivateKey) else signer
        self.cipher = cipher  # opens the face templates at rest (fleet template_key)
        self.errors: dict[str, str] = {}  # station -> why its bundle cannot be made (said once)
        url = urlparse(broker)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-bundles-{os.getpid()}")
        if username:
            self.client.username_pw_set(username, password)
        self.client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=30)
        self.client.loop_start()

    def publish_due(self) -> int:
        """Publish every due bundle; returns how many went out."""
        n = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            registry.create_tables(conn)
            kid, signer = self.keys.current()
            for station_id, pub, version, couriers, digest in due(conn, self.cipher, kid, self.errors):
                raw = seal_bundle(station_id, version, time.time(), couriers,
                                  X25519PublicKey.from_public_bytes(bytes.fromhex(pub)), signer)
                if len(raw) > MAX_BUNDLE_BYTES:  # the station would refuse it: say so here, send nothing
                    log.error("bundle for %s is %d bytes, above the %d a station accepts (%d couriers):"
                              " not published", station_id, len(raw), MAX_BUNDLE_BYTES, len(couriers))
                    continue
                info = self.client.publish(bundle_topic(station_id), raw, qos=1, retain=True)
                info.wait_for_publish(timeout=30)
                if not info.is_published():
                    continue  # not acknowledged: tried again next round, same version
                with conn.transaction():
                    conn.execute("INSERT INTO fleet_bundles(station_id, version, content_digest, signed_by)"
                                 " VALUES (%s,%s,%s,%s) ON CONFLICT (station_id) DO UPDATE SET version = excluded.version,"
                                 " content_digest = excluded.content_digest, signed_by = excluded.signed_by,"
                                 " published_at = now()", (station_id, version, digest, kid))
                n += 1
        return n

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fleet.bundles", description="courier bundles to the stations")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen")
    k.add_argument("path")
    r = sub.add_parser("run")
    r.add_argument("--dsn", default=os.environ.get("FLEET_DSN", ""))
    r.add_argument("--broker", required=True, help="mqtt://host:port")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--keys", help="key directory (fleet keys init): its active key signs, re-read each round")
    which.add_argument("--signing-key", help="one fixed signing key (PEM)")
    r.add_argument("--username")
    r.add_argument("--secrets", help="fleet secrets file: its template_key opens the face templates"
                                     " (or PS_SECRET_TEMPLATE_KEY; without it, no courier may have a face)")
    r.add_argument("--interval", type=float, default=5.0)
    r.add_argument("--once", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "keygen":
        print(keygen(Path(args.path)))
        return 0
    from fleet.config import load_template_key
    from station.config import ConfigError

    cipher = None
    if args.secrets or os.environ.get("PS_SECRET_TEMPLATE_KEY") or os.environ.get("PS_FLEET_SECRETS_FILE"):
        try:
            cipher = registry.template_cipher(load_template_key(args.secrets))
        except ConfigError as exc:
            print(f"fleet bundles: {exc}", file=sys.stderr)
            return 2
    from fleet.keys import KeyError_, SigningKeys

    try:
        signer: Any = SigningKeys(Path(args.keys)) if args.keys else load_signing_key(Path(args.signing_key))
    except (KeyError_, OSError, ValueError) as exc:
        print(f"fleet bundles: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pub = Publisher(args.dsn, args.broker, signer, args.username, os.environ.get("FLEET_BROKER_PASSWORD"), cipher)
    try:
        while True:
            n = pub.publish_due()
            if n:
                print(f"published {n} bundle(s)", flush=True)
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        pub.stop()


if __name__ == "__main__":
    sys.exit(main())
