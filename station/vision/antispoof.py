"""Passive presentation-attack detection: is this face crop a live face or a picture of one?

The blink check (liveness.py) stops a still photo but not a video replayed on a phone. A
texture model looks at what a screen or a print does to a face: moiré, pixel grid, glare, paper
grain, the bezel and the flat colour response around it. We use Minivision's MiniFASNet pair
(Apache-2.0, station/vision/models/NOTICE), converted once to ONNX by tools/export_minifasnet.py
so OpenCV's dnn module runs it and the station carries no torch.

Input conventions are the authors': the face box is scaled 2.7x (MiniFASNetV2) and 4.0x
(MiniFASNetV1SE) around its centre, kept inside the frame, resized to 80x80, raw BGR 0-255; the
two softmax outputs are averaged and index 1 is "real". The wider crop is the point: it shows
the edge of the phone or paper around the face.

The box is the HOG box the matcher used, not the authors' RetinaFace detector (ADR 0140): the
face judged real must be the face that matched (a second detector may pick the attacker's own
face beside the phone), the two boxes differ by under 10 % on our images, and the scores with
either agree (docs/faces.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MODELS_DIR = Path(__file__).resolve().parent / "models"
# (ONNX file, crop scale around the face box)
MODELS: tuple[tuple[str, float], ...] = (
    ("minifasnet_v2_2.7.onnx", 2.7),
    ("minifasnet_v1se_4.0.onnx", 4.0),
)
INPUT_PX = 80
REAL_CLASS = 1


@dataclass(frozen=True)
class Box:
    """x, y, width, height in frame pixels (the authors' convention)."""

    x: int
    y: int
    w: int
    h: int


def crop_around(frame: np.ndarray, box: Box, scale: float, size: int = INPUT_PX) -> np.ndarray:
    """The box grown `scale` times about its centre, shifted (not clipped) to stay inside the
    frame, and resized to `size`: a face near the edge keeps the same amount of context."""
    fh, fw = frame.shape[:2]
    scale = min(scale, (fh - 1) / max(box.h, 1), (fw - 1) / max(box.w, 1))
    cw, ch = box.w * scale, box.h * scale
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = cx - cw / 2, cy - ch / 2
    x0 -= min(x0, 0.0) + max(x0 + cw - fw, 0.0)
    y0 -= min(y0, 0.0) + max(y0 + ch - fh, 0.0)
    left, top = int(x0), int(y0)
    right, bottom = int(x0 + cw), int(y0 + ch)
    return cv2.resize(frame[top:bottom, left:right], (size, size))


@dataclass(frozen=True)
class SpoofScore:
    """P(real) of one frame's face: the average of both models, and each model's own."""

    real: float
    per_model: tuple[float, ...]
    box: Box


class AntiSpoof:
    """The two classifiers, loaded once; thread-safe (one lock: a cv2.dnn Net keeps its input
    and output buffers between calls)."""

    def __init__(self, models_dir: Path = MODELS_DIR) -> None:
        self._nets = [(cv2.dnn.readNetFromONNX(str(models_dir / name)), scale)
                      for name, scale in MODELS]
        self._lock = threading.Lock()

    def score(self, frame: np.ndarray, box: Box) -> SpoofScore:
        """P(real) for the face in `box` of a BGR frame."""
        with self._lock:
            probs = []
            for net, scale in self._nets:
                crop = crop_around(frame, box, scale).astype(np.float32)
                net.setInput(cv2.dnn.blobFromImage(crop, 1.0))  # raw 0-255 BGR, NCHW
                logits = net.forward().reshape(-1).astype(np.float64)
                e = np.exp(logits - logits.max())
                probs.append(float(e[REAL_CLASS] / e.sum()))
        return SpoofScore(float(np.mean(probs)), tuple(probs), box)


@dataclass(frozen=True)
class PassiveSettings:
    """How frame scores become one decision; docs/faces.md gives the measured scores."""

    enabled: bool = True
    # a frame counts as real when P(real) reaches this ...
    threshold: float = 0.5
    # ... and the sequence is real when this share of its faces does (a blink or motion blur
    # may cost a frame or two; a replayed screen is judged on every frame)
    min_real_fraction: float = 0.6


@dataclass(frozen=True)
class PassiveResult:
    real: bool
    reason: str  # "real" | "spoof" | "no_face" | "off"
    scores: tuple[float | None, ...]  # P(real) per frame, None where no face was found
    median: float | None

    def to_log(self) -> dict[str, object]:
        return {
            "passive": self.reason,
            "passive_median": None if self.median is None else round(self.median, 4),
            "passive_scores": [None if s is None else round(s, 3) for s in self.scores],
        }


def judge(scores: list[SpoofScore | None], settings: PassiveSettings) -> PassiveResult:
    """Frame scores -> one decision: enough frames must look real, none are skipped."""
    values = tuple(None if s is None else s.real for s in scores)
    if not settings.enabled:
        return PassiveResult(True, "off", values, None)
    found = [v for v in values if v is not None]
    if not found:
        return PassiveResult(False, "no_face", values, None)
    median = float(np.median(found))
    real_share = sum(v >= settings.threshold for v in found) / len(values)
    ok = real_share >= settings.min_real_fraction
    return PassiveResult(ok, "real" if ok else "spoof", values, median)
