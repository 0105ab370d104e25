"""A flood of forged, malformed and replayed courier bundles at a real station over the
real broker (DESIGN §9, ADR 0134): each cause writes exactly one event while the flood
lasts (one interval) and one more with the count at stop, the counts add up to every
message sent, the service log grows by the same few lines, and the station still applies
the fleet's next good bundle."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from station.bundles import bundle_topic, public_hex, seal_bundle
from station.mosquitto import MosquittoProcess
from tests.reliability.harness import ProcStation, until

PER_CAUSE = 150


def _courier(active: bool = True) -> dict[str, object]:
    from argon2 import PasswordHasher

    return {"id": "f1", "carrier": "SF", "name": "Fleet Li", "active": active,
            "pin_hash": PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("2468")}


def _refused(ps: ProcStation) -> list[dict[str, object]]:
    return [json.loads(r["data"]) for r in ps.query(
        "SELECT data FROM events WHERE type = 'courier.bundle.refused' ORDER BY seq")]


def test_a_flood_of_bad_bundles_writes_one_event_per_cause_and_a_count(tmp_path: Path) -> None:
    fleet = Ed25519PrivateKey.generate()
    with MosquittoProcess(workdir=tmp_path / "broker") as broker, \
            ProcStation(tmp_path / "st", broker=broker, devices=False, webhook=False, id="st-a", sections={
                "upstream": {"host": "127.0.0.1", "port": broker.port, "tls": False, "client_id": "st-a-up"},
                "bundles": {"enabled": True, "trusted_keys": [public_hex(fleet.public_key())],
                            "refused_log_interval_s": 3600.0}}) as ps:
        ps.start(wait_devices=False, timeout=120)
        pub = X25519PublicKey.from_public_bytes(bytes.fromhex(ps.cli("bundle", "pubkey").stdout.strip()))
        topic = bundle_topic("st-a")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="attacker")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            def send(raw: bytes) -> None:
                client.publish(topic, raw, qos=1).wait_for_publish(10)

            send(seal_bundle("st-a", 5, time.time(), [_courier()], pub, fleet))  # the fleet's good one
            until(lambda: ps.query("SELECT 1 FROM couriers WHERE id = 'f1'"), 30, "the good bundle applied")
            log_before = len(ps.log_tail(10**7))
            older = seal_bundle("st-a", 4, time.time(), [_courier()], pub, fleet)          # replayed, older
            same = seal_bundle("st-a", 5, time.time(), [_courier()], pub, fleet)           # replayed, same
            forged = seal_bundle("st-a", 99, time.time(), [_courier()], pub, Ed25519PrivateKey.generate())
            claimed = json.loads(forged)
            claimed["kid"] = json.loads(older)["kid"]  # names the trusted key, signed by another
            causes = {"older": older, "untrusted_key": forged, "bad_signature": json.dumps(claimed).encode(),
                      "malformed": os.urandom(300)}
            for _ in range(PER_CAUSE):
                for raw in (*causes.values(), same):
                    send(raw)
            # one topic, one subscriber: once the next good bundle is in, the flood has been read
            send(seal_bundle("st-a", 6, time.time(), [_courier(active=False)], pub, fleet))
            until(lambda: ps.query("SELECT 1 FROM couriers WHERE id = 'f1' AND active = 0"), 60,
                  "the next good bundle applied after the flood")
            during = _refused(ps)
            assert sorted(r["reason"] for r in during) == sorted(causes)   # exactly one per cause
            assert all(r["count"] == 1 for r in during)
            flood_log = ps.log_tail(10**7)[log_before:]
            assert flood_log.count("courier bundle refused") == len(causes)
        finally:
            client.loop_stop()
            client.disconnect()
        assert ps.proc is not None
        ps.proc.terminate()   # the station stops: the counts of the open interval are written
        assert ps.proc.wait(30) == 0
        after = _refused(ps)
        for cause in causes:
            mine = [r for r in after if r["reason"] == cause]
            assert [r["count"] for r in mine] == [1, PER_CAUSE - 1], (cause, mine)
        assert len(after) == 2 * len(causes)
        assert "replayed" not in {r["reason"] for r in after}  # the same version again is nothing new
        assert ps.verify_log().returncode == 0
