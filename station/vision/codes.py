"""Reading waybills (Code 128) and pickup QR codes from document-camera frames.

Why three passes (DESIGN §6 has the measurements behind this):
1. zxing-cpp over the whole frame: fast, reads every QR and every 1-D code within ~15° of
   level. It is a row scanner, so 1-D codes tilted further are lost.
2. OpenCV's barcode detector finds 1-D symbols at any angle but decodes only EAN/UPC (and
   then invents valid-looking EAN strings), so we use it only to *locate*: each located
   symbol is cut out, turned level and handed to zxing-cpp.
3. OpenCV's QRCodeDetectorAruco when zxing read no QR at all (it copes well with noise but
   costs 50-100 ms a frame, so it is a fallback, not a routine pass).
Results are de-duplicated by (symbology, text). Pickup-code QR payloads are returned as
plain text: parsing them is the flows' business.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import zxingcpp

from station.vision.images import ensure_frame

_FORMATS = {
    zxingcpp.BarcodeFormat.Code128: "code128",
    zxingcpp.BarcodeFormat.QRCode: "qr",
}


@dataclass(frozen=True)
class DecodedCode:
    symbology: str  # "code128" | "qr"
    text: str
    corners: tuple[tuple[float, float], ...]  # 4 points in frame pixels, clockwise


def _symbology(fmt: object) -> str | None:
    for key, name in _FORMATS.items():
        if fmt == key:
            return name
    text = str(fmt).lower()
    if "code128" in text:
        return "code128"
    if "qr" in text and "micro" not in text and "rmqr" not in text:
        return "qr"
    return None


def _corners(position: object) -> tuple[tuple[float, float], ...]:
    pts = [position.top_left, position.top_right,  # type: ignore[attr-defined]
           position.bottom_right, position.bottom_left]  # type: ignore[attr-defined]
    return tuple((float(p.x), float(p.y)) for p in pts)


class CodeReader:
    """Holds the OpenCV detectors (building them per frame costs more than using them)."""

    def __init__(self, *, straighten: bool = True, aruco_qr: bool = True,
                 max_crops: int = 24) -> None:
        self.straighten = straighten
        self.aruco_qr = aruco_qr
        self.max_crops = max_crops
        self._barcode = cv2.barcode.BarcodeDetector()
        self._qr = cv2.QRCodeDetectorAruco()
        self._lock = threading.Lock()
        self._formats = (zxingcpp.BarcodeFormat.Code128, zxingcpp.BarcodeFormat.QRCode)

    def _zxing(self, gray: np.ndarray) -> list[DecodedCode]:
        found = []
        for result in zxingcpp.read_barcodes(gray, formats=self._formats, try_rotate=True,  # type: ignore[arg-type]
                                             try_downscale=True, try_invert=False):
            name = _symbology(result.format)
            if name is None or not result.valid or not result.text:
                continue
            found.append(DecodedCode(name, result.text, _corners(result.position)))
        return found

    def decode(self, frame: np.ndarray) -> list[DecodedCode]:
        """Every Code 128 and QR code in the frame, once each."""
        image = ensure_frame(frame)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        results: dict[tuple[str, str], DecodedCode] = {}

        def add(codes: Iterable[DecodedCode]) -> None:
            for code in codes:
                results.setdefault((code.symbology, code.text), code)

        add(self._zxing(gray))
        with self._lock:
            if self.straighten:
                add(self._located_1d(gray, [c for c in results.values()]))
            if self.aruco_qr and not any(c.symbology == "qr" for c in results.values()):
                # fallback only: it costs 50-100 ms a frame and, measured on rendered codes,
                # never read a QR zxing had missed when zxing had read any QR in the frame
                add(self._aruco(gray))
        return list(results.values())

    def _located_1d(self, gray: np.ndarray, known: Sequence[DecodedCode]) -> list[DecodedCode]:
        # the detector works on a copy downsampled to this size: 512 (its default) loses
        # waybills in a 5 MP document-camera frame, 1024 finds them (measured: 1 vs 10 of 10)
        self._barcode.setDownsamplingThreshold(512 if max(gray.shape) <= 1920 else 1024)
        ok, points = self._barcode.detect(gray)
        if not ok or points is None:
            return []
        found: list[DecodedCode] = []
        polygons = [np.array(c.corners, np.float32) for c in known if c.symbology == "code128"]
        for quad in np.asarray(points, np.float32).reshape(-1, 4, 2)[: self.max_crops]:
            centre = quad.mean(axis=0)
            if any(cv2.pointPolygonTest(poly, (float(centre[0]), float(centre[1])), False) >= 0
                   for poly in polygons):
                continue  # already read in the whole-frame pass
            crop, inverse = _straighten(gray, quad)
            if crop is None:
                continue
            codes = [c for c in self._zxing(crop) if c.symbology == "code128"]
            if not codes:
                # bars are vertical in the levelled crop: averaging along them removes the
                # noise and the resampling aliasing of a rotated print (measured: recovers
                # most 20-25° symbols the plain crop lost)
                smooth = cv2.blur(crop, (1, max(crop.shape[0] // 16, 3)))
                codes = [c for c in self._zxing(smooth) if c.symbology == "code128"]
            for code in codes:
                if code.symbology != "code128":
                    continue
                pts = np.array(code.corners, np.float32).reshape(-1, 1, 2)
                back = cv2.transform(pts, inverse).reshape(-1, 2)
                found.append(DecodedCode(code.symbology, code.text,
                                         tuple((float(x), float(y)) for x, y in back)))
                polygons.append(back.astype(np.float32))
        return found

    def _aruco(self, gray: np.ndarray) -> list[DecodedCode]:
        try:
            ok, texts, points, _ = self._qr.detectAndDecodeMulti(gray)
        except cv2.error:
            return []
        if not ok or points is None:
            return []
        return [
            DecodedCode("qr", text, tuple((float(x), float(y)) for x, y in quad))
            for text, quad in zip(texts, np.asarray(points).reshape(-1, 4, 2)) if text
        ]


def _straighten(gray: np.ndarray, quad: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Cut the located symbol out level, with a quiet zone around it; also returns the
    affine map from crop pixels back to frame pixels."""
    (cx, cy), (w, h), angle = cv2.minAreaRect(quad)
    if w < 4 or h < 4:
        return None, np.eye(2, 3, dtype=np.float32)
    if w < h:  # make the long side horizontal: 1-D codes are wider than tall
        w, h = h, w
        angle += 90.0
    # OpenCV's box hugs the bars; zxing needs the quiet zone and some bar height
    out_w = int(w * 1.3 + 20)
    out_h = int(max(h * 1.6, w * 0.25) + 20)
    rot = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    rot[:, 2] += (out_w / 2 - cx, out_h / 2 - cy)  # type: ignore[arg-type]
    crop = cv2.warpAffine(gray, rot, (out_w, out_h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    # small symbols: enlarge so each module spans a few pixels
    scale = 1.0
    if out_w < 400:
        scale = 400 / out_w
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    forward = np.vstack([rot, [0, 0, 1]])
    forward = np.diag([scale, scale, 1.0]) @ forward
    inverse = np.linalg.inv(forward)[:2].astype(np.float32)
    return crop, inverse


def decode_codes(frame: np.ndarray, reader: CodeReader | None = None) -> list[DecodedCode]:
    """Convenience for one-off calls; services keep one CodeReader and reuse it."""
    return (reader or CodeReader()).decode(frame)


@dataclass(frozen=True)
class Waybill:
    carrier: str
    waybill: str


class WaybillMatcher:
    """Which carrier a scanned text belongs to, by the carriers' configured patterns.

    A text matching no pattern is not a waybill (a product barcode, a send code, noise); one
    matching two carriers' patterns is refused too, since we cannot know whose it is."""

    def __init__(self, carriers: Sequence[Any]) -> None:
        self._patterns = [
            (str(c.name), re.compile(str(c.pattern)))
            for c in carriers
        ]

    def match(self, text: str) -> Waybill | None:
        text = text.strip()
        hits = [name for name, pattern in self._patterns if pattern.fullmatch(text)]
        if len(hits) != 1:
            return None
        return Waybill(hits[0], text)

    def waybills(self, codes: Iterable[DecodedCode]) -> list[Waybill]:
        """The Code 128 results that are waybills, in the order read, without repeats."""
        seen: dict[str, Waybill] = {}
        for code in codes:
            if code.symbology != "code128":
                continue
            wb = self.match(code.text)
            if wb is not None:
                seen.setdefault(wb.waybill, wb)
        return list(seen.values())
