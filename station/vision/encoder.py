"""The face encoder: dlib's face-recognition ResNet, run by OpenCV's dnn module.

Same network, same weights, same 150 px chip as dlib's compute_face_descriptor, so the
encodings, the thresholds and every distance in docs/faces.md are unchanged (the two agree to
1e-6; tests/vision/test_face_encoder.py). The prebuilt dlib the station installs has no BLAS,
and its encoder cost 110-160 ms of CPU a face here; OpenCV's convolutions take an eighth of
that (ADR 0162). tools/export_dlib_encoder.py made the ONNX file from face_recognition_models'
dlib_face_recognition_resnet_model_v1.dat.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import cv2
import dlib
import numpy as np

MODEL = Path(__file__).with_name("models") / "dlib_face_encoder.onnx"
# dlib's get_face_chip_details(shape, 150, 0.25): the chip compute_face_descriptor encodes
CHIP_PX = 150
CHIP_PADDING = 0.25


class Encoder(Protocol):
    """What FaceEngine needs of an encoder: a benchmark passes dlib's own as the baseline."""

    def encode(self, rgb: np.ndarray, shape: Any, num_jitters: int = 1) -> np.ndarray: ...


class FaceEncoder:
    """Thread-safe (one lock: a cv2.dnn Net keeps its buffers between calls)."""

    def __init__(self, model: Path = MODEL) -> None:
        if not model.is_file():
            raise RuntimeError(f"face encoder model missing: {model}")
        self._net = cv2.dnn.readNetFromONNX(str(model))
        self._lock = threading.Lock()

    def encode(self, rgb: np.ndarray, shape: Any, num_jitters: int = 1) -> np.ndarray:
        """The 128-d descriptor of the face whose 5 landmarks are `shape`, in an RGB frame.

        With `num_jitters` above 1, the mean over that many randomly jittered chips, as dlib
        does (and as costly)."""
        chip = dlib.get_face_chip(rgb, shape, size=CHIP_PX, padding=CHIP_PADDING)
        chips = [chip] if num_jitters <= 1 else dlib.jitter_image(chip, num_jitters)
        blob = np.ascontiguousarray(np.stack(chips).transpose(0, 3, 1, 2), dtype=np.float32)
        with self._lock:
            self._net.setInput(blob)
            out = self._net.forward()
        return out.mean(axis=0).astype(np.float64)
