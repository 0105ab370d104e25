"""Face enrolment once, at the fleet (#20.2, ADR 0132): photos become templates with the
station's own encoder, kept encrypted in PostgreSQL, sealed in the bundle for each station,
applied there with the bundle, and the courier walks in by face at that station through
the real kiosk route. A bad photo is one clear error, from the CLI and from the API."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from fleet import couriers as registry
from fleet.bundles import keygen
from fleet.config import FleetSecrets, generate_fleet_secrets_toml, load_template_key
from fleet.web import create_app, make_token
from station.bundles import bundle_topic, encode_template
from station.mosquitto import MosquittoProcess
from tests.fleet.test_courier_bundles import PIN, WITHIN_S, _retained
from tests.reliability.harness import ProcStation, until
from tests.support.testdata import face_file

ROOT = Path(__file__).resolve().parents[2]


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)


def _portrait(name: str) -> np.ndarray:
    image = cv2.imread(str(face_file(f"faces/{name}.png")))
    assert image is not None
    return image


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(buf)


def _faces_at_rest(dsn: str, courier: str) -> list[bytes]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [bytes(r[0]) for r in conn.execute(
            "SELECT template FROM fleet_courier_faces WHERE courier_id = %s ORDER BY idx", (courier,)).fetchall()]


def test_a_face_enrolled_at_the_fleet_opens_the_station_door(tmp_path: Path, fleet_dsn: str) -> None:
    from shelf_sim.blinks import live_sequence, still_sequence
    from station.vision.faces import FaceEngine

    secrets_file = tmp_path / "fleet-secrets.toml"
    secrets_file.write_text(generate_fleet_secrets_toml())
    key_file = tmp_path / "signing.pem"
    trusted = keygen(key_file)
    photos = {name: face_file(f"faces/{name}.png") for name in ("obama-1", "obama-3", "biden-1")}
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG this is not an image")
    with MosquittoProcess(workdir=tmp_path / "broker") as broker, \
            ProcStation(tmp_path / "a", broker=broker, webhook=False, id="st-a", sections={
                "upstream": {"host": "127.0.0.1", "port": broker.port, "tls": False, "client_id": "st-a-up"},
                "bundles": {"enabled": True, "trusted_key": trusted}}) as a:
        a.start(timeout=120)
        with psycopg.connect(fleet_dsn, autocommit=True) as conn:
            registry.create_tables(conn)
            registry.set_station_key(conn, "st-a", a.cli("bundle", "pubkey").stdout.strip())
            registry.add(conn, "f1", "SF", "Fleet Li", PIN, ["st-a"])
        common = ("--dsn", fleet_dsn, "--secrets", str(secrets_file))

        # bad photos: one clear line each, exit 2, nothing stored
        for args, says in (((str(broken),), "photo 1: image:"),
                           ((str(photos["obama-1"]), str(photos["biden-1"])), "consistency: face differs"),
                           ((str(tmp_path / "missing.jpg"),), "missing.jpg: cannot read")):
            done = fleet("courier", *common, "enrol", "f1", "--face", *args)
            assert done.returncode == 2 and done.stderr.startswith("error: ") and says in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
        assert fleet("courier", *common, "enrol", "nobody", "--face", str(photos["obama-1"])).returncode == 2
        assert _faces_at_rest(fleet_dsn, "f1") == []

        done = fleet("courier", *common, "enrol", "f1", "--face", str(photos["obama-1"]), str(photos["obama-3"]))
        assert done.returncode == 0, done.stderr
        # at rest: ciphertext only, and not under another courier's id
        stored = _faces_at_rest(fleet_dsn, "f1")
        assert len(stored) == 2
        cipher = registry.template_cipher(load_template_key(secrets_file))
        clear = [cipher.decrypt(b, "f1")[0] for b in stored]
        for blob, row in zip(stored, clear, strict=True):
            assert row.astype("<f4").tobytes()[:64] not in blob
        listed = [json.loads(line) for line in fleet("courier", "--dsn", fleet_dsn, "list").stdout.splitlines()
                  if line.startswith("{")]
        assert listed == [{"id": "f1", "carrier": "SF", "name": "Fleet Li", "active": True, "stations": ["st-a"],
                           "face_enrolled": True}]

        publisher = subprocess.Popen(
            [sys.executable, "-m", "fleet.cli", "bundles", "run", "--dsn", fleet_dsn, "--broker", broker.url,
             "--signing-key", str(key_file), "--secrets", str(secrets_file), "--interval", "0.5"],
            cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            until(lambda: a.query("SELECT has_face FROM couriers WHERE id = 'f1' AND has_face = 1"), WITHIN_S,
                  "the face at the station")
            # on the broker: neither the templates nor anything else of the courier in clear
            raw = _retained(broker, bundle_topic("st-a"))
            assert encode_template(clear[0]).encode()[:40] not in raw and b"Fleet Li" not in raw
            applied = a.query("SELECT seq, data FROM events WHERE type = 'courier.bundle.applied'")
            enrolled = a.query("SELECT seq, actor, data FROM events WHERE type = 'courier.face.enrolled'")
            assert len(enrolled) == 1 and enrolled[0]["actor"] == "fleet"
            assert json.loads(enrolled[0]["data"])["templates"] == 2
            assert enrolled[0]["seq"] < applied[-1]["seq"]   # one transaction with the bundle
            assert len(a.query("SELECT 1 FROM face_templates WHERE courier_id = 'f1'")) == 2

            # the real entry path: frames from the kiosk, a live face, the door opens
            face = _portrait("obama-2")
            landmarks = FaceEngine().analyse(face, landmarks=True)[0].landmarks

            def frames(seq: list[np.ndarray]) -> dict[str, list[str]]:
                return {"frames": [base64.b64encode(_jpeg(f)).decode() for f in seq]}

            kiosk = {"Authorization": "Bearer " + a.token("kiosk", "kiosk-1")}
            ok = httpx.post(a.base_url + "/api/kiosk/courier/face", json=frames(live_sequence(face, landmarks)),
                            headers=kiosk, timeout=60)
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"courier_id": "f1", "door": "unlocked", "method": "face"}
            photo = httpx.post(a.base_url + "/api/kiosk/courier/face", json=frames(still_sequence(face)),
                               headers=kiosk, timeout=60)
            assert photo.status_code == 401
            stranger = _portrait("biden-1")
            other = httpx.post(a.base_url + "/api/kiosk/courier/face", headers=kiosk, timeout=60, json=frames(
                live_sequence(stranger, FaceEngine().analyse(stranger, landmarks=True)[0].landmarks)))
            assert other.status_code == 401

            # forgotten at the fleet: the station deletes its copy with the next bundle
            assert fleet("courier", *common, "forget-face", "f1").returncode == 0
            until(lambda: a.query("SELECT 1 FROM couriers WHERE id = 'f1' AND has_face = 0"), WITHIN_S,
                  "the face gone at the station")
            assert a.query("SELECT 1 FROM face_templates") == []
            assert a.verify_log().returncode == 0
        finally:
            publisher.terminate()
            publisher.wait(10)


def test_the_enrolment_api_takes_photos_from_an_admin_only(fleet_dsn: str, scene_bytes: bytes) -> None:
    secrets = FleetSecrets(token_key=b"k" * 32, template_key=b"t" * 32)
    client = TestClient(create_app(fleet_dsn, secrets))
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        registry.create_tables(conn)
        registry.add(conn, "f1", "SF", "Fleet Li", PIN, ["st-a"])
    admin = {"Authorization": "Bearer " + make_token(secrets.token_key, "adm", 600, role="admin")}
    viewer = {"Authorization": "Bearer " + make_token(secrets.token_key, "op", 600)}
    one = face_file("faces/obama-1.png").read_bytes()
    url = "/api/couriers/f1/faces"
    assert client.post(url, content=one, headers={"content-type": "image/png"}).status_code == 401
    assert client.post(url, content=one, headers={**viewer, "content-type": "image/png"}).status_code == 403
    bad = client.post(url, content=b"\x89PNG garbage", headers={**admin, "content-type": "image/png"})
    assert bad.status_code == 422 and bad.json()["error"] == "enrolment_image"
    group = client.post(url, json={"images": [base64.b64encode(scene_bytes).decode()]}, headers=admin)
    assert group.status_code == 422 and group.json()["error"] == "enrolment_face_count", group.text
    assert client.post(url, json={"images": "x"}, headers=admin).status_code == 422
    assert client.post("/api/couriers/nobody/faces", content=one,
                       headers={**admin, "content-type": "image/png"}).status_code == 404
    assert _faces_at_rest(fleet_dsn, "f1") == []
    three = face_file("faces/obama-3.png").read_bytes()
    ok = client.post(url, json={"images": [base64.b64encode(one).decode(), base64.b64encode(three).decode()]},
                     headers=admin)
    assert ok.status_code == 200 and ok.json() == {"courier_id": "f1", "templates": 2}
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        sent = registry.couriers_for(conn, "st-a", registry.template_cipher(secrets.template_key))
        assert len(sent[0]["faces"]) == 2
        with pytest.raises(registry.RegistryError, match="template_key"):
            registry.couriers_for(conn, "st-a")
        with pytest.raises(registry.RegistryError, match="does not open"):
            registry.couriers_for(conn, "st-a", registry.template_cipher(b"w" * 32))


@pytest.fixture
def scene_bytes() -> bytes:
    """A group photo (several faces): an enrolment must refuse it."""
    manifest = json.loads(face_file("manifest.json").read_text())
    for entry in manifest["scenes"]:
        if len(entry["faces"]) > 1:
            return face_file(entry["file"]).read_bytes()
    pytest.fail("no group photo in the face test data")


def test_enrolment_without_the_template_key_is_one_clear_line(tmp_path: Path, fleet_dsn: str) -> None:
    old_secrets = tmp_path / "old-secrets.toml"   # a fleet secrets file from before template_key
    old_secrets.write_text('token_key = "' + "ab" * 32 + '"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PS_")}
    done = subprocess.run([sys.executable, "-m", "fleet.cli", "courier", "--dsn", fleet_dsn, "--secrets",
                           str(old_secrets), "enrol", "f1", "--face", str(face_file("faces/obama-1.png"))],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False, env=env)
    assert done.returncode == 2 and "template_key: missing secret" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "template_key" in generate_fleet_secrets_toml()


def test_the_publisher_sends_no_bundle_a_station_would_refuse_and_says_why_once(
        tmp_path: Path, fleet_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    import fleet.bundles as bundles
    from station.bundles import public_hex
    from tests.fleet.test_registry_page import _FakeEngine

    cipher = registry.template_cipher(b"t" * 32)
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        registry.create_tables(conn)
        for sid in ("st-a", "st-b"):
            registry.set_station_key(conn, sid, public_hex(X25519PrivateKey.generate().public_key()))
        registry.add(conn, "f1", "SF", "Fleet Li", PIN, ["st-a"])
        registry.add(conn, "f2", "SF", "Fleet Wang", PIN, ["st-b"])
        registry.enrol_faces(conn, "f1", [b"x"], _FakeEngine(), cipher)
    with MosquittoProcess(workdir=tmp_path / "broker") as broker, caplog.at_level(logging.ERROR, "fleet.bundles"):
        # no template key: st-a (a courier with a face) gets nothing, st-b its bundle; said once
        pub = bundles.Publisher(fleet_dsn, broker.url, Ed25519PrivateKey.generate())
        try:
            assert pub.publish_due() == 1 and pub.publish_due() == 0
        finally:
            pub.stop()
        assert [r.getMessage().split(":")[0] for r in caplog.records] == ["bundle for st-a not made"]
        caplog.clear()
        monkeypatch.setattr(bundles, "MAX_BUNDLE_BYTES", 1000)
        pub = bundles.Publisher(fleet_dsn, broker.url, Ed25519PrivateKey.generate(), cipher=cipher)
        try:
            # st-a's bundle, with the face now, is above the (lowered) limit: not sent; st-b's,
            # without a face, goes out again under the new signing key
            assert pub.publish_due() == 1
        finally:
            pub.stop()
        assert [r.getMessage().split(" is ")[0] for r in caplog.records] == ["bundle for st-a"]
        assert "above the 1000 a station accepts" in caplog.records[0].getMessage()
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT station_id FROM fleet_bundles ORDER BY 1")] == ["st-b"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` and holds almost nothing: a decompression bomb's
    header (the decoder must refuse it by its size before decoding a pixel)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def test_hostile_enrolment_bodies_get_a_clear_error_and_store_nothing(fleet_dsn: str) -> None:
    """review: every kind of bad body is a 4xx that says what to send, never a 500, and the
    fleet answers afterwards. A deeply nested JSON body was a RecursionError (500) before."""
    secrets = FleetSecrets(token_key=b"k" * 32, template_key=b"t" * 32)
    client = TestClient(create_app(fleet_dsn, secrets), raise_server_exceptions=False)
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        registry.create_tables(conn)
        registry.add(conn, "f1", "SF", "Fleet Li", PIN, ["st-a"])
    admin = {"Authorization": "Bearer " + make_token(secrets.token_key, "adm", 600, role="admin")}
    url = "/api/couriers/f1/faces"
    image_bodies = {
        "a bomb's header": _png_header(100_000, 100_000),
        "a GIF": b"GIF89a" + bytes(100),
        "not an image": b"hello",
        "a truncated JPEG": b"\xff\xd8\xff\xe0" + bytes(20),
    }
    for what, body in image_bodies.items():
        res = client.post(url, content=body, headers={**admin, "content-type": "image/png"})
        assert res.status_code == 422 and res.json()["error"] == "enrolment_image", (what, res.text)
    json_bodies = {
        "nested a hundred thousand deep": b"[" * 100_000,
        "images nested deep": b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "six photos": json.dumps({"images": ["aGk="] * 6}).encode(),
        "a number for a photo": b'{"images": [1]}',
        "null": b"null",
        "not UTF-8": b"\xff\xfe",
    }
    for what, body in json_bodies.items():
        res = client.post(url, content=body, headers={**admin, "content-type": "application/json"})
        assert res.status_code == 422 and "images" in res.json()["detail"], (what, res.status_code, res.text)
    huge = client.post(url, content=bytes(60 * 1024 * 1024), headers={**admin, "content-type": "image/png"})
    assert huge.status_code == 413
    assert _faces_at_rest(fleet_dsn, "f1") == []
    assert client.get("/api/couriers", headers=admin).status_code == 200



def test_concurrent_enrolments_of_one_courier_all_succeed_and_keep_one_set(fleet_dsn: str) -> None:
    """review: two admins (or a double click) enrolling one courier at once hit the primary
    key of the other's fresh templates: a 500 (UniqueViolation) from the API. The courier's
    row is now locked for the replacement, so each enrolment replaces the one before, whole.
    (The registry call itself, with an encoder that answers at once: the race is in the
    database, and a real encoder spaces the requests out too much to meet it reliably.)"""
    import threading
    from types import SimpleNamespace

    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        registry.create_tables(conn)
        registry.add(conn, "f1", "SF", "Fleet Li", PIN, ["st-a"])

    class Instant:
        def enrol(self, images: list[bytes]) -> Any:
            return SimpleNamespace(templates=[np.full(128, i, np.float32) for i in range(3)])

    cipher = registry.template_cipher(b"t" * 32)
    start = threading.Barrier(8)
    failures: list[str] = []

    def enrol() -> None:
        with psycopg.connect(fleet_dsn, autocommit=True) as conn:
            for _ in range(15):
                try:
                    start.wait(10)
                    registry.enrol_faces(conn, "f1", [b"x"], Instant(), cipher)
                except Exception as exc:  # noqa: BLE001 - what the API answered with a 500
                    failures.append(type(exc).__name__)

    threads = [threading.Thread(target=enrol) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert len(_faces_at_rest(fleet_dsn, "f1")) == 3
