"""Courier faces: enrolment with quality checks, matching, and multi-frame decisions.

The model is dlib's ResNet (the one face_recognition wraps): 128-d encodings compared by
Euclidean distance. We call dlib directly with face_recognition_models' files instead of the
face_recognition module because that module loads five models into module globals at import
(including the CNN detector we never use); an engine instance owns exactly what it needs.
The HOG detector, 5-point aligner and encoder network are the same ones face_recognition uses
(the encoder run by OpenCV, station/vision/encoder.py), so its published behaviour and our
measured distances (docs/faces.md) apply unchanged.

Thresholds are stricter than the library's 0.6 because the model is weaker on Asian faces and
children and this station serves Chinese cities (DESIGN §6): 0.5 by default, a margin to the
second-best courier, and agreement over several frames.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np

from station.vision.antispoof import AntiSpoof, Box, PassiveResult, PassiveSettings, judge
from station.vision.encoder import Encoder, FaceEncoder
from station.vision.images import ImageError, decode_image, ensure_frame
from station.vision.liveness import LivenessChecker, LivenessResult

ENCODING_SIZE = 128
# dlib's frontal HOG detector scans an 80x80 window: without upsampling, the smallest face it
# finds is about this size (in the pixels it is given)
HOG_WINDOW_PX = 80


def _models_dir() -> Path:
    """face_recognition_models' data directory, found without importing the package (its
    __init__ imports the deprecated pkg_resources just to compute these paths)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@dataclass(frozen=True)
class FaceSettings:
    """Detection and enrolment-quality limits; docs/faces.md explains each number."""

    upsample: int = 1  # HOG finds faces down to ~40 px with one upsampling
    max_detect_side: int = 1280  # larger frames are scaled down first: HOG time grows with area
    num_jitters: int = 1  # re-sampled encodings: 10 costs 10x for ~0.01 of distance
    min_face_px: int = 80  # smaller faces give unstable encodings (and messi5.jpg's 36 px)
    min_sharpness: float = 60.0  # Laplacian variance of the face scaled to 128 px
    min_luma: float = 50.0  # mean face luminance (0-255)
    max_luma: float = 215.0
    max_clipped: float = 0.25  # share of face pixels at <= 5 or >= 250
    # verification: a courier stands close to the face camera, so faces smaller than this
    # are not looked for; detection then runs without upsampling on a frame scaled so this
    # size meets HOG's smallest window (ADR 0120), and only encoding sees the full frame
    verify_min_face_px: int = 100


@dataclass(frozen=True)
class FaceBox:
    """A face rectangle in frame pixels, in face_recognition's (top, right, bottom, left)."""

    top: int
    right: int
    bottom: int
    left: int

    @property
    def size(self) -> int:
        return min(self.bottom - self.top, self.right - self.left)

    def css(self) -> tuple[int, int, int, int]:
        return (self.top, self.right, self.bottom, self.left)

    def xywh(self) -> Box:
        return Box(self.left, self.top, self.right - self.left, self.bottom - self.top)


@dataclass(frozen=True)
class FaceQuality:
    size_px: int
    sharpness: float
    mean_luma: float
    clipped: float


@dataclass
class Face:
    """One detected face: where, its encoding, and (when asked for) its 68 landmarks."""

    box: FaceBox
    encoding: np.ndarray  # (128,) float64
    landmarks: np.ndarray | None = None  # (68, 2) float64 in frame pixels


class EnrolmentRefused(ValueError):
    """An enrolment image failed a check. `check` is one of: image, face_count, face_size,
    sharpness, exposure, consistency; `image_index` says which of the images it was."""

    def __init__(self, image_index: int, check: str, detail: str) -> None:
        super().__init__(f"image {image_index}: {check}: {detail}")
        self.image_index = image_index
        self.check = check
        self.detail = detail


