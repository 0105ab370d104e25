"""Three real `station run` processes forward over one real fleet Mosquitto (with a login
per station) into the real fleet: every station's chain verified, a waybill traced across
stations, the stations page's API showing each one (issue 15 items 5-6)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient

from fleet.config import FleetSecrets
from fleet.ingest import Ingest
from fleet.store import fleet_alarms, verify_station
from fleet.web import create_app, make_token
from station.config import dump_config_toml, load_config
from station.mosquitto import MosquittoProcess
from tests.reliability.harness import ProcStation, shelve

from .support import until, verified

STATIONS = ("st-a", "st-b", "st-c")


def _fleet_broker(tmp: Path) -> MosquittoProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    pw = tmp / "passwd"
    for i, user in enumerate((*STATIONS, "fleet")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user, f"pw-{user}"],
                       check=True, capture_output=True)
    acl = tmp / "acl"
    acl.write_text("user fleet\ntopic read ps/v1/+/station/events\ntopic read ps/v1/+/station/head\n"
                   "topic write ps/v1/+/station/resend\n\n"
                   "pattern write ps/v1/%u/station/events\npattern write ps/v1/%u/station/head\n"
                   "pattern read ps/v1/%u/station/resend\n")
    return MosquittoProcess(workdir=tmp, extra_conf=[
        "allow_anonymous false", f"password_file {pw}", f"acl_file {acl}", "persistence true",
        f"persistence_location {tmp}/", "max_queued_messages 100000"])


def _with_upstream(ps: ProcStation, broker: MosquittoProcess) -> None:
    sid = ps.config.station.id
    up = ps.config.upstream.model_copy(update={"enabled": True, "host": broker.host, "port": broker.port,
                                               "username": sid, "tls": False})
    ps.config = ps.config.model_copy(update={"upstream": up})
    ps.config_path.write_text(dump_config_toml(ps.config))
    load_config(ps.config_path)
    with ps.secrets_path.open("a") as fh:
        fh.write(f'upstream_password = "pw-{sid}"\n')


def test_three_stations_forward_into_one_fleet(tmp_path: Path, fleet_dsn: str) -> None:
    with _fleet_broker(tmp_path / "fleet-broker") as broker:
        ingest = Ingest(fleet_dsn, broker.host, broker.port, client_id="fleet-e2e",
                        username="fleet", password="pw-fleet").start()
        assert ingest.subscribed.wait(10)
        procs = [ProcStation(tmp_path / sid, id=sid) for sid in STATIONS]
        try:
            for ps in procs:
                _with_upstream(ps, broker)
                ps.__enter__()
                ps.start()
            shelved = {}
            for i, ps in enumerate(procs):
                parcels = [(f"SF{7000000000000 + i * 10 + n}", f"1380000{i}{n:03d}") for n in range(3)]
                if i < 2:
                    parcels.append(("SF9999999999999", f"13900000{i}01"))  # one waybill, two stations
                shelved[ps.config.station.id] = shelve(ps, parcels)
            lasts = {ps.config.station.id: ps.query("SELECT max(seq) AS s FROM events")[0]["s"] for ps in procs}
            for sid, last in lasts.items():
                until(lambda sid=sid, last=last: verified(fleet_dsn, sid) >= last, 60, f"{sid} in the fleet")
        finally:
            for ps in procs:
                ps.__exit__(None, None, None)
            ingest.stop()
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        assert fleet_alarms(conn, open_only=False) == []
        for sid in STATIONS:
            ok, checked, problem = verify_station(conn, sid)
            assert ok and checked >= lasts[sid], problem
    secrets = FleetSecrets(token_key=b"k" * 32)
    client = TestClient(create_app(fleet_dsn, secrets))
    auth = {"Authorization": "Bearer " + make_token(secrets.token_key, "op-1", 600)}
    assert client.get("/api/stations").status_code == 401
    rows = client.get("/api/stations", headers=auth).json()["stations"]
    assert sorted(r["station"] for r in rows) == list(STATIONS)
    by_id = {r["station"]: r for r in rows}
    assert by_id["st-a"]["occupancy"] == 4 and by_id["st-c"]["occupancy"] == 3
    assert all(r["online"] and r["gap"] is None for r in rows)
    story = client.get("/api/trace", params={"q": "SF9999999999999"}, headers=auth).json()["events"]
    assert {e["station"] for e in story} == {"st-a", "st-b"}
    assert [e["type"] for e in story if e["station"] == "st-a"][:2] == ["parcel.scanned", "parcel.shelved"]
    assert [e["ts"] for e in story] == sorted(e["ts"] for e in story)
    assert "c1" in {e["actor"] for e in story}
    for text in (str(story), str(rows)):  # no code, phone or PIN in what the fleet shows
        for parcels in shelved.values():
            for p in parcels.values():
                assert p["code"] not in text and p["phone"] not in text
    page = client.get("/")
    assert page.status_code == 200 and "/api/stations" in page.text
