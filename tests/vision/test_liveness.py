from __future__ import annotations

import numpy as np
import pytest

from shelf_sim.blinks import live_sequence, moved_photo_sequence, still_sequence
from station.vision.liveness import LivenessChecker

# the portraits on which dlib's landmarks follow the synthetic closed eye (docs/faces.md)
BLINKERS = ("obama-2", "hanks-1", "leblanc-1", "collins-1")


def landmarks_of(engine, frames):
    out = []
    for frame in frames:
        faces = engine.analyse(frame, landmarks=True, max_faces=1)
        out.append(faces[0].landmarks if faces else None)
    return out


@pytest.mark.parametrize("name", BLINKERS)
def test_synthetic_blink_is_live(engine, portraits, name) -> None:
    p = portraits[name]
    result = LivenessChecker().check(landmarks_of(engine, live_sequence(p.image,
                                                                        p.face.landmarks)))
    assert result.live and result.reason == "blink", result


@pytest.mark.parametrize("name", ["obama-1", "hanks-1", "collins-1", "kudrow-1"])
def test_same_photo_repeated_is_not_live(engine, portraits, name) -> None:
    frames = still_sequence(portraits[name].image)
    result = LivenessChecker().check(landmarks_of(engine, frames[:1]) * len(frames))
    assert not result.live and result.min_ratio == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["obama-1", "obama-2", "hanks-1", "collins-1", "biden-1",
                                  "kudrow-1"])
def test_photo_moved_and_tilted_is_not_live(engine, portraits, name) -> None:
    result = LivenessChecker().check(landmarks_of(engine,
                                                  moved_photo_sequence(portraits[name].image)))
    assert not result.live, result


def test_tilt_correction_is_what_stops_the_tilted_photo() -> None:
    """A photo tilted back squashes the eyes on screen; plain EAR would call that a blink."""
    rng = np.random.default_rng(0)
    face = rng.uniform(50, 250, (68, 2))
    # make the eyes plausible: 6 points around an ellipse per eye
    for start, cx in ((36, 100.0), (42, 200.0)):
        t = np.array([np.pi, 2.4, 0.75, 0.0, -0.75, -2.4])
        face[start:start + 6] = np.c_[cx + 20 * np.cos(t), 120 + 8 * np.sin(t)]
    frames = []
    for squash in (1, 1, 1, 0.6, 0.6, 1, 1, 1):
        frames.append(face * np.array([1.0, squash]))
    assert not LivenessChecker().check(frames).live
    blink = [face.copy() for _ in range(8)]
    for i in (3, 4):
        for start in (36, 42):
            eye = blink[i][start:start + 6]
            eye[:, 1] = 120 + (eye[:, 1] - 120) * 0.3
    assert LivenessChecker().check(blink).live


def test_too_few_frames_or_missing_faces_are_not_live() -> None:
    assert LivenessChecker().check([np.zeros((68, 2))] * 3).reason == "too_few_frames"
    assert LivenessChecker().check([None] * 8).reason == "face_missing"
