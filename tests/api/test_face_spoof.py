"""Courier entry by face through the real entry path (HTTP POST /api/kiosk/courier/face with
several frames) against presentation attacks: the authors' printed-poster and phone-replay
samples are refused, their live sample is admitted, and a courier whose video blinks on a
replayed phone screen is refused although the blink check alone would let it in (#21.1)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from shelf_sim.blinks import squashed_blink_sequence
from shelf_sim.spoofs import phone_screen
from station.vision.faces import FaceEngine
from tests.api.test_http_flows import client, jpeg, png
from tests.support.stack import LiveStation
from tests.support.testdata import face_file

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "antispoof"


@pytest.fixture
def live(tmp_path: Path):
    with LiveStation(tmp_path, http=True) as ls:
        ls.core.couriers.add("c-sf", "SF", "Li Lei", "2468")
        yield ls


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine()


def _sample(name: str) -> np.ndarray:
    image = cv2.imread(str(SAMPLES / name))
    assert image is not None, name
    return image


def _enrol(ls: LiveStation, image: np.ndarray) -> None:
    with client(ls, "operator", "op") as op:
        res = op.post("/api/operator/couriers/c-sf/face", content=png(image),
                      headers={"content-type": "image/png"})
    assert res.status_code == 200, res.text


def _blinking(engine: FaceEngine, image: np.ndarray) -> list[np.ndarray]:
    """Eight frames of the picture with a blink in frames 3-4: what a replayed video shows."""
    faces = engine.analyse(image, landmarks=True, max_faces=1)
    assert faces, "no face in the sample"
    return squashed_blink_sequence(image, faces[0].landmarks)


def _enter(ls: LiveStation, frames: list[np.ndarray]):
    body = {"frames": [base64.b64encode(jpeg(f)).decode() for f in frames]}
    with client(ls, "kiosk", "kiosk-1") as k:
        return k.post("/api/kiosk/courier/face", json=body)


def _face_events(ls: LiveStation) -> list[tuple[str, dict]]:
    rows = ls.core.ctx.store.query(
        "SELECT type, data FROM events WHERE type LIKE 'auth.face.%' ORDER BY seq")
    return [(r["type"], json.loads(r["data"])) for r in rows]


@pytest.mark.parametrize("name", ["image_F1.jpg", "image_F2.jpg"])
def test_the_printed_poster_and_the_phone_replay_are_refused_though_they_blink(
        live: LiveStation, engine: FaceEngine, name: str) -> None:
    sample = _sample(name)
    _enrol(live, sample)  # the attacker shows the enrolled courier's own face
    res = _enter(live, _blinking(engine, sample))
    assert res.status_code == 401 and res.json()["error"] == "face_rejected", res.text
    (kind, data), = _face_events(live)
    assert kind == "auth.face.rejected"
    assert data["reason"] == "spoof" and data["passive"] == "spoof", data
    assert data["liveness"] == "blink"  # the blink check alone would have let it in
    assert data["passive_median"] < 0.5 and len(data["passive_scores"]) == 8
    assert live.core.ctx.store.query_one(
        "SELECT 1 FROM events WHERE type = 'door.unlock.requested'") is None


def test_the_live_sample_is_admitted(live: LiveStation, engine: FaceEngine) -> None:
    sample = _sample("image_T1.jpg")
    _enrol(live, sample)
    res = _enter(live, _blinking(engine, sample))
    assert res.status_code == 200, res.text
    assert res.json()["courier_id"] == "c-sf"
    (kind, data), = _face_events(live)
    assert kind == "auth.face.accepted"
    assert data["passive"] == "real" and data["liveness"] == "blink"
    assert data["passive_median"] >= 0.5


def test_a_courier_blinking_on_a_replayed_phone_screen_is_refused(
        live: LiveStation, engine: FaceEngine) -> None:
    """The enrolled courier's own blinking video replayed on a (rendered) phone held to the
    camera. The same frames straight to the camera are admitted, so the screen is the only
    difference. The rendered pixel grid blurs dlib's eye landmarks enough that the blink is
    not always seen through it, so this asserts what the passive check says whatever the
    blink; the authors' real phone replay (image_F2, above) is refused with its blink seen."""
    portrait = cv2.imread(str(face_file("faces/obama-2.png")))
    _enrol(live, portrait)
    video = _blinking(engine, portrait)
    direct = _enter(live, video)
    assert direct.status_code == 200, direct.text
    res = _enter(live, [phone_screen(f, seed=i, screen=(190, 330), height_frac=0.7)
                        for i, f in enumerate(video)])
    assert res.status_code == 401 and res.json()["error"] == "face_rejected", res.text
    (_, accepted), (kind, data) = _face_events(live)
    assert accepted["passive"] == "real" and accepted["liveness"] == "blink"
    assert kind == "auth.face.rejected" and data["passive"] == "spoof", data
    assert data["reason"] in ("spoof", "not_live") and data["distance"] < 0.5
    assert max(data["passive_scores"]) < 0.5
