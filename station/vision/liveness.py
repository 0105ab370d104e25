"""Liveness from a short frame sequence: a blink that a flat picture cannot make.

Why a blink, and why corrected for planar motion: a photograph held to the camera can be
moved, rotated and tilted, but every point on it moves together as a plane does, which is a
homography between frames. A real eyelid moves against the rest of the face. So for each frame
we fit a homography from the face's non-eye landmarks (jaw, brows, nose, mouth) to a reference
frame, carry the eye landmarks through it and measure the eye aspect ratio (EAR, Soukupova and
Cech 2016) in the reference frame. Tilting a photo backwards squashes the eyes on screen and
fools a plain EAR test; after the correction it changes nothing. A closed eye stays closed.

What this does not stop (docs/faces.md says so too): a video of the courier replayed on a
phone or tablet (it blinks), a good mask with cut-out eyes, and a printed photo with the eyes
cut out and the attacker's eyes behind. It is a bar against the cheapest attack only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

LEFT_EYE = np.arange(36, 42)
RIGHT_EYE = np.arange(42, 48)
EYES = np.concatenate([LEFT_EYE, RIGHT_EYE])
NOT_EYES = np.setdiff1d(np.arange(68), EYES)


@dataclass(frozen=True)
class LivenessSettings:
    """Thresholds; the defaults are argued in docs/faces.md."""

    min_frames: int = 5
    # at most this share of frames may lack a face (someone looks away, motion blur)
    max_missing_fraction: float = 0.34
    # a blink: the corrected EAR falls to this fraction of the open-eye level ...
    closed_ratio: float = 0.7
    # ... with an open frame (at least this fraction of the open level) before and after it
    reopen_ratio: float = 0.9


@dataclass(frozen=True)
class LivenessResult:
    live: bool
    reason: str  # "blink" | "too_few_frames" | "face_missing" | "no_blink"
    ear: tuple[float, ...] = field(default=())  # corrected EAR per frame (NaN: no face)
    open_level: float = 0.0
    min_ratio: float = 1.0  # lowest corrected EAR / open level: 1.0 means no dip at all


def eye_aspect_ratio(points: np.ndarray) -> float:
    """EAR of the 12 eye landmarks (both eyes averaged): ~0.3 open, ~0.1 closed."""
    ears = []
    for eye in (points[:6], points[6:12]):
        vertical = np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])
        horizontal = np.linalg.norm(eye[0] - eye[3])
        ears.append(vertical / (2.0 * horizontal) if horizontal > 1e-6 else 0.0)
    return float(np.mean(ears))  # type: ignore[arg-type]


class LivenessChecker:
    """Decides live / not live from the 68-point landmarks of one face over several frames."""

    def __init__(self, settings: LivenessSettings | None = None) -> None:
        self.settings = settings or LivenessSettings()

    def corrected_ears(self, landmarks: Sequence[np.ndarray | None]) -> list[float]:
        """EAR of each frame's eyes after undoing the plane motion of the rest of the face."""
        reference: np.ndarray | None = next((lm for lm in landmarks if lm is not None), None)
        ears: list[float] = []
        for lm in landmarks:
            if lm is None or reference is None:
                ears.append(float("nan"))
                continue
            src = lm[NOT_EYES].astype(np.float64)
            dst = reference[NOT_EYES].astype(np.float64)
            homography, _ = cv2.findHomography(src, dst, 0)
            if homography is None:
                ears.append(float("nan"))
                continue
            eyes = cv2.perspectiveTransform(lm[EYES].astype(np.float64).reshape(-1, 1, 2),
                                            homography).reshape(-1, 2)
            ears.append(eye_aspect_ratio(eyes))
        return ears

    def check(self, landmarks: Sequence[np.ndarray | None]) -> LivenessResult:
        """Landmarks per frame, in time order; None where the frame had no usable face."""
        s = self.settings
        if len(landmarks) < s.min_frames:
            return LivenessResult(False, "too_few_frames")
        missing = sum(lm is None for lm in landmarks)
        if missing > s.max_missing_fraction * len(landmarks):
            return LivenessResult(False, "face_missing")
        ears = self.corrected_ears(landmarks)
        values = np.array(ears, dtype=np.float64)
        valid = values[np.isfinite(values)]
        if valid.size < s.min_frames:
            return LivenessResult(False, "face_missing", tuple(ears))
        # open level: the median of the upper half, robust to a few closed frames
        open_level = float(np.median(np.sort(valid)[valid.size // 2:]))
        if open_level <= 1e-6:
            return LivenessResult(False, "no_blink", tuple(ears))
        ratios = values / open_level
        min_ratio = float(np.nanmin(ratios))
        blinked = False
        for i, ratio in enumerate(ratios):
            if not np.isfinite(ratio) or ratio > s.closed_ratio:
                continue
            before = ratios[:i]
            after = ratios[i + 1:]
            if np.any(before >= s.reopen_ratio) and np.any(after >= s.reopen_ratio):
                blinked = True
                break
        return LivenessResult(blinked, "blink" if blinked else "no_blink", tuple(ears),
                              open_level, min_ratio)