@dataclass(frozen=True)
class Enrolment:
    templates: np.ndarray  # (k, 128) float32, one per accepted image
    qualities: tuple[FaceQuality, ...]


class FaceEngine:
    """Owns the dlib models; thread-safe (one lock: dlib objects are not re-entrant)."""

    def __init__(self, settings: FaceSettings | None = None,
                 models_dir: Path | None = None, encoder: Encoder | None = None) -> None:
        self.settings = settings or FaceSettings()
        self._antispoof: AntiSpoof | None = None
        models = models_dir or _models_dir()
        self._detector = dlib.get_frontal_face_detector()
        self._aligner = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._landmarker = dlib.shape_predictor(
            str(models / "shape_predictor_68_face_landmarks.dat"))
        self._encoder = encoder or FaceEncoder()
        self._lock = threading.Lock()

    @property
    def antispoof(self) -> AntiSpoof:
        """The passive spoof models, loaded on first use and kept with the engine (an
        enrolment-only station never loads them); AntiSpoof has its own lock."""
        with self._lock:
            if self._antispoof is None:
                self._antispoof = AntiSpoof()
            return self._antispoof

    @staticmethod
    def _as_frame(image: bytes | np.ndarray) -> np.ndarray:
        if isinstance(image, (bytes, bytearray, memoryview)):
            return decode_image(bytes(image))
        return ensure_frame(image)

    def _prepare(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        """RGB copy for dlib, downscaled if large; returns it and the scale applied."""
        h, w = frame.shape[:2]
        scale = min(1.0, self.settings.max_detect_side / max(h, w))
        if scale < 1.0:
            frame = cv2.resize(frame, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame[:, :, ::-1]), scale

    def detect(self, image: bytes | np.ndarray) -> list[FaceBox]:
        """Face boxes in the frame's own pixels, largest first."""
        frame = self._as_frame(image)
        rgb, scale = self._prepare(frame)
        with self._lock:
            rects = self._detector(rgb, self.settings.upsample)
        return self._boxes(rects, scale, frame.shape)

    @staticmethod
    def _boxes(rects: Any, scale: float, shape: tuple[int, ...]) -> list[FaceBox]:
        h, w = shape[:2]
        boxes = [
            FaceBox(max(round(r.top() / scale), 0), min(round(r.right() / scale), w),
                    min(round(r.bottom() / scale), h), max(round(r.left() / scale), 0))
            for r in rects
        ]
        return sorted(boxes, key=lambda b: -b.size)

    def _detect_from(self, rgb: np.ndarray, min_face_px: int | None) -> list[Any]:
        """Face rectangles in `rgb`'s pixels, largest first. With `min_face_px`, HOG runs on a
        copy scaled so that size is its smallest window, without upsampling: a fraction of the
        pixels (9x fewer than upsampling once at 120 px), and faces below the size are dropped."""
        if min_face_px is None:
            rects = list(self._detector(rgb, self.settings.upsample))
        else:
            factor = min(1.0, HOG_WINDOW_PX / min_face_px)
            small = rgb if factor >= 1.0 else cv2.resize(
                rgb, (max(round(rgb.shape[1] * factor), 1), max(round(rgb.shape[0] * factor), 1)),
                interpolation=cv2.INTER_AREA)
            rects = [dlib.rectangle(round(r.left() / factor), round(r.top() / factor),
                                    round(r.right() / factor), round(r.bottom() / factor))
                     for r in self._detector(small, 0)]
        return sorted(rects, key=lambda r: -min(r.width(), r.height()))

    def analyse(self, image: bytes | np.ndarray, *, landmarks: bool = False,
                max_faces: int | None = None, min_face_px: int | None = None) -> list[Face]:
        """Detect, align and encode every face (or the `max_faces` largest), largest first.

        `min_face_px` (verification) detects on a scaled-down frame; alignment and encoding
        always use the full frame, so an encoding is the same whichever way its face was found."""
        frame = self._as_frame(image)
        rgb, scale = self._prepare(frame)
        faces: list[Face] = []
        with self._lock:
            rects = self._detect_from(rgb, None if min_face_px is None else round(min_face_px * scale))
            if max_faces is not None:
                rects = rects[:max_faces]
            for rect in rects:
                shape = self._aligner(rgb, rect)
                encoding = self._encoder.encode(rgb, shape, self.settings.num_jitters)
                points = None
                if landmarks:
                    full = self._landmarker(rgb, rect)
                    points = np.array([(p.x, p.y) for p in full.parts()],
                                      dtype=np.float64) / scale
                box = self._boxes([rect], scale, frame.shape)[0]
                faces.append(Face(box, encoding, points))
        return faces

    def quality(self, frame: np.ndarray, box: FaceBox) -> FaceQuality:
        """Sharpness and exposure of the face region alone: the background does not matter.

        Sharpness is measured on the face scaled to 128 px so one threshold holds for every
        camera distance (a larger face would otherwise always look sharper)."""
        crop = frame[box.top:box.bottom, box.left:box.right]
        gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        norm = cv2.resize(gray, (128, 128), interpolation=cv2.INTER_AREA)
        sharpness = float(cv2.Laplacian(norm, cv2.CV_64F).var())
        clipped = float(np.mean((gray <= 5) | (gray >= 250)))
        return FaceQuality(box.size, sharpness, float(gray.mean()), clipped)

    def enrol(self, images: Sequence[bytes | np.ndarray],
              consistency_threshold: float = 0.55) -> Enrolment:
        """Templates from 1-5 photos of one courier, each checked; the first failing check of
        the first failing image raises EnrolmentRefused, so the app can say exactly what to
        retake. Several photos must also agree with each other (one person, not two)."""
        if not 1 <= len(images) <= 5:
            raise EnrolmentRefused(0, "image", f"{len(images)} images given; send 1 to 5")
        s = self.settings
        encodings: list[np.ndarray] = []
        qualities: list[FaceQuality] = []
        for index, image in enumerate(images):
            try:
                frame = self._as_frame(image)
            except ImageError as exc:
                raise EnrolmentRefused(index, "image", str(exc)) from None
            faces = self.analyse(frame)
            if len(faces) != 1:
                detail = "no face found" if not faces else f"{len(faces)} faces found"
                raise EnrolmentRefused(index, "face_count", f"{detail}; exactly one is needed")
            face = faces[0]
            q = self.quality(frame, face.box)
            if q.size_px < s.min_face_px:
                raise EnrolmentRefused(
                    index, "face_size", f"face is {q.size_px} px, at least {s.min_face_px} needed")
            if q.sharpness < s.min_sharpness:
                raise EnrolmentRefused(
                    index, "sharpness",
                    f"sharpness {q.sharpness:.0f} below {s.min_sharpness:.0f} (blurred or moving)")
            if not s.min_luma <= q.mean_luma <= s.max_luma or q.clipped > s.max_clipped:
                raise EnrolmentRefused(
                    index, "exposure",
                    f"mean luminance {q.mean_luma:.0f} (allowed {s.min_luma:.0f}-"
                    f"{s.max_luma:.0f}), {q.clipped:.0%} clipped (allowed {s.max_clipped:.0%})")
            encodings.append(face.encoding)
            qualities.append(q)
        stack = np.stack(encodings)
        if len(stack) > 1:
            pair = np.linalg.norm(stack[:, None, :] - stack[None, :, :], axis=2)
            worst = int(np.argmax(pair.mean(axis=1)))
            if pair[worst].max() > consistency_threshold:
                raise EnrolmentRefused(
                    worst, "consistency",
                    f"face differs from the others (distance {pair[worst].max():.2f} > "
                    f"{consistency_threshold}); all photos must show the same person")
        return Enrolment(stack.astype(np.float32), tuple(qualities))


@dataclass(frozen=True)
class Match:
    label: str | None  # None: nobody close enough, or two couriers too close to call
    distance: float  # to the nearest template of the best label
    second_distance: float  # to the nearest template of any other label (inf if none)
    reason: str  # "matched" | "unknown" | "ambiguous" | "no_templates"


class FaceMatcher:
    """All enrolled templates in one matrix: one query is one matrix product.

    Labels may repeat (several templates per courier); a courier's distance is that of their
    closest template, and the margin is measured to the closest *other* courier."""

    def __init__(self, templates: np.ndarray, labels: Sequence[str], threshold: float = 0.5,
                 margin: float = 0.1) -> None:
        templates = np.asarray(templates, dtype=np.float32).reshape(-1, ENCODING_SIZE)
        if len(labels) != len(templates):
            raise ValueError(f"{len(templates)} templates but {len(labels)} labels")
        self.threshold = threshold
        self.margin = margin
        unique, inverse = np.unique(np.asarray(labels, dtype=object).astype(str),
                                    return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self._labels: list[str] = [str(u) for u in unique]
        self._templates = np.ascontiguousarray(templates[order])
        self._sq = np.einsum("ij,ij->i", self._templates, self._templates)
        sorted_ids = inverse[order]
        self._starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]) \
            if len(sorted_ids) else np.zeros(0, dtype=np.int64)
        self._grouped = len(self._starts) != len(self._templates)

    def __len__(self) -> int:
        return len(self._templates)

    def distances(self, encodings: np.ndarray) -> np.ndarray:
        """(M, L) distance from each query to each label's closest template."""
        q = np.asarray(encodings, dtype=np.float32).reshape(-1, ENCODING_SIZE)
        d2 = (np.einsum("ij,ij->i", q, q)[:, None] + self._sq[None, :]
              - 2.0 * (q @ self._templates.T))
        d = np.sqrt(np.maximum(d2, 0.0))
        if self._grouped:
            d = np.minimum.reduceat(d, self._starts, axis=1)
        return d

    def match(self, encodings: np.ndarray) -> list[Match]:
        q = np.asarray(encodings, dtype=np.float32).reshape(-1, ENCODING_SIZE)
        if not len(self._templates):
            return [Match(None, float("inf"), float("inf"), "no_templates") for _ in q]
        d = self.distances(q)
        if d.shape[1] >= 2:
            two = np.partition(d, 1, axis=1)[:, :2]
        else:
            two = np.c_[d[:, 0], np.full(len(d), np.inf)]
        best_idx = np.argmin(d, axis=1)
        results = []
        for i in range(len(q)):
            best, second = float(two[i, 0]), float(two[i, 1])
            if best > self.threshold:
                results.append(Match(None, best, second, "unknown"))
            elif second - best < self.margin:
                results.append(Match(None, best, second, "ambiguous"))
            else:
                results.append(Match(self._labels[best_idx[i]], best, second, "matched"))
        return results


