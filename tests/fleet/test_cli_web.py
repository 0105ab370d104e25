"""`fleet synth|trace|stations|verify` and the fleet API's login, over a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient

from fleet.config import FleetSecrets
from fleet.synth import sample_keys
from fleet.web import create_app, make_token
from station.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)


def test_synth_then_trace_stations_and_verify(fleet_dsn: str) -> None:
    done = fleet("synth", "--dsn", fleet_dsn, "--stations", "6", "--days", "0.5", "--events-per-day", "400")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        n = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        assert n >= 6 * 200
        waybill = sample_keys(conn, 1)[0]
    rows = json.loads(fleet("stations", "--dsn", fleet_dsn, "--json").stdout)
    assert len(rows) == 6 and all(r["gap"] is None for r in rows)
    out = fleet("trace", "--dsn", fleet_dsn, waybill)
    assert out.returncode == 0 and "parcel.shelved" in out.stdout and "parcel.scanned" in out.stdout
    assert fleet("trace", "--dsn", fleet_dsn, "NO-SUCH-WAYBILL").returncode == 1
    ok = fleet("verify", "--dsn", fleet_dsn, rows[0]["station"])
    assert ok.returncode == 0 and " ok" in ok.stdout, ok.stdout


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    down = f"host=127.0.0.1 port={free_port()} user=fleet dbname=fleet connect_timeout=2"
    for args in (("stations", "--dsn", down), ("synth", "--dsn", down, "--stations", "0"),
                 ("ingest", "--config", str(tmp_path / "missing.toml"))):
        done = fleet(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.strip().startswith("fleet:")
    bad = tmp_path / "fleet.toml"
    bad.write_text("[broker]\nport = 0\nsurprise = 1\n")
    done = fleet("ingest", "--config", str(bad))
    assert done.returncode == 2 and "surprise" in done.stderr and "broker.port" in done.stderr


def test_the_api_needs_an_operator_token(fleet_dsn: str) -> None:
    secrets = FleetSecrets(token_key=b"k" * 32)
    client = TestClient(create_app(fleet_dsn, secrets))
    good = make_token(secrets.token_key, "op-1", 600)
    forged = make_token(b"x" * 32, "op-1", 600)
    expired = make_token(secrets.token_key, "op-1", -1)
    for token in (None, "nonsense", forged, expired, good[:-2] + "AA"):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        assert client.get("/api/trace", params={"q": "x"}, headers=headers).status_code == 401
    auth = {"Authorization": f"Bearer {good}"}
    assert client.get("/api/trace", params={"q": "x"}, headers=auth).json()["events"] == []
    assert client.get("/api/trace", params={"phone": "13800000000"}, headers=auth).status_code == 400
    assert client.get("/api/trace", params={"q": "y" * 500}, headers=auth).status_code == 422
    assert client.get("/api/health").json() == {"ok": True}


def test_a_phone_is_searched_by_its_keyed_hash(db: psycopg.Connection, fleet_dsn: str) -> None:
    from fleet.core import parse_message
    from fleet.store import ingest_batch
    from fleet.synth import ChainWriter
    from station.domain.phones import normalise_phone, phone_hash

    key = b"h" * 32
    recipient = phone_hash(normalise_phone("13912345678"), key)
    w = ChainWriter("st-ph")
    w.append("parcel.shelved", "pcl_1", "c0001", {"parcel_id": "pcl_1", "waybill": "SF1", "carrier": "SF",
                                                   "recipient_hash": recipient, "courier_id": "c0001"},
             1_790_000_000.0)
    ingest_batch(db, [parse_message(w.payload(r)) for r in w.records])
    secrets = FleetSecrets(token_key=b"k" * 32, hash_key=key)
    client = TestClient(create_app(fleet_dsn, secrets))
    auth = {"Authorization": "Bearer " + make_token(secrets.token_key, "op-1", 600)}
    found = client.get("/api/trace", params={"phone": "139 1234 5678"}, headers=auth).json()["events"]
    assert [e["type"] for e in found] == ["parcel.shelved"]
    assert "13912345678" not in str(found)
