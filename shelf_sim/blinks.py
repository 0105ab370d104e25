"""Synthetic face frames: a blinking "live" sequence and a moved photo, for the vision tests
and for the simulator's couriers at the face camera (shelf_sim may not import tests/, so the
code lives here and the tests import it).

The live sequence is synthetic, and docs/faces.md says so: a real face image with the eyes
painted shut for a few frames (skin from just above the eye pulled down over it, a dark lash
line along the lower lid) plus a small non-rigid wobble between frames. It exercises the
liveness logic end to end through dlib's landmarks; it is not evidence about real blinks.
"""

from __future__ import annotations

import cv2
import numpy as np

LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)


def _close_level_eye(image: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Close one eye whose corners lie on a horizontal line (see close_eyes)."""
    out = image.copy()
    x0, y0 = eye.min(axis=0)
    x1, y1 = eye.max(axis=0)
    w, h = x1 - x0, max(y1 - y0, 4.0)
    ex0, ex1 = int(x0 - 0.3 * w), int(x1 + 0.3 * w)
    ey0, ey1 = int(y0 - 0.8 * h), int(y1 + 0.4 * h)
    rh, rw = ey1 - ey0, ex1 - ex0
    skin_src = image[max(ey0 - rh, 0):ey0, ex0:ex1]
    if skin_src.size == 0 or ex0 < 0 or ey0 < 0:
        return out
    closed = cv2.resize(skin_src, (rw, rh), interpolation=cv2.INTER_LINEAR)
    band_h = max(int(0.3 * h), 2)
    band = cv2.resize(image[int(y0):int(y1) + 1, ex0:ex1], (rw, band_h),
                      interpolation=cv2.INTER_AREA)
    band_top = int(y1 - ey0 - band_h)
    closed[band_top:band_top + band_h] = band
    lash_y = band_top + band_h // 2
    cv2.line(closed, (int(x0 - ex0), lash_y), (int(x1 - ex0), lash_y), (45, 38, 38),
             max(int(h * 0.2), 1), cv2.LINE_AA)
    mask = np.zeros((rh, rw), np.float32)
    centre = (int((x0 + x1) / 2 - ex0), int((y0 + y1) / 2 - ey0))
    cv2.ellipse(mask, centre, (int(w * 0.7), int(h * 1.3)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(h * 0.3, 1.0))[..., None]
    patch = out[ey0:ey1, ex0:ex1].astype(np.float32)
    out[ey0:ey1, ex0:ex1] = (closed * mask + patch * (1 - mask)).astype(np.uint8)
    return out


def close_eyes(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The image with both eyes painted closed: each eye, turned level, squashed into a thin
    band at the lower lid with the space above filled by skin from above the eye."""
    out = image
    h, w = image.shape[:2]
    for sl in (LEFT_EYE, RIGHT_EYE):
        eye = landmarks[sl].astype(np.float64)
        dx, dy = eye[3] - eye[0]
        angle = float(np.degrees(np.arctan2(dy, dx)))
        centre = (float(eye[:, 0].mean()), float(eye[:, 1].mean()))
        rot = cv2.getRotationMatrix2D(centre, angle, 1.0)
        level = cv2.warpAffine(out, rot, (w, h), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
        level_eye = (np.c_[eye, np.ones(6)] @ rot.T).astype(np.float32)
        shut = _close_level_eye(level, level_eye)
        back = cv2.warpAffine(shut, cv2.invertAffineTransform(rot), (w, h),
                              flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        # paste back only around the eye, so the rest of the face is untouched by resampling
        mask = np.zeros((h, w), np.float32)
        ew = float(np.linalg.norm(eye[3] - eye[0]))
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(ew), int(ew * 0.8)),
                    angle, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(ew * 0.15, 1.0))[..., None]
        out = (back * mask + out.astype(np.float32) * (1 - mask)).astype(np.uint8)
    return out


def wobble(image: np.ndarray, seed: int, amplitude: float = 1.5) -> np.ndarray:
    """A small smooth non-rigid displacement plus a sub-pixel shift: consecutive camera
    frames of a person are never pixel-identical."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    coarse = rng.normal(0, amplitude, (2, 4, 4)).astype(np.float32)
    dx = cv2.resize(coarse[0], (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(coarse[1], (w, h), interpolation=cv2.INTER_CUBIC)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def live_sequence(image: np.ndarray, landmarks: np.ndarray, frames: int = 8,
                  closed: tuple[int, ...] = (3, 4)) -> list[np.ndarray]:
    """Open eyes, a blink over the `closed` frames, open again; every frame wobbled."""
    shut = close_eyes(image, landmarks)
    return [wobble(shut if i in closed else image, seed=i) for i in range(frames)]


def still_sequence(image: np.ndarray, frames: int = 8) -> list[np.ndarray]:
    """The same photo, frame after frame."""
    return [image.copy() for _ in range(frames)]


def moved_photo_sequence(image: np.ndarray, frames: int = 8) -> list[np.ndarray]:
    """A printed photo held up and moved: rotated, shifted, scaled, and tilted back and
    forth (a perspective squash that makes the eyes look narrower on screen)."""
    h, w = image.shape[:2]
    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        angle = -6 + 12 * t
        scale = 1.0 + 0.05 * np.sin(2 * np.pi * t)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        m[:, 2] += (4 * np.sin(3 * t), 3 * np.cos(2 * t))
        img = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        # tilt about the horizontal axis: top edge recedes, picture squashed vertically
        tilt = 0.25 * np.sin(np.pi * t)  # strongest in the middle frames, like a blink
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = np.float32([[w * tilt * 0.3, h * tilt], [w * (1 - tilt * 0.3), h * tilt],
                          [w, h], [0, h]])
        img = cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (w, h),
                                  borderMode=cv2.BORDER_REPLICATE)
        out.append(img)
    return out


def squash_eyes(image: np.ndarray, landmarks: np.ndarray, keep: float = 0.15) -> np.ndarray:
    """A second way to shut the eyes, for faces where painting them over does not move dlib's
    landmarks enough (the anti-spoofing samples): the upper lid is pulled down geometrically
    to `keep` of the eye's opening, the skin above stretched after it, blended in an ellipse
    round each eye. The eye's own texture stays, only its opening goes."""
    h, w = image.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_y = ys.copy()
    for sl in (LEFT_EYE, RIGHT_EYE):
        eye = landmarks[sl].astype(np.float64)
        width = float(np.linalg.norm(eye[3] - eye[0]))
        cx, cy = float(eye[:, 0].mean()), float(eye[:, 1].mean())
        upper, lower = min(eye[1, 1], eye[2, 1]), max(eye[4, 1], eye[5, 1])
        opening = max(lower - upper, 2.0)
        top = upper - 0.6 * width
        new_upper = lower - keep * opening
        # where each destination row reads from: brow..new lid <- brow..old lid, then the
        # remaining sliver <- the whole opening
        src = np.where(ys < new_upper,
                       top + (ys - top) * (upper - top) / max(new_upper - top, 1e-3),
                       upper + (ys - new_upper) * (lower - upper) / max(lower - new_upper, 1e-3))
        src = np.where((ys >= top) & (ys <= lower), src, ys)
        mask = np.zeros((h, w), np.float32)
        cv2.ellipse(mask, (int(cx), int(cy - 0.2 * width)), (int(width * 0.9), int(width * 0.75)),
                    0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(width * 0.12, 1.0))
        map_y = map_y * (1 - mask) + src * mask
    return cv2.remap(image, xs, map_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def squashed_blink_sequence(image: np.ndarray, landmarks: np.ndarray, frames: int = 8,
                            closed: tuple[int, ...] = (3, 4)) -> list[np.ndarray]:
    """live_sequence with squash_eyes for the closed frames."""
    shut = squash_eyes(image, landmarks)
    return [wobble(shut if i in closed else image, seed=i) for i in range(frames)]
