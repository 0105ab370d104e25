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
from collections.abc import Iterator
from contextlib import contextmanager
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
COMPROMISED = "shelf-out"  # the outbound shelf: no pickup in these tests lights it


WATCH_USER = "ps-watch"  # a read-only observer of every topic (test only, not in the example)


def _example_conf(pw: Path, acl: Path) -> list[str]:
    """examples/mosquitto-acl/mosquitto.conf as it ships, with this test's files and port
    (persistence as MosquittoProcess sets it: on, in the broker's own directory)."""
    own = ("listener", "password_file", "acl_file", "persistence", "persistence_location",
           "autosave_interval")
    lines = [line for line in (ACL_DIR / "mosquitto.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#") and line.split()[0] not in own]
    return [*lines, f"password_file {pw}", f"acl_file {acl}"]


def _broker(tmp: Path, passwords: dict[str, str], station_id: str) -> MosquittoProcess:
    pw = tmp / "passwd"
    for n, (user, password) in enumerate(passwords.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if n == 0 else []), str(pw), user, password],
                       check=True, capture_output=True)
    acl = tmp / "acl"
    acl.write_text((ACL_DIR / "acl").read_text().replace("st-demo", station_id)
                   + f"\nuser {WATCH_USER}\ntopic read ps/v1/#\n")
    pw.chmod(0o644)
    acl.chmod(0o644)
    conf = _example_conf(pw, acl)
    assert "use_username_as_clientid true" in conf and "allow_anonymous false" in conf
    return MosquittoProcess(workdir=tmp / "mosquitto", extra_conf=conf).start()


@contextmanager
def _room(tmp_path: Path) -> Iterator[tuple[ProcStation, MosquittoProcess, dict[str, str]]]:
    """A station and its controllers, each logged in with its own user name and password."""
    station_pw = pysecrets.token_hex(16)
    secrets_path = tmp_path / "st" / "secrets.toml"
    secrets_path.parent.mkdir(parents=True)
    write_new_secrets(secrets_path)
    with open(secrets_path, "a") as fh:
        fh.write(f'mqtt_password = "{station_pw}"\n')
    device_pw = {d: pysecrets.token_hex(16) for d in ("shelf-1", "shelf-2", "shelf-out", "door-entry", "door-exit")}
    device_pw[WATCH_USER] = pysecrets.token_hex(16)
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
            yield ps, broker, device_pw
    finally:
        broker.stop()