@dataclass(frozen=True)
class FaceDecision:
    """What the entry flow acts on and logs. Holds distances, never an encoding."""

    label: str | None
    distance: float
    second_distance: float
    frames_agreeing: int
    frames_total: int
    live: bool  # blink and passive check both passed (False when the verifier runs without)
    reason: str  # matched | no_face | unknown | ambiguous | conflict | not_enough_frames
    #              | not_live (no blink) | spoof (the passive check refused the frames)
    liveness: LivenessResult | None = field(default=None, compare=False)
    passive: PassiveResult | None = field(default=None, compare=False)

    def to_log(self) -> dict[str, object]:
        """The event-log payload: enough to audit a decision, nothing to rebuild a face."""
        return {
            "label": self.label,
            "distance": None if not np.isfinite(self.distance) else round(self.distance, 4),
            "second_distance": None if not np.isfinite(self.second_distance)
            else round(self.second_distance, 4),
            "frames_agreeing": self.frames_agreeing,
            "frames_total": self.frames_total,
            "live": self.live,
            "reason": self.reason,
            "liveness": self.liveness.reason if self.liveness else None,
            "blink_min_ratio": round(self.liveness.min_ratio, 3) if self.liveness else None,
            **(self.passive.to_log() if self.passive else {"passive": None}),
        }


