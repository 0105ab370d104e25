"""#14.3: no PIN hash (nor any key) in the event log, its exports, upstream or API answers.

A courier's argon2 PIN hash used to travel in `courier.added`; a 4-digit PIN came back out of
an operator export in minutes. Now the event says that a PIN was set or changed and carries
the hash only sealed with the station's encryption key (ADR 0082), which replay copies into
the couriers table as it is, so the projections still rebuild exactly.

Against `station run`: enrol couriers, change a PIN, log in with old and new PINs, then search
every event row, the operator's JSON and CSV exports (HTTP and `station log export`), every
message the station forwarded to a (password-protected) fleet broker and every API answer for `$argon2` and for the station's keys
in any usual encoding. The sealed value opens with the station's key to a hash that verifies
the PIN (so the rebuild has what it needs), and a replayed database equals the live one.
"""

from __future__ import annotations

import base64
import json
import secrets as pysecrets
import sqlite3
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from argon2 import PasswordHasher
from paho.mqtt.enums import CallbackAPIVersion

from station.config import Secrets, UpstreamSection, dump_config_toml
from station.flows.pins import PREFIX, PinSeal
from station.mosquitto import MosquittoProcess
from station.store.eventlog import Event
from station.store.projections import dump_projections
from station.upstream import event_payload
from tests.flows.harness import make_station
from tests.reliability.harness import PY, ROOT, ProcStation, until

OLD_PIN, NEW_PIN, OTHER_PIN = "4821", "7306", "55512340"


def _key_needles(secrets: Secrets) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in ("device_master_key", "hash_key", "encryption_key", "token_key"):
        key = getattr(secrets, name)
        out[f"{name} raw"] = key
        out[f"{name} hex"] = key.hex().encode()
        out[f"{name} HEX"] = key.hex().upper().encode()
        out[f"{name} b64"] = base64.b64encode(key).rstrip(b"=")
        out[f"{name} b64url"] = base64.urlsafe_b64encode(key).rstrip(b"=")
    return out


class FleetBroker:
    """The fleet's broker, with its own users, and a reader of everything the station
    forwards: the upstream messages exactly as they leave the station."""

    def __init__(self, tmp: Path) -> None:
        pw = tmp / "fleet-passwd"
        self.users = {"fleet-st": pysecrets.token_hex(12), "fleet-reader": pysecrets.token_hex(12)}
        for n, (user, password) in enumerate(self.users.items()):
            subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if n == 0 else []), str(pw), user, password],
                           check=True, capture_output=True)
        pw.chmod(0o644)
        self.broker = MosquittoProcess(workdir=tmp / "fleet", extra_conf=[
            "allow_anonymous false", f"password_file {pw}"]).start()
        self.got: list[bytes] = []
        subscribed = threading.Event()
        self.reader = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-reader")
        self.reader.username_pw_set("fleet-reader", self.users["fleet-reader"])
        self.reader.on_connect = lambda c, *a: c.subscribe("ps/v1/+/station/events", qos=1)
        self.reader.on_subscribe = lambda *a: subscribed.set()
        self.reader.on_message = lambda c, u, msg: self.got.append(bytes(msg.payload))
        self.reader.connect(self.broker.host, self.broker.port)
        self.reader.loop_start()
        assert subscribed.wait(5)

    def route(self, ps: ProcStation) -> None:
        """Point the station's [upstream] here, with its own user (before `ps.start()`)."""
        cfg = ps.config.model_copy(update={"upstream": UpstreamSection(
            enabled=True, host=self.broker.host, port=self.broker.port, username="fleet-st", tls=False)})
        ps.config_path.write_text(dump_config_toml(cfg))
        with open(ps.secrets_path, "a") as fh:
            fh.write(f'upstream_password = "{self.users["fleet-st"]}"\n')

    def stop(self) -> None:
        self.reader.loop_stop()
        self.reader.disconnect()
        self.broker.stop()


