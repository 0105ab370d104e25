"""The broker configuration of examples/mosquitto-acl: per-device passwords and an ACL.

A real station (`station run`) and its controllers log in with their own credentials and
work normally. Then a compromised shelf (shelf-1's user name and password in an attacker's
client) tries what a rogue device would: pose as shelf-2, mark the entry door offline
(availability messages are unsigned by nature), send the door a command, and listen to the
door's commands. The broker must stop all of it. A positive control (shelf-1 writing junk on
its own topic, which the station does log) shows the test would see a message that got
through. Anonymous clients and wrong passwords are refused at the door of the broker.
"""

from __future__ import annotations

import json
import secrets as pysecrets
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware_stubs.door import DoorController
from firmware_stubs.shelf import ShelfController
from station.config import write_new_secrets
from station.mosquitto import MosquittoProcess
from tests.reliability.harness import ROOT, ProcStation, shelve, until

ACL_DIR = ROOT / "examples" / "mosquitto-acl"
STATION_USER = "ps-station"


def _broker(tmp: Path, passwords: dict[str, str], station_id: str) -> MosquittoProcess:
    pw = tmp / "passwd"
    for n, (user, password) in enumerate(passwords.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if n == 0 else []), str(pw), user, password],
                       check=True, capture_output=True)
    acl = tmp / "acl"
    acl.write_text((ACL_DIR / "acl").read_text().replace("st-demo", station_id))
    pw.chmod(0o644)
    acl.chmod(0o644)
    return MosquittoProcess(workdir=tmp / "mosquitto", extra_conf=[
        "allow_anonymous false", f"password_file {pw}", f"acl_file {acl}"]).start()


class Client:
    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.rc: object = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"attacker-{pysecrets.token_hex(3)}")
        if user:
            self.c.username_pw_set(user, password)

        def on_connect(client, userdata, flags, rc, props):  # type: ignore[no-untyped-def]
            self.rc = rc
            if not rc.is_failure:
                self.connected.set()

        self.c.on_connect = on_connect
        self.c.on_message = lambda client, userdata, msg: self.received.append((msg.topic, bytes(msg.payload)))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_acl_lets_the_station_work_and_stops_a_compromised_shelf(tmp_path: Path) -> None:
    station_pw = pysecrets.token_hex(16)
    secrets_path = tmp_path / "st" / "secrets.toml"
    secrets_path.parent.mkdir(parents=True)
    write_new_secrets(secrets_path)
    with open(secrets_path, "a") as fh:
        fh.write(f'mqtt_password = "{station_pw}"\n')
    device_pw = {d: pysecrets.token_hex(16) for d in ("shelf-1", "shelf-2", "shelf-out", "door-entry", "door-exit")}
    broker = _broker(tmp_path, {STATION_USER: station_pw, **device_pw}, "st-demo")
    try:
        with ProcStation(tmp_path / "st", broker=broker, devices=False,
                         mqtt={"username": STATION_USER}) as ps:
            sid = ps.config.station.id
            for shelf in ps.config.shelves:
                ps.devices.append(ShelfController(
                    sid, shelf.device, shelf.rows, shelf.columns, ps.secrets.device_key(sid, shelf.device),
                    broker.url, nv_path=str(tmp_path / f"{shelf.device}.json"), trust_host_clock=True,
                    username=shelf.device, password=device_pw[shelf.device]))
            for door in (ps.config.doors.entry, ps.config.doors.exit):
                ps.devices.append(DoorController(
                    sid, door, ps.secrets.device_key(sid, door), broker.url,
                    nv_path=str(tmp_path / f"{door}.json"), trust_host_clock=True,
                    username=door, password=device_pw[door]))
            for d in ps.devices:
                d.start()
            ps.with_devices = True
            ps.start()
            parcels = shelve(ps, [("SF0000000000001", "13900000001")])  # the ACL admits real work

            rogue = Client(broker.port, "shelf-1", device_pw["shelf-1"])
            assert rogue.connected.wait(5), rogue.rc
            rogue.c.subscribe("ps/v1/#", qos=1)
            time.sleep(0.3)
            seen_before = len(rogue.received)

            def events(sql_type: str, subject: str) -> int:
                return ps.query("SELECT COUNT(*) n FROM events WHERE type = ? AND subject = ?",
                                (sql_type, subject))[0]["n"]

            bad_before = {d: events("device.bad_message", d) for d in ("shelf-1", "shelf-2")}
            offline_before = events("device.offline", "door-entry")
            # pose as shelf-2, kill the door's availability, command the door
            rogue.publish(f"ps/v1/{sid}/shelf-2/evt", b'{"v": 1, "t": "evt", "junk": true}')
            rogue.publish(f"ps/v1/{sid}/door-entry/avail", b"offline", retain=True)
            rogue.publish(f"ps/v1/{sid}/door-entry/cmd", json.dumps(
                {"v": 1, "t": "cmd", "op": "unlock", "device": "door-entry"}).encode())
            # positive control: its own topic is open to it, and the station notices junk there
            rogue.publish(f"ps/v1/{sid}/shelf-1/evt", b"junk from the compromised shelf")
            until(lambda: events("device.bad_message", "shelf-1") > bad_before["shelf-1"], 10,
                  "the positive control reached the station")

            assert events("device.bad_message", "shelf-2") == bad_before["shelf-2"], "posed as shelf-2"
            assert events("device.offline", "door-entry") == offline_before, "marked the door offline"
            assert "door-entry" in ps.online_devices()
            assert not ps.query("SELECT 1 FROM events WHERE type = 'command.refused' AND subject = 'door-entry'"), \
                "the rogue's command reached the door"

            # a customer enters: the door's command is not readable by the shelf's credentials
            res = ps.api("post", "/api/kiosk/code", "kiosk", json={"code": parcels["SF0000000000001"]["code"]})
            assert res.status_code == 200 and res.json()["door"] == "unlocked", res.text
            time.sleep(0.3)
            leaked = [t for t, _ in rogue.received[seen_before:] if "/door-" in t or "/shelf-2/" in t]
            assert not leaked, leaked
            rogue.close()

            # no credentials, or wrong ones: no connection at all
            for user, password in ((None, None), ("shelf-1", "wrong"), ("door-entry", device_pw["shelf-1"])):
                c = Client(broker.port, user, password)
                assert not c.connected.wait(1.5), f"{user} connected"
                c.close()
            assert ps.verify_log().returncode == 0
    finally:
        broker.stop()