class FaceVerifier:
    """A decision over several frames: one frame can be a lucky match, several rarely are.

    The largest face of each frame is the person at the camera. A courier is accepted when at
    least `min_agreeing` frames match them, no frame matches somebody else, and (unless
    liveness is off) the sequence shows a blink AND the passive model judges enough of the
    frames real: the blink stops a photo, the texture model a replayed video (which blinks)."""

    def __init__(self, engine: FaceEngine, matcher: FaceMatcher,
                 liveness: LivenessChecker | None = None, min_agreeing: int = 3,
                 require_live: bool = True, passive: PassiveSettings | None = None) -> None:
        self.engine = engine
        self.matcher = matcher
        self.liveness = liveness or LivenessChecker()
        self.min_agreeing = min_agreeing
        self.require_live = require_live
        self.passive = passive or PassiveSettings()

    def decide(self, frames: Sequence[np.ndarray | bytes]) -> FaceDecision:
        decoded = [self.engine._as_frame(f) for f in frames]
        faces: list[Face | None] = []
        for frame in decoded:
            found = self.engine.analyse(frame, landmarks=self.require_live, max_faces=1,
                                        min_face_px=self.engine.settings.verify_min_face_px)
            faces.append(found[0] if found else None)
        present = [f for f in faces if f is not None]
        total = len(frames)
        if not present:
            return FaceDecision(None, float("inf"), float("inf"), 0, total, False, "no_face")
        matches = self.matcher.match(np.stack([f.encoding for f in present]))
        named = Counter(m.label for m in matches if m.label is not None)
        liveness = None
        passive = None
        live = False
        if self.require_live:
            liveness = self.liveness.check([f.landmarks if f else None for f in faces])
            passive = self._passive(decoded, faces)
            live = liveness.live and passive.real
        if not named:
            reasons = Counter(m.reason for m in matches)
            reason = "ambiguous" if reasons["ambiguous"] > reasons["unknown"] else "unknown"
            best = min(matches, key=lambda m: m.distance)
            return FaceDecision(None, best.distance, best.second_distance, 0, total, live,
                                reason, liveness, passive)
        label, agreeing = named.most_common(1)[0]
        mine = [m for m in matches if m.label == label]
        distance = float(np.median([m.distance for m in mine]))
        second = float(np.median([m.second_distance for m in mine]))
        if len(named) > 1:
            return FaceDecision(None, distance, second, agreeing, total, live, "conflict",
                                liveness, passive)
        if agreeing < self.min_agreeing:
            return FaceDecision(None, distance, second, agreeing, total, live,
                                "not_enough_frames", liveness, passive)
        if self.require_live and liveness is not None and not liveness.live:
            return FaceDecision(None, distance, second, agreeing, total, False, "not_live",
                                liveness, passive)
        if self.require_live and passive is not None and not passive.real:
            return FaceDecision(None, distance, second, agreeing, total, False, "spoof",
                                liveness, passive)
        return FaceDecision(label, distance, second, agreeing, total, live, "matched", liveness,
                            passive)

    def _passive(self, frames: list[np.ndarray], faces: list[Face | None]) -> PassiveResult:
        """P(real) of each frame where HOG saw a face (frames without one are not judged
        real: they count against the share)."""
        if not self.passive.enabled:
            return judge([], self.passive)
        spoof = self.engine.antispoof
        scores = [spoof.score(frame, face.box.xywh()) if face is not None else None
                  for frame, face in zip(frames, faces, strict=True)]
        return judge(scores, self.passive)