def test_no_pin_hash_or_key_in_events_exports_upstream_or_answers(tmp_path: Path) -> None:
    answers: list[str] = []
    fleet = FleetBroker(tmp_path)
    with ProcStation(tmp_path / "st") as ps:
        fleet.route(ps)
        ps.start()

        def call(method: str, path: str, role: str | None = None, **kw):  # type: ignore[no-untyped-def]
            res = ps.api(method, path, role, **kw)
            answers.append(f"{method} {path} {res.status_code} {res.text}")
            return res

        for cid, pin in (("c1", OLD_PIN), ("c2", OTHER_PIN)):
            res = call("post", "/api/operator/couriers", "operator",
                       json={"courier_id": cid, "carrier": "SF", "name": "Li", "pin": pin})
            assert res.status_code == 201, res.text
            assert res.json()["pin_exposed"] is False
        assert call("post", "/api/courier/login", json={"courier_id": "c1", "pin": OLD_PIN}).status_code == 200
        res = call("post", "/api/operator/couriers/c1/pin", "operator", json={"pin": NEW_PIN})
        assert res.status_code == 200, res.text
        assert call("post", "/api/operator/couriers/nobody/pin", "operator",
                    json={"pin": NEW_PIN}).status_code == 404
        assert call("post", "/api/operator/couriers/c1/pin", "operator",
                    json={"pin": "12ab"}).status_code == 422
        assert call("post", "/api/courier/login", json={"courier_id": "c1", "pin": OLD_PIN}).status_code == 401
        assert call("post", "/api/courier/login", json={"courier_id": "c1", "pin": NEW_PIN}).status_code == 200
        assert call("post", "/api/kiosk/courier/pin", "kiosk",
                    json={"courier_id": "c2", "pin": OTHER_PIN}).status_code == 200
        call("get", "/api/operator/couriers", "operator")
        call("get", "/api/operator/events", "operator", params={"limit": 5000})
        call("get", "/api/operator/events", "operator", params={"type": "courier*"})
        call("get", "/api/operator/state", "operator")
        exports = {fmt: call("get", "/api/operator/events/export", "operator", params={"format": fmt}).text
                   for fmt in ("jsonl", "csv")}
        rows = ps.query("SELECT seq, type, data FROM events ORDER BY seq")
        couriers_row = [tuple(r) for r in ps.query("SELECT id, pin_hash FROM couriers ORDER BY id")]
        until(lambda: {json.loads(m)["seq"] for m in fleet.got} >= {r["seq"] for r in rows}, 20,
              "every event forwarded upstream")
    fleet.stop()
    # stopped: the log is complete, the WAL folded in
    out = tmp_path / "out"
    out.mkdir()
    db = str(ps.db_path)
    for fmt in ("jsonl", "csv"):
        res = subprocess.run([PY, "-m", "station.cli", "log", "export", "--db", db, "--format", fmt,
                              "--out", str(out / f"export.{fmt}")], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
        assert res.returncode == 0, res.stderr
    from station.store.eventlog import iter_events

    live = sqlite3.connect(db)
    upstream = b"\n".join(fleet.got)
    # the forwarder sends the payload event_payload builds: the same check covers any epoch
    assert all(b"$argon2" not in event_payload(ps.config.station.id, e) for e in iter_events(live))

    # the event says what happened to the PIN, and carries its hash only sealed
    changes = [json.loads(r["data"]) for r in rows if r["type"] in ("courier.added", "courier.pin.changed")]
    assert [d.get("pin") for d in changes] == ["set", "set", "changed"]
    assert all("pin_hash" not in d and d["pin_sealed"].startswith(PREFIX) for d in changes)
    seal, hasher = PinSeal(ps.secrets.encryption_key), PasswordHasher()
    assert hasher.verify(seal.open("c1", changes[2]["pin_sealed"]), NEW_PIN)
    assert dict(couriers_row) == {"c1": changes[2]["pin_sealed"], "c2": changes[1]["pin_sealed"]}

    places: dict[str, bytes] = {
        "events": "\n".join(f"{r['seq']} {r['type']} {r['data']}" for r in rows).encode(),
        "http export jsonl": exports["jsonl"].encode(),
        "http export csv": exports["csv"].encode(),
        "cli export jsonl": (out / "export.jsonl").read_bytes(),
        "cli export csv": (out / "export.csv").read_bytes(),
        "upstream payloads": upstream,
        "API answers": "\n".join(answers).encode(),
    }
    assert len(rows) > 10 and all(places.values())
    needles = {"argon2 hash": b"$argon2", **_key_needles(ps.secrets)}
    leaks = [f"{what} in {where}" for where, blob in places.items()
             for what, needle in needles.items() if needle in blob]
    assert not leaks, leaks

    # replay still rebuilds exactly the projections on disk
    res = subprocess.run([PY, "-m", "station.cli", "log", "replay", "--db", db, "--out", str(out / "replayed.db")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    replayed = sqlite3.connect(out / "replayed.db")
    assert dump_projections(replayed) == dump_projections(live)
    live.close()
    replayed.close()


def test_a_log_from_before_sealing_still_works_and_shows_which_pins_to_change(tmp_path: Path,
                                                                             secrets: Secrets) -> None:
    """Old logs hold `pin_hash` in clear. The chain is not rewritten (ADR 0082): the courier
    can still log in, is reported `pin_exposed`, and a new PIN ends the exposure (the old hash
    in the log is then the hash of a PIN that no longer opens anything)."""
    st = make_station(tmp_path, secrets)
    couriers = st.core.couriers
    with st.ctx.lock, st.store.transaction() as tx:  # what the old code wrote
        tx.emit(Event("courier.added", "old", "operator", {
            "courier_id": "old", "carrier": "SF", "name": "Old", "pin_hash": couriers.hasher.hash(OLD_PIN),
            "valid_from": None, "valid_until": None}))
    assert couriers.get("old").pin_exposed
    assert couriers.check_pin("old", OLD_PIN).id == "old"
    couriers.change_pin("old", NEW_PIN)
    assert not couriers.get("old").pin_exposed
    assert couriers.check_pin("old", NEW_PIN).id == "old"
    # a sealed value copied onto another courier's row does not open there
    sealed = st.store.query_one("SELECT pin_hash FROM couriers WHERE id = 'old'")["pin_hash"]
    couriers.add("c9", "SF", "Nine", OTHER_PIN)
    with st.ctx.lock, st.store.transaction() as tx:
        tx.execute("UPDATE couriers SET pin_hash = ? WHERE id = 'c9'", (sealed,))
    try:
        couriers.check_pin("c9", NEW_PIN)
    except Exception as exc:  # noqa: BLE001 - the flow's AuthFailed
        assert getattr(exc, "code", "") == "wrong_pin"
    else:
        raise AssertionError("a sealed PIN hash opened on another courier's row")
    st.store.close()


def test_the_command_line_changes_a_pin_and_lists_pins_as_sealed(tmp_path: Path) -> None:
    """`station courier pin` is the operator's remedy for an exposed PIN (ADR 0082)."""
    from tests.test_cli import EXAMPLE, run

    config = tmp_path / "station.toml"
    config.write_text(EXAMPLE.replace('database = "var/station.db"', f'database = "{tmp_path / "st.db"}"'))
    secrets_path = tmp_path / "secrets.toml"
    from station.config import load_secrets, write_new_secrets

    write_new_secrets(secrets_path)
    added = run("courier", "add", "c-1", "--carrier", "SF", "--name", "Li", "--config", str(config),
                env_secrets=secrets_path)
    assert added.returncode == 0, added.stderr
    changed = run("courier", "pin", "c-1", "--pin", NEW_PIN, "--config", str(config), env_secrets=secrets_path)
    assert changed.returncode == 0 and "new PIN" in changed.stdout, changed.stderr
    missing = run("courier", "pin", "nobody", "--pin", NEW_PIN, "--config", str(config), env_secrets=secrets_path)
    assert missing.returncode == 2 and "no courier nobody" in missing.stderr and "Traceback" not in missing.stderr
    listed = run("courier", "list", "--config", str(config), env_secrets=secrets_path)
    assert "sealed" in listed.stdout and "EXPOSED" not in listed.stdout, listed.stdout
    log = run("log", "export", "--config", str(config), "--type", "courier.*")
    assert [json.loads(line)["type"] for line in log.stdout.splitlines()] == ["courier.added", "courier.pin.changed"]
    assert "$argon2" not in log.stdout and NEW_PIN not in log.stdout
    secrets = load_secrets(secrets_path, env={})
    sealed = json.loads(log.stdout.splitlines()[1])["data"]["pin_sealed"]
    assert PasswordHasher().verify(PinSeal(secrets.encryption_key).open("c-1", sealed), NEW_PIN)
