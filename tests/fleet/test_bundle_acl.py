"""The fleet broker's ACL is the fence in front of the bundle topic (ADR 0131, 0134): with
the ACL of docs/fleet.md, only the fleet's publisher writes `ps/v1/<station>/fleet/couriers`;
another station's login (or a station's own) cannot put a bundle there, so the station sees
no refusal at all and the retained bundle stays the fleet's."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from fleet import couriers as registry
from fleet.bundles import Publisher
from station.bundles import bundle_topic, public_hex, seal_bundle
from station.mosquitto import MosquittoProcess
from tests.reliability.harness import ProcStation, until

ACL = ("user fleet\ntopic read ps/v1/+/station/events\ntopic read ps/v1/+/station/head\n"
       "topic write ps/v1/+/station/resend\ntopic write ps/v1/+/fleet/couriers\n\n"
       "pattern write ps/v1/%u/station/events\npattern write ps/v1/%u/station/head\n"
       "pattern read ps/v1/%u/station/resend\npattern read ps/v1/%u/fleet/couriers\n")


def _broker(tmp: Path) -> MosquittoProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    pw = tmp / "passwd"
    for i, user in enumerate(("st-a", "st-b", "fleet")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user, f"pw-{user}"],
                       check=True, capture_output=True)
    (tmp / "acl").write_text(ACL)
    return MosquittoProcess(workdir=tmp, extra_conf=["allow_anonymous false", f"password_file {pw}",
                                                     f"acl_file {tmp / 'acl'}"])


def test_only_the_fleet_writes_a_stations_bundle_topic(tmp_path: Path, fleet_dsn: str) -> None:
    fleet_key = Ed25519PrivateKey.generate()
    with _broker(tmp_path / "fleet-broker") as broker, \
            ProcStation(tmp_path / "a", devices=False, webhook=False, id="st-a", sections={
                "upstream": {"host": "127.0.0.1", "port": broker.port, "tls": False, "username": "st-a"},
                "bundles": {"enabled": True, "trusted_keys": [public_hex(fleet_key.public_key())]}}) as a:
        with a.secrets_path.open("a") as fh:
            fh.write('upstream_password = "pw-st-a"\n')
        a.start(timeout=120)
        station_pub = a.cli("bundle", "pubkey").stdout.strip()
        with psycopg.connect(fleet_dsn, autocommit=True) as conn:
            registry.create_tables(conn)
            registry.set_station_key(conn, "st-a", station_pub)
            registry.add(conn, "f1", "SF", "Fleet Li", "2468", ["st-a"])
        pub = Publisher(fleet_dsn, broker.url, fleet_key, "fleet", "pw-fleet")
        try:
            assert pub.publish_due() == 1
            until(lambda: a.query("SELECT 1 FROM couriers WHERE id = 'f1'"), 30, "the fleet's bundle applied")
            # st-b's login, and st-a's own, try to put bundles on st-a's topic: the broker drops them
            seal_pub = X25519PublicKey.from_public_bytes(bytes.fromhex(station_pub))
            for user in ("st-b", "st-a"):
                c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-forger")
                c.username_pw_set(user, f"pw-{user}")
                c.connect("127.0.0.1", broker.port)
                c.loop_start()
                for raw in (b"garbage", seal_bundle("st-a", 50, time.time(), [], seal_pub,
                                                    Ed25519PrivateKey.generate())):
                    c.publish(bundle_topic("st-a"), raw, qos=1, retain=True).wait_for_publish(10)
                c.loop_stop()
                c.disconnect()
            with psycopg.connect(fleet_dsn, autocommit=True) as conn:
                registry.set_active(conn, "f1", False)
            assert pub.publish_due() == 1   # the fleet's next bundle, after the attempts
            until(lambda: a.query("SELECT 1 FROM couriers WHERE id = 'f1' AND active = 0"), 30,
                  "the fleet's next bundle applied")
        finally:
            pub.stop()
        assert a.query("SELECT 1 FROM events WHERE type = 'courier.bundle.refused'") == []
        assert [json.loads(r["data"])["version"] for r in a.query(
            "SELECT data FROM events WHERE type = 'courier.bundle.applied' ORDER BY seq")] == [1, 2]
