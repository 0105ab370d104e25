"""Presentation attacks rendered from the test faces (used by the vision tests and by the
simulator's impostors at the face camera): a phone screen replaying a
face (bezel, glare, pixel grid), a printed photo (paper, halftone, white border), and a screen
photographed close enough for moiré. Each takes a BGR portrait and returns a 640x480 BGR
camera frame; a seed varies the pose and light so a sequence of frames is never identical.

These are renderings, not captures: they carry the cues a texture model looks for (a frame
around the face, a pixel grid, the flat colour of a screen or paper) in the strength we chose.
A real phone, printer and camera differ; docs/faces.md says what that means for the figures.
"""

from __future__ import annotations

import cv2
import numpy as np

FRAME = (480, 640)  # h, w


def _room(seed: int) -> np.ndarray:
    """A plain indoor background: a soft vertical gradient with a little noise."""
    rng = np.random.default_rng(seed)
    h, w = FRAME
    top = rng.uniform(120, 170, 3)
    bottom = rng.uniform(60, 110, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    room = (top * (1 - t) + bottom * t) * np.ones((1, w, 1))
    return np.clip(room + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)


def _place(surface: np.ndarray, seed: int, height_frac: float = 0.8) -> np.ndarray:
    """The surface (screen or print) held in front of the camera, slightly turned."""
    rng = np.random.default_rng(seed)
    h, w = FRAME
    sh, sw = surface.shape[:2]
    scale = height_frac * h / sh
    tw, th = sw * scale, sh * scale
    cx = w / 2 + rng.uniform(-20, 20)
    cy = h / 2 + rng.uniform(-10, 10)
    j = lambda: rng.uniform(-0.03, 0.03) * tw  # noqa: E731 - a corner's jitter
    dst = np.float32([[cx - tw / 2 + j(), cy - th / 2 + j()], [cx + tw / 2 + j(), cy - th / 2 + j()],
                      [cx + tw / 2 + j(), cy + th / 2 + j()], [cx - tw / 2 + j(), cy + th / 2 + j()]])
    src = np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]])
    m = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(surface, m, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((sh, sw), 255, np.uint8), m, (w, h))
    out = _room(seed)
    out[mask > 0] = warped[mask > 0]
    return out


