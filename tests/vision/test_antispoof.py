"""The passive spoof model on what we have (#21.2): the authors' three samples, the gathered
test portraits, and attacks the suite renders from those portraits (shelf_sim/spoofs.py).

The figures these tests print (pytest -s) are the ones in docs/faces.md. They are bounds on
our own renderings, not an attack-detection rate on real phones and printers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from shelf_sim.spoofs import ATTACKS, _camera
from station.vision.antispoof import AntiSpoof, Box, PassiveSettings, crop_around, judge
from station.vision.faces import FaceEngine

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "antispoof"
SEEDS = range(3)


@pytest.fixture(scope="module")
def spoof() -> AntiSpoof:
    return AntiSpoof()


def _score(engine: FaceEngine, spoof: AntiSpoof, frame: np.ndarray) -> float | None:
    faces = engine.analyse(frame, max_faces=1, min_face_px=engine.settings.verify_min_face_px)
    return spoof.score(frame, faces[0].box.xywh()).real if faces else None


def test_the_authors_samples_score_as_labelled(engine: FaceEngine, spoof: AntiSpoof) -> None:
    scores = {n: _score(engine, spoof, cv2.imread(str(SAMPLES / n)))
              for n in ("image_F1.jpg", "image_F2.jpg", "image_T1.jpg")}
    print("samples P(real):", {k: round(v, 4) for k, v in scores.items() if v is not None})
    assert scores["image_F1.jpg"] < 0.2 and scores["image_F2.jpg"] < 0.3
    assert scores["image_T1.jpg"] > 0.95


def test_rendered_attacks_on_every_test_face_are_scored_spoof(
        engine: FaceEngine, spoof: AntiSpoof, portraits: dict) -> None:
    """Every rendering of every portrait: a frame whose face is found scores under the
    threshold, and a frame whose face is not found is not admitted either."""
    threshold = PassiveSettings().threshold
    per_attack: dict[str, list[float | None]] = {k: [] for k in ATTACKS}
    for p in portraits.values():
        for name, render in ATTACKS.items():
            per_attack[name].extend(_score(engine, spoof, render(p.image, seed)) for seed in SEEDS)
    for name, scores in per_attack.items():
        found = [s for s in scores if s is not None]
        print(f"{name}: {len(scores)} frames, face found in {len(found)}, scored real "
              f"{sum(s >= threshold for s in found)}, max P(real) {max(found):.3f}")
        assert found and max(found) < threshold, name


def test_live_portraits_score_real_but_for_one(engine: FaceEngine, spoof: AntiSpoof,
                                               portraits: dict) -> None:
    """The control: the portraits through the same camera model (blur, noise, JPEG) score
    real, except hanks-1, which the model calls a spoof (a false refusal we document)."""
    threshold = PassiveSettings().threshold
    scores = {n: _score(engine, spoof, _camera(p.image, 0)) for n, p in portraits.items()}
    print("live portraits P(real):", {k: round(v, 3) for k, v in scores.items() if v})
    refused = sorted(n for n, s in scores.items() if s is None or s < threshold)
    assert refused == ["hanks-1"]


def test_the_crop_stays_inside_the_frame_and_keeps_its_context() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :10] = 255  # a white strip at the left edge
    crop = crop_around(frame, Box(0, 40, 20, 20), scale=4.0, size=80)
    # the 80 px crop was shifted right rather than clipped: it still spans 80 source pixels
    assert crop.shape == (80, 80, 3) and crop[:, :8].min() == 255 and crop[:, 12:].max() == 0


def test_judge_needs_enough_real_frames_and_counts_missing_faces_against() -> None:
    from station.vision.antispoof import SpoofScore
    box = Box(0, 0, 1, 1)
    real, fake = SpoofScore(0.9, (0.9,), box), SpoofScore(0.1, (0.1,), box)
    s = PassiveSettings(threshold=0.5, min_real_fraction=0.6)
    assert judge([real] * 5, s).real
    assert not judge([real, real, fake, fake, fake], s).real
    assert not judge([real, real, real, None, None, None], s).real  # 3 of 6 frames
    assert judge([real, real, real, None, fake], s).real  # 3 of 5 is the 0.6 needed
    assert judge([None] * 4, s).reason == "no_face"
    assert judge([fake], PassiveSettings(enabled=False)).reason == "off"
