"""Rolling the fleet's bundle signing key without a gap (ADR 0133), with the real key
commands, the real publisher, the real ingest and two real stations: the station that
trusts old + new follows the roll at once; the one that trusts only the old key refuses the
new bundles with a logged reason naming the key, keeps its last good couriers, and catches
up once it trusts the new key; `fleet keys status` says who is behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg

from fleet import couriers as registry
from fleet.ingest import Ingest
from station.bundles import key_id, load_trusted
from station.config import dump_config_toml, load_config
from station.mosquitto import MosquittoProcess
from tests.reliability.harness import ProcStation, until

ROOT = Path(__file__).resolve().parents[2]
PIN = "2468"
WITHIN_S = 60.0


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


def _station(tmp: Path, broker: MosquittoProcess, station_id: str, trusted: list[str]) -> ProcStation:
    ps = ProcStation(tmp, devices=False, webhook=False, id=station_id, sections={
        "upstream": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "tls": False,
                     "client_id": f"{station_id}-up", "username": station_id},
        "bundles": {"enabled": True, "trusted_keys": trusted}})
    with ps.secrets_path.open("a") as fh:  # the test broker lets anyone in; the station needs a login
        fh.write('upstream_password = "pw"\n')
    return ps


def _applied(ps: ProcStation) -> list[dict[str, object]]:
    return [json.loads(r["data"]) for r in ps.query(
        "SELECT data FROM events WHERE type = 'courier.bundle.applied' ORDER BY seq")]


def _refused(ps: ProcStation) -> list[dict[str, object]]:
    return [json.loads(r["data"]) for r in ps.query(
        "SELECT data FROM events WHERE type = 'courier.bundle.refused' ORDER BY seq")]


def _active(ps: ProcStation, courier: str = "f1") -> bool | None:
    rows = ps.query("SELECT active FROM couriers WHERE id = ?", (courier,))
    return bool(rows[0]["active"]) if rows else None


def _login(ps: ProcStation) -> int:
    return httpx.post(ps.base_url + "/api/courier/login", json={"courier_id": "f1", "pin": PIN}).status_code


def test_the_fleet_rolls_its_signing_key_without_a_gap(tmp_path: Path, fleet_dsn: str) -> None:
    keys = tmp_path / "keys"
    made = fleet("keys", "init", str(keys))
    assert made.returncode == 0, made.stderr
    old_pub = made.stdout.split()[-1]
    assert fleet("keys", "rotate", str(keys)).returncode == 2          # nothing staged: refused, no gap made
    staged = fleet("keys", "next", str(keys))
    assert staged.returncode == 0, staged.stderr
    new_pub = staged.stdout.split()[-1]
    old, new = key_id(load_trusted(old_pub)), key_id(load_trusted(new_pub))
    listed = [json.loads(line) for line in fleet("keys", "list", str(keys)).stdout.splitlines()]
    assert [(k["kid"], k["state"]) for k in listed] == [(old, "active"), (new, "next")]
    assert oct((keys / f"{new}.pem").stat().st_mode & 0o777) == "0o600"

    with MosquittoProcess(workdir=tmp_path / "fleet-broker") as broker, \
            _station(tmp_path / "a", broker, "st-a", [old_pub, new_pub]) as a, \
            _station(tmp_path / "b", broker, "st-b", [old_pub]) as b:
        ingest = Ingest(fleet_dsn, broker.host, broker.port, client_id="fleet-rot").start()
        assert ingest.subscribed.wait(10)
        a.start(timeout=120)
        b.start(timeout=120)
        with psycopg.connect(fleet_dsn, autocommit=True) as conn:
            registry.create_tables(conn)
            for ps in (a, b):
                registry.set_station_key(conn, ps.config.station.id, ps.cli("bundle", "pubkey").stdout.strip())
            registry.add(conn, "f1", "SF", "Fleet Li", PIN, ["st-a", "st-b"])
        publisher = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "bundles", "run", "--dsn", fleet_dsn, "--broker", broker.url,
             "--keys", str(keys), "--interval", "0.3"],
            cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            until(lambda: _active(a) and _active(b), WITHIN_S, "f1 at both stations")
            assert [x["kid"] for x in _applied(a)] == [old] and [x["kid"] for x in _applied(b)] == [old]

            rolled = fleet("keys", "rotate", str(keys))
            assert rolled.returncode == 0 and new in rolled.stdout, rolled.stderr
            # a trusts the new key: the re-signed bundle (same couriers) is applied at once
            until(lambda: [x["kid"] for x in _applied(a)] == [old, new], WITHIN_S, "a on the new key")
            assert _login(a) == 200
            shown = a.cli("bundle", "status").stdout
            assert f"signed by fleet key {new}" in shown and f"trusted fleet keys: {old}, {new}" in shown, shown
            # b does not: refused, with the reason and the key's id in the log and its event
            until(lambda: _refused(b), WITHIN_S, "b refuses the new key")
            assert _refused(b)[0]["reason"] == "untrusted_key" and new in str(_refused(b)[0]["message"])
            assert "untrusted_key" in b.log_tail(10**6) and new in b.log_tail(10**6)
            assert _login(b) == 200 and [x["kid"] for x in _applied(b)] == [old]  # the last good bundle holds

            # status: a is on the new key, b is behind (exit 1 until every station is)
            until(lambda: "applied with" in fleet("keys", "status", str(keys), "--dsn", fleet_dsn).stdout
                  and fleet("keys", "status", str(keys), "--dsn", fleet_dsn).stdout.count(" not yet") == 1,
                  WITHIN_S, "the fleet sees a's applied bundle")
            behind = fleet("keys", "status", str(keys), "--dsn", fleet_dsn)
            assert behind.returncode == 1 and "1 of 2 stations" in behind.stdout, behind.stdout

            # b is given the new key (old + new) and restarted: it catches up from the retained bundle
            b.kill()
            b.config = b.config.model_copy(update={"bundles": b.config.bundles.model_copy(
                update={"trusted_keys": [old_pub, new_pub]})})
            b.config_path.write_text(dump_config_toml(b.config))
            load_config(b.config_path)
            b.start(timeout=120)
            until(lambda: [x["kid"] for x in _applied(b)] == [old, new], WITHIN_S, "b on the new key")
            until(lambda: fleet("keys", "status", str(keys), "--dsn", fleet_dsn).returncode == 0, WITHIN_S,
                  "every station on the new key")
            # the old key is dropped everywhere and retired: a bundle it signs is refused
            assert fleet("keys", "retire", str(keys), old).returncode == 0
            assert not (keys / f"{old}.pem").exists()
            assert fleet("keys", "retire", str(keys), new).returncode == 2   # the active key stays
            with psycopg.connect(fleet_dsn, autocommit=True) as conn:
                registry.set_active(conn, "f1", False)
            until(lambda: _active(a) is False and _active(b) is False, WITHIN_S, "disabled at both")
            for ps in (a, b):
                assert ps.verify_log().returncode == 0
        finally:
            publisher.terminate()
            publisher.wait(10)
            ingest.stop()