def _camera(frame: np.ndarray, seed: int) -> np.ndarray:
    """What the entry camera adds: a little blur, sensor noise and JPEG compression."""
    rng = np.random.default_rng(seed + 1000)
    frame = cv2.GaussianBlur(frame, (3, 3), 0.6)
    noisy = np.clip(frame.astype(np.float32) + rng.normal(0, 2.5, frame.shape), 0, 255)
    ok, buf = cv2.imencode(".jpg", noisy.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 88])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _fit(face: np.ndarray, h: int, w: int) -> np.ndarray:
    """The portrait cropped to the surface's aspect and resized to it."""
    fh, fw = face.shape[:2]
    aspect = w / h
    if fw / fh > aspect:
        cw = int(fh * aspect)
        face = face[:, (fw - cw) // 2:(fw - cw) // 2 + cw]
    else:
        ch = int(fw / aspect)
        face = face[(fh - ch) // 2:(fh - ch) // 2 + ch]
    return cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA)


def phone_screen(face: np.ndarray, seed: int = 0, glare: float = 0.35,
                 screen: tuple[int, int] = (330, 190), height_frac: float = 0.92) -> np.ndarray:
    """A phone held up replaying the face: black bezel, an LCD pixel grid, a screen's blue
    white point and lifted blacks, and a glare streak across the glass. `screen` is (h, w)
    in screen pixels (portrait by default; (190, 330) is the phone turned sideways), and
    `height_frac` how much of the frame's height the phone fills."""
    rng = np.random.default_rng(seed)
    sh, sw = screen  # screen pixels that reach the camera at this distance (portrait phone)
    screen = _fit(face, sh, sw).astype(np.float32)
    screen = 25 + screen * 0.85  # lifted blacks, reduced contrast
    screen *= np.array([1.08, 1.0, 0.93])  # BGR: cool white point
    # the pixel grid: every screen pixel becomes 3x3 camera-side sub-pixels (B, G, R columns)
    big = cv2.resize(screen, (sw * 3, sh * 3), interpolation=cv2.INTER_NEAREST)
    grid = np.ones_like(big) * 0.55
    for c in range(3):
        grid[:, c::3, c] = 1.25
    grid[2::3, :, :] *= 0.7  # the dark line between pixel rows
    big = big * grid
    # glare: a soft bright diagonal band
    yy, xx = np.mgrid[0:big.shape[0], 0:big.shape[1]].astype(np.float32)
    offset = rng.uniform(0.2, 0.8) * big.shape[1]
    band = np.exp(-(((xx - yy * 0.5 - offset) / (0.12 * big.shape[1])) ** 2))
    big = big + glare * 255 * band[..., None]
    bezel = 18
    phone = np.full((big.shape[0] + 2 * bezel, big.shape[1] + 2 * bezel, 3), 12, np.float32)
    phone[bezel:-bezel, bezel:-bezel] = big
    phone = np.clip(phone, 0, 255).astype(np.uint8)
    return _camera(_place(phone, seed, height_frac), seed)


def printed_photo(face: np.ndarray, seed: int = 0) -> np.ndarray:
    """A photo printed on office paper and held up: white margin, warm paper, halftone dots,
    washed-out colour and paper grain."""
    rng = np.random.default_rng(seed)
    ph, pw = 560, 420
    photo = _fit(face, ph, pw).astype(np.float32)
    gray = photo.mean(axis=2, keepdims=True)
    photo = gray + 0.7 * (photo - gray)  # printers lose saturation
    photo = 30 + photo * 0.78  # paper never gets black
    # halftone: a fine rotated dot screen modulating the ink
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    a = np.deg2rad(45)
    u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
    dots = 0.5 + 0.5 * np.cos(2 * np.pi * u / 4.0) * np.cos(2 * np.pi * v / 4.0)
    photo = photo * (0.82 + 0.18 * dots[..., None])
    margin = 40
    paper = np.full((ph + 2 * margin, pw + 2 * margin, 3), 0, np.float32)
    paper[:] = np.array([215, 228, 236])  # BGR warm white
    paper[margin:-margin, margin:-margin] = photo
    grain = cv2.GaussianBlur(rng.normal(0, 8, paper.shape[:2]).astype(np.float32), (0, 0), 1.2)
    paper = paper + grain[..., None]
    paper = np.clip(paper, 0, 255).astype(np.uint8)
    return _camera(_place(paper, seed, 0.95), seed)


def moire_screen(face: np.ndarray, seed: int = 0, strength: float = 0.25) -> np.ndarray:
    """A monitor filmed from close by: interference of its pixel pitch with the camera's,
    a slanted low-frequency colour banding over the whole screen."""
    rng = np.random.default_rng(seed)
    sh, sw = 400, 300
    screen = _fit(face, sh, sw).astype(np.float32)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    a = rng.uniform(0.1, 0.4)
    period = rng.uniform(5.0, 9.0)
    phase = (xx * np.cos(a) + yy * np.sin(a)) / period
    bands = np.stack([np.cos(2 * np.pi * phase + k * 2.1) for k in range(3)], axis=2)
    screen = screen * (1 + strength * bands) + 10
    rim = 12
    frame = np.full((sh + 2 * rim, sw + 2 * rim, 3), 30, np.float32)
    frame[rim:-rim, rim:-rim] = screen
    return _camera(_place(np.clip(frame, 0, 255).astype(np.uint8), seed, 0.95), seed)


ATTACKS = {"phone_screen": phone_screen, "printed_photo": printed_photo, "moire": moire_screen}


def live_frame(face: np.ndarray, seed: int = 0) -> np.ndarray:
    """The control: the portrait itself at the camera's frame size, through the same camera
    model (blur, noise, JPEG), so only the attack differs."""
    h, w = FRAME
    return _camera(_fit(face, h, w), seed)