class Client:
    def __init__(self, port: int, user: str | None, password: str | None, client_id: str | None = None,
                 will: tuple[str, bytes] | None = None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.rc: object = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"attacker-{pysecrets.token_hex(3)}")
        if user:
            self.c.username_pw_set(user, password)
        if will:
            self.c.will_set(will[0], will[1], qos=1, retain=True)

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

    def drop(self) -> None:
        """Lose the link without DISCONNECT, as a crashed or unplugged device would: the
        broker then publishes the client's last will, if it accepted one."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.close()


def _events(ps: ProcStation, sql_type: str, subject: str) -> int:
    return ps.query("SELECT COUNT(*) n FROM events WHERE type = ? AND subject = ?",
                    (sql_type, subject))[0]["n"]


def _compromise(ps: ProcStation, device: str) -> None:
    """The attacker has the controller: its firmware is off, its password is theirs. (Left
    running, the genuine firmware and the attacker would take the one session of that user
    name from each other in turn, which is the point of use_username_as_clientid.)"""
    ctrl = ps.controller(device)
    ctrl.stop()
    ps.devices.remove(ctrl)


def test_acl_lets_the_station_work_and_stops_a_compromised_shelf(tmp_path: Path) -> None:
    with _room(tmp_path) as (ps, broker, device_pw):
        sid = ps.config.station.id
        parcels = shelve(ps, [("SF0000000000001", "13900000001")])  # the ACL admits real work
        _compromise(ps, COMPROMISED)

        rogue = Client(broker.port, COMPROMISED, device_pw[COMPROMISED])
        assert rogue.connected.wait(5), rogue.rc
        rogue.c.subscribe("ps/v1/#", qos=1)
        time.sleep(0.3)
        seen_before = len(rogue.received)

        bad_before = {d: _events(ps, "device.bad_message", d) for d in (COMPROMISED, "shelf-2")}
        offline_before = _events(ps, "device.offline", "door-entry")
        # pose as shelf-2, kill the door's availability, command the door
        rogue.publish(f"ps/v1/{sid}/shelf-2/evt", b'{"v": 1, "t": "evt", "junk": true}')
        rogue.publish(f"ps/v1/{sid}/door-entry/avail", b"offline", retain=True)
        rogue.publish(f"ps/v1/{sid}/door-entry/cmd", json.dumps(
            {"v": 1, "t": "cmd", "op": "unlock", "device": "door-entry"}).encode())
        # positive control: its own topic is open to it, and the station notices junk there
        rogue.publish(f"ps/v1/{sid}/{COMPROMISED}/evt", b"junk from the compromised shelf")
        until(lambda: _events(ps, "device.bad_message", COMPROMISED) > bad_before[COMPROMISED], 10,
              "the positive control reached the station")

        assert _events(ps, "device.bad_message", "shelf-2") == bad_before["shelf-2"], "posed as shelf-2"
        assert _events(ps, "device.offline", "door-entry") == offline_before, "marked the door offline"
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
        for user, password in ((None, None), (COMPROMISED, "wrong"), ("door-entry", device_pw[COMPROMISED])):
            c = Client(broker.port, user, password)
            assert not c.connected.wait(1.5), f"{user} connected"
            c.close()
        assert ps.verify_log().returncode == 0


def test_a_shelfs_password_with_the_doors_client_id_cannot_take_the_door_over(tmp_path: Path) -> None:
    """#14.6: the shelf's credentials under the entry door's client id. Without
    use_username_as_clientid the broker hands the door's session to the attacker: it
    disconnects the door and publishes the door's last will, "offline", retained, and the
    station refuses customers with `door_offline`. With it, the attacker is only the shelf
    again: the door's link never drops, nothing it publishes reaches the door's topics, and
    its own last will on the door's topic is refused too."""
    with _room(tmp_path) as (ps, broker, device_pw):
        sid = ps.config.station.id
        parcels = shelve(ps, [("SF0000000000002", "13900000002")])
        door = ps.controller("door-entry")
        drops: list[object] = []
        genuine_on_disconnect = door._client.on_disconnect

        def counting(*args: object) -> None:
            drops.append(args)
            genuine_on_disconnect(*args)

        door._client.on_disconnect = counting
        watcher = Client(broker.port, WATCH_USER, device_pw[WATCH_USER])
        assert watcher.connected.wait(5), watcher.rc
        watcher.c.subscribe(f"ps/v1/{sid}/door-entry/#", qos=1)
        until(lambda: (f"ps/v1/{sid}/door-entry/avail", b"online") in watcher.received, 5,
              "the watcher sees the door online")
        _compromise(ps, COMPROMISED)
        offline_before = _events(ps, "device.offline", "door-entry")
        bad_before = _events(ps, "device.bad_message", "door-entry")
        seen = len(watcher.received)

        door_topic = f"ps/v1/{sid}/door-entry"
        for _ in range(3):  # the takeover, repeated as an attacker would
            rogue = Client(broker.port, COMPROMISED, device_pw[COMPROMISED], client_id=door.client_id,
                           will=(f"{door_topic}/avail", b"offline"))
            assert rogue.connected.wait(5), rogue.rc  # the broker takes it, as the shelf
            rogue.publish(f"{door_topic}/avail", b"offline", retain=True)
            rogue.publish(f"{door_topic}/state", b'{"v": 1, "t": "state", "junk": true}', retain=True)
            rogue.publish(f"{door_topic}/evt", b'{"v": 1, "t": "evt", "junk": true}')
            rogue.publish(f"ps/v1/{sid}/{COMPROMISED}/evt", b"junk: positive control")
            rogue.drop()  # no DISCONNECT: the broker fires whatever will it accepted
        until(lambda: _events(ps, "device.bad_message", COMPROMISED) > 0, 10,
              "the positive control reached the station")
        time.sleep(0.5)  # a will is published at once on a dropped link; leave it time to arrive

        assert not drops, f"the entry door was disconnected {len(drops)} times"
        assert door.connected.is_set()
        got = [(t, p) for t, p in watcher.received[seen:]]
        assert not got, f"the attacker published on the door's topics: {got}"
        assert _events(ps, "device.offline", "door-entry") == offline_before
        assert _events(ps, "device.bad_message", "door-entry") == bad_before
        assert "door-entry" in ps.online_devices()
        res = ps.api("post", "/api/kiosk/code", "kiosk", json={"code": parcels["SF0000000000002"]["code"]})
        assert res.status_code == 200 and res.json()["door"] == "unlocked", res.text
        watcher.close()
        assert ps.verify_log().returncode == 0


def test_a_credentialed_embedded_broker_ties_client_ids_to_user_names(tmp_path: Path) -> None:
    """station/mosquitto.py gives any broker with a password file the same protection as the
    example (unless the caller says otherwise), and leaves an anonymous test broker as it is."""
    creds = MosquittoProcess(workdir=tmp_path / "a", extra_conf=["allow_anonymous false",
                                                                  f"password_file {tmp_path / 'pw'}"])
    assert "use_username_as_clientid true" in creds.write_conf().read_text().splitlines()
    explicit = MosquittoProcess(workdir=tmp_path / "b", extra_conf=[
        f"password_file {tmp_path / 'pw'}", "use_username_as_clientid false"])
    assert "use_username_as_clientid true" not in explicit.write_conf().read_text()
    anonymous = MosquittoProcess(workdir=tmp_path / "c")
    assert "use_username_as_clientid" not in anonymous.write_conf().read_text()
