"""Couriers from the fleet to real stations (#20.2, ADR 0131): the fleet's registry in a real
PostgreSQL, its bundle publisher as a real process, two `station run` processes on one
fleet broker. A courier enrolled once at the fleet logs in at both stations; disabled at the
fleet, they are refused at both within a minute; a forged or older bundle is refused and
the last good one keeps working; a station that was down catches up when it is back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from fleet import couriers as registry
from fleet.bundles import keygen
from station.bundles import bundle_topic
from station.mosquitto import MosquittoProcess
from tests.reliability.harness import ProcStation, until

ROOT = Path(__file__).resolve().parents[2]
PIN = "2468"
WITHIN_S = 60.0  # the promise: refused everywhere within a minute of being online


def _station(tmp: Path, broker: MosquittoProcess, station_id: str, trusted: str) -> ProcStation:
    return ProcStation(tmp, broker=broker, devices=False, webhook=False, id=station_id, sections={
        "upstream": {"host": "127.0.0.1", "port": broker.port, "tls": False, "client_id": f"{station_id}-up"},
        "bundles": {"enabled": True, "trusted_key": trusted}})


def _login(ps: ProcStation, courier: str = "f1") -> int:
    return httpx.post(ps.base_url + "/api/courier/login", json={"courier_id": courier, "pin": PIN}).status_code


def _active(ps: ProcStation, courier: str = "f1") -> bool | None:
    """What the station's database says (polled instead of logging in, which a wrong PIN
    would count against the lockout): None for a courier it does not know."""
    rows = ps.query("SELECT active FROM couriers WHERE id = ?", (courier,))
    return bool(rows[0]["active"]) if rows else None


def _count(ps: ProcStation, event_type: str) -> int:
    return int(ps.query("SELECT COUNT(*) n FROM events WHERE type = ?", (event_type,))[0]["n"])


def _retained(broker: MosquittoProcess, topic: str) -> bytes:
    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-peek")
    c.on_message = lambda cl, u, m: got.append(bytes(m.payload))
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        until(lambda: got, 10, "the retained bundle")
    finally:
        c.loop_stop()
        c.disconnect()
    return got[0]


def _publish(broker: MosquittoProcess, topic: str, raw: bytes) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-forger")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.publish(topic, raw, qos=1, retain=True).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def test_couriers_from_the_fleet_reach_real_stations_and_lose_access_everywhere(tmp_path: Path,
                                                                                 fleet_dsn: str) -> None:
    key_file = tmp_path / "signing.pem"
    trusted = keygen(key_file)
    with MosquittoProcess(workdir=tmp_path / "broker") as broker, \
            _station(tmp_path / "a", broker, "st-a", trusted) as a, \
            _station(tmp_path / "b", broker, "st-b", trusted) as b:
        a.start(wait_devices=False, timeout=120)   # two stations and a broker on a loaded machine
        b.start(wait_devices=False, timeout=120)
        a.cli("courier", "add", "c-local", "--carrier", "SF", "--name", "Local", "--pin", "1357")
        with psycopg.connect(fleet_dsn, autocommit=True) as conn:
            registry.create_tables(conn)
            for ps in (a, b):
                pub = ps.cli("bundle", "pubkey").stdout.strip()
                registry.set_station_key(conn, ps.config.station.id, pub)
            registry.add(conn, "f1", "SF", "Fleet Li", PIN, ["st-a", "st-b"])
            registry.add(conn, "c-local", "SF", "Fleet namesake", "9999", ["st-a"])
        publisher = subprocess.Popen(
            [sys.executable, "-m", "fleet.bundles", "run", "--dsn", fleet_dsn, "--broker", broker.url,
             "--signing-key", str(key_file), "--interval", "0.5"],
            cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            # enrolled once at the fleet: both stations let them in
            until(lambda: _active(a) and _active(b), WITHIN_S, "the courier at both stations")
            assert _login(a) == 200 and _login(b) == 200
            # the local courier of the same id is not overwritten: local PIN, alarm
            assert _login(a, "c-local") == 401
            assert httpx.post(a.base_url + "/api/courier/login",
                              json={"courier_id": "c-local", "pin": "1357"}).status_code == 200
            assert [r["kind"] for r in a.query("SELECT kind FROM alarms")] == ["bundle.conflict"]
            # on the broker, nothing readable: no PIN hash, no name
            raw_v1 = _retained(broker, bundle_topic("st-a"))
            assert b"argon2" not in raw_v1 and b"Fleet Li" not in raw_v1

            # disabled at the fleet: refused at every station within a minute
            with psycopg.connect(fleet_dsn, autocommit=True) as conn:
                registry.set_active(conn, "f1", False)
            until(lambda: _active(a) is False and _active(b) is False, WITHIN_S, "disabled at both stations")
            assert _login(a) == 403 and _login(b) == 403

            # a forged bundle (another key) and an older one (the first, replayed) are refused;
            # the station keeps the couriers of the last good one
            forged_key = tmp_path / "forged.pem"
            keygen(forged_key)
            from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

            from fleet.bundles import load_signing_key
            from station.bundles import seal_bundle

            pub_a = X25519PublicKey.from_public_bytes(bytes.fromhex(a.cli("bundle", "pubkey").stdout.strip()))
            forged = seal_bundle("st-a", 99, 0.0, [{"id": "f1", "carrier": "SF", "name": "x", "active": True,
                                                    "pin_hash": registry.HASHER.hash(PIN)}],
                                 pub_a, load_signing_key(forged_key))
            refused_before = _count(a, "courier.bundle.refused")
            _publish(broker, bundle_topic("st-a"), forged)
            until(lambda: _count(a, "courier.bundle.refused") == refused_before + 1, 30, "the forgery refused")
            _publish(broker, bundle_topic("st-a"), raw_v1)
            until(lambda: _count(a, "courier.bundle.refused") == refused_before + 2, 30, "the old bundle refused")
            reasons = [json.loads(r["data"])["reason"] for r in a.query(
                "SELECT data FROM events WHERE type = 'courier.bundle.refused' ORDER BY seq")]
            assert reasons[-2:] == ["untrusted_key", "older"]
            assert _login(a) == 403 and _login(a, "c-local") == 401

            # station b is down while the fleet re-enables f1 and enrols f2; back, it catches up
            b.kill()
            with psycopg.connect(fleet_dsn, autocommit=True) as conn:
                registry.set_active(conn, "f1", True)
                registry.add(conn, "f2", "ZTO", "Fleet Wang", PIN, ["st-b"])
            until(lambda: _active(a), WITHIN_S, "f1 back at the online station")
            assert _login(a) == 200
            b.start(wait_devices=False, timeout=120)
            until(lambda: _active(b) and _active(b, "f2"), WITHIN_S, "station b caught up")
            assert _login(b) == 200 and _login(b, "f2") == 200
            assert _login(a, "f2") == 401  # f2 is assigned to b only
            for ps in (a, b):
                assert ps.verify_log().returncode == 0
                log = json.dumps([dict(r) for r in ps.query("SELECT data FROM events")]) + ps.log_tail(10**6)
                assert "$argon2" not in log
        finally:
            publisher.terminate()
            publisher.wait(10)
