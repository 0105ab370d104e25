"""Rendered codes for the tests and benchmarks: python-barcode Code 128 and segno QR
(`make_qr`: plain `make` picks Micro QR for short texts, which no scanner here reads)."""

from __future__ import annotations

import io

import barcode
import cv2
import numpy as np
import segno
from barcode.writer import ImageWriter


def code128_image(text: str, module_px: float = 2.0, bar_height_mm: float = 12.0) -> np.ndarray:
    """A Code 128 label as a grey image (white quiet zone included)."""
    writer = ImageWriter()
    buf = io.BytesIO()
    barcode.get("code128", text, writer=writer).write(
        buf, options={"module_width": module_px * 25.4 / 300, "module_height": bar_height_mm,
                      "dpi": 300, "quiet_zone": 4.0, "font_size": 0, "text_distance": 1.0,
                      "write_text": False})
    img = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert img is not None
    return img


def qr_image(text: str, scale: int = 5) -> np.ndarray:
    buf = io.BytesIO()
    segno.make_qr(text, error="m").save(buf, kind="png", scale=scale, border=4)
    img = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert img is not None
    return img


def rotate(img: np.ndarray, angle: float) -> np.ndarray:
    """Rotated about its centre, canvas grown to fit, new corners white."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[:, 2] += (nw / 2 - w / 2, nh / 2 - h / 2)
    return cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=255)


def compose(labels: list[np.ndarray], size: tuple[int, int] = (1920, 1080),
            seed: int = 0) -> np.ndarray:
    """Labels laid out on a light document-camera background in a grid, BGR."""
    w, h = size
    rng = np.random.default_rng(seed)
    canvas = np.full((h, w), 200, np.uint8)
    n = len(labels)
    cols = int(np.ceil(np.sqrt(n * w / h)))
    rows = int(np.ceil(n / cols))
    cw, ch = w // cols, h // rows
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        lh, lw = label.shape[:2]
        if lw > cw or lh > ch:
            s = min(cw / lw, ch / lh) * 0.95
            label = cv2.resize(label, (int(lw * s), int(lh * s)), interpolation=cv2.INTER_AREA)
            lh, lw = label.shape[:2]
        x = c * cw + int(rng.integers(0, max(cw - lw, 0) + 1))
        y = r * ch + int(rng.integers(0, max(ch - lh, 0) + 1))
        canvas[y:y + lh, x:x + lw] = np.minimum(canvas[y:y + lh, x:x + lw], label)
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)


def degrade(img: np.ndarray, blur_sigma: float = 0.0, noise_sigma: float = 0.0,
            seed: int = 0) -> np.ndarray:
    out = img.astype(np.float32)
    if blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur_sigma)
    if noise_sigma > 0:
        out += np.random.default_rng(seed).normal(0, noise_sigma, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def waybill_numbers(n: int, seed: int = 0) -> list[str]:
    """Texts that match the example config's carriers (SF, ZTO, YTO, JD)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 4
        digits = "".join(str(d) for d in rng.integers(0, 10, 14))
        if kind == 0:
            out.append("SF" + digits[:13])
        elif kind == 1:
            out.append("ZT" + digits[:12])
        elif kind == 2:
            out.append("YT" + digits[:13])
        else:
            out.append("JD" + "".join("0123456789ABCDEF"[d] for d in rng.integers(0, 16, 14)))
    return out
