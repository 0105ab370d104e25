"""Waybill reading: decode time per document-camera frame and decode rate under rotation,
blur and noise, each beside its baselines measured in the same run.

ours:       station.vision.codes.CodeReader().decode(frame), the reader the station uses
            (zxing-cpp whole frame, then OpenCV-located symbols straightened and read again
            with zxing-cpp, then the QRCodeDetectorAruco fallback, which runs on every frame
            here because waybill frames carry no QR).
baseline 1: zxing-cpp alone on the whole frame, no straightening: `zxingcpp.read_barcodes`
            with the same formats and options as our first pass.
baseline 2: OpenCV's barcode detector alone (`cv2.barcode.BarcodeDetector`
            .detectAndDecodeWithType): it decodes EAN/UPC only, so we count how many Code 128
            waybills it decodes (expected 0) and how many other strings it invents.

Frames (rendered with tests/vision/codegen.py, as the tests do): python-barcode Code 128
labels (2 px modules, 12 mm bars at 300 dpi) of carrier-format waybill numbers, each turned
by its own random angle in [-30°, 30°] (labels are laid down by hand), placed in a grid on a
light background by `compose`, which shrinks labels that do not fit their grid cell; the
effective module width is reported per configuration, since it, not the pixel count, decides
what can be read. The decode-rate set is 1920x1080 frames with 5 labels at one angle
(alternating sign) per frame, angles 0-30° in 5° steps, each clean, blurred, noisy, both, and
one blur past the limit (sigma 1.5 px = 0.75 module: nothing reads it, ours or zxing).

Timing: each frame is decoded `reps` times, ours and the baselines alternating, p50/p95 over
all decodes of a configuration. OpenCV keeps its default thread count (reported).
`python -m bench.bench_codes [--quick]` prints the table.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zxingcpp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from station.config import load_config
from station.vision.codes import CodeReader, WaybillMatcher
from tests.vision.codegen import (
    code128_image,
    compose,
    degrade,
    rotate,
    waybill_numbers,
)

SIZES = ((1280, 720), (1920, 1080))
COUNTS = (1, 5, 10)
ANGLES = (0, 5, 10, 15, 20, 25, 30)
CONDITIONS = {  # name: (Gaussian blur sigma px, Gaussian noise sigma grey levels)
    "clean": (0.0, 0.0),
    "blur 1.0": (1.0, 0.0),
    "blur 1.25": (1.25, 0.0),
    "noise 8": (0.0, 8.0),
    "noise 16": (0.0, 16.0),
    "blur 1.0 + noise 8": (1.0, 8.0),
    "blur 1.5 (0.75 module: past the limit)": (1.5, 0.0),
}
MODULE_PX = 2.0  # code128_image's default
# a misread that still fits a carrier's pattern is the dangerous kind: a wrong waybill accepted
WAYBILLS = WaybillMatcher(load_config(ROOT / "examples" / "station.toml").carriers)


def _valid_misreads(found: set[str], expected: set[str]) -> int:
    return sum(1 for t in found - expected if WAYBILLS.match(t) is not None)


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def _fit_scale(labels: list[np.ndarray], size: tuple[int, int]) -> float:
    """The mean factor by which `compose` shrinks these labels (mirrors its grid)."""
    w, h = size
    n = len(labels)
    cols = int(np.ceil(np.sqrt(n * w / h)))
    rows = int(np.ceil(n / cols))
    cw, ch = w // cols, h // rows
    scales = []
    for label in labels:
        lh, lw = label.shape[:2]
        scales.append(min(cw / lw, ch / lh) * 0.95 if (lw > cw or lh > ch) else 1.0)
    return float(np.mean(scales))


class _Zxing:
    """zxing-cpp alone on the whole frame: our first pass, nothing after it."""

    formats = (zxingcpp.BarcodeFormat.Code128, zxingcpp.BarcodeFormat.QRCode)

    def decode(self, frame: np.ndarray) -> set[str]:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return {r.text for r in zxingcpp.read_barcodes(
            gray, formats=self.formats, try_rotate=True, try_downscale=True, try_invert=False)
            if r.valid and r.text}


class _OpenCV:
    """OpenCV's barcode detector alone: returns every non-empty string it decodes."""

    def __init__(self) -> None:
        self.detector = cv2.barcode.BarcodeDetector()

    def decode(self, frame: np.ndarray) -> list[str]:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        ok, texts, _types, _points = self.detector.detectAndDecodeWithType(gray)
        return [t for t in (texts or ()) if t] if ok else []


def _timing(reader: CodeReader, zx: _Zxing, ocv: _OpenCV, frames_per_config: int,
            reps: int) -> dict[tuple[tuple[int, int], int], dict[str, Any]]:
    out: dict[tuple[tuple[int, int], int], dict[str, Any]] = {}
    for size in SIZES:
        for count in COUNTS:
            t_ours: list[float] = []
            t_zx: list[float] = []
            t_cv: list[float] = []
            read = {"ours": 0, "zxing": 0, "opencv": 0, "ours_false": 0, "zxing_false": 0,
                    "opencv_false": 0, "ours_valid_misread": 0, "zxing_valid_misread": 0,
                    "present": 0}
            scales = []
            for f in range(frames_per_config):
                seed = 1000 * count + 10 * size[0] + f
                rng = np.random.default_rng(seed)
                texts = waybill_numbers(count, seed=seed)
                labels = [rotate(code128_image(t), float(rng.uniform(-30, 30))) for t in texts]
                scales.append(_fit_scale(labels, size))
                frame = compose(labels, size=size, seed=seed)
                expected = set(texts)
                for r in range(reps):
                    t0 = time.perf_counter()
                    ours = {c.text for c in reader.decode(frame) if c.symbology == "code128"}
                    t1 = time.perf_counter()
                    base = zx.decode(frame)
                    t2 = time.perf_counter()
                    cvs = ocv.decode(frame)
                    t3 = time.perf_counter()
                    t_ours.append(t1 - t0)
                    t_zx.append(t2 - t1)
                    t_cv.append(t3 - t2)
                    if r == 0:
                        read["present"] += len(expected)
                        read["ours"] += len(ours & expected)
                        read["ours_false"] += len(ours - expected)
                        read["zxing"] += len(base & expected)
                        read["zxing_false"] += len(base - expected)
                        read["ours_valid_misread"] += _valid_misreads(ours, expected)
                        read["zxing_valid_misread"] += _valid_misreads(base, expected)
                        read["opencv"] += sum(1 for t in set(cvs) if t in expected)
                        read["opencv_false"] += sum(1 for t in cvs if t not in expected)
            out[(size, count)] = {"ours": t_ours, "zxing": t_zx, "opencv": t_cv, "read": read,
                                  "module_px": MODULE_PX * float(np.mean(scales))}
    return out


def _rates(reader: CodeReader, zx: _Zxing, ocv: _OpenCV, angles: tuple[int, ...],
           frames_per_cell: int) -> dict[tuple[int, str], dict[str, int]]:
    out: dict[tuple[int, str], dict[str, int]] = {}
    for angle in angles:
        for name, (blur, noise) in CONDITIONS.items():
            cell = {"present": 0, "ours": 0, "zxing": 0, "opencv": 0, "opencv_false": 0,
                    "ours_false": 0, "zxing_false": 0, "ours_valid_misread": 0,
                    "zxing_valid_misread": 0}
            for f in range(frames_per_cell):
                seed = 7 * angle + 101 * f + len(name)
                texts = waybill_numbers(5, seed=seed)
                labels = [rotate(code128_image(t), angle if i % 2 else -angle)
                          for i, t in enumerate(texts)]
                frame = degrade(compose(labels, size=(1920, 1080), seed=seed),
                                blur_sigma=blur, noise_sigma=noise, seed=seed)
                expected = set(texts)
                ours = {c.text for c in reader.decode(frame) if c.symbology == "code128"}
                cvs = ocv.decode(frame)
                base = zx.decode(frame)
                cell["present"] += len(expected)
                cell["ours"] += len(ours & expected)
                cell["zxing"] += len(base & expected)
                cell["ours_false"] += len(ours - expected)
                cell["zxing_false"] += len(base - expected)
                cell["ours_valid_misread"] += _valid_misreads(ours, expected)
                cell["zxing_valid_misread"] += _valid_misreads(base, expected)
                cell["opencv"] += sum(1 for t in set(cvs) if t in expected)
                cell["opencv_false"] += sum(1 for t in cvs if t not in expected)
            out[(angle, name)] = cell
    return out


def run(quick: bool = False) -> dict[str, Any]:
    reader, zx, ocv = CodeReader(), _Zxing(), _OpenCV()
    # warm-up: first calls allocate detector buffers
    warm = compose([code128_image(waybill_numbers(1)[0])], size=(1280, 720))
    for _ in range(2):
        reader.decode(warm)
        zx.decode(warm)
        ocv.decode(warm)
    frames_per_config, reps = (2, 2) if quick else (10, 5)
    angles, frames_per_cell = ((0, 15, 30), 1) if quick else (ANGLES, 4)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    timing = _timing(reader, zx, ocv, frames_per_config, reps)
    t_mid = time.perf_counter()
    rates = _rates(reader, zx, ocv, angles, frames_per_cell)
    t_end = time.perf_counter()

    ms = 1000.0
    rows: list[dict[str, Any]] = []
    for (size, count), t in timing.items():
        label = f"{size[0]}x{size[1]}, {count} waybill{'s' if count > 1 else ''}"
        for p in (50, 95):
            rows.append({"figure": f"codes: decode time per frame, {label}, p{p} "
                                   "(baseline zxing-cpp alone)",
                         "ours": _pct(t["ours"], p) * ms, "baseline": _pct(t["zxing"], p) * ms,
                         "unit": "ms", "target": None})
        rd = t["read"]
        rows.append({"figure": f"codes: waybills read, {label}, angles ±30°, "
                               f"module {t['module_px']:.1f} px (baseline zxing-cpp alone)",
                     "ours": 100.0 * rd["ours"] / rd["present"],
                     "baseline": 100.0 * rd["zxing"] / rd["present"],
                     "unit": "%", "target": None})
    def total(key: str, src: dict[Any, dict[str, Any]], inner: str | None = None) -> int:
        return sum((v[inner] if inner else v)[key] for v in src.values())
    rows.append({"figure": "codes: Code 128 decoded by OpenCV's barcode detector alone "
                           "(all timing frames; ours for comparison)",
                 "ours": float(total("ours", timing, "read")),
                 "baseline": float(total("opencv", timing, "read")),
                 "unit": "codes", "target": None})
    rows.append({"figure": "codes: strings invented (not a waybill present) on timing frames, "
                           "ours vs OpenCV's detector",
                 "ours": float(total("ours_false", timing, "read")),
                 "baseline": float(total("opencv_false", timing, "read")),
                 "unit": "strings", "target": None})
    rows.append({"figure": "codes: misreads fitting a carrier pattern (wrong waybill accepted), "
                           "timing frames (baseline zxing-cpp alone)",
                 "ours": float(total("ours_valid_misread", timing, "read")),
                 "baseline": float(total("zxing_valid_misread", timing, "read")),
                 "unit": "codes", "target": "0"})
    cv_times = [x for t in timing.values() for x in t["opencv"]]
    our_times = [x for t in timing.values() for x in t["ours"]]
    rows.append({"figure": "codes: decode time per frame, all timing frames, p50 "
                           "(baseline OpenCV's detector alone)",
                 "ours": _pct(our_times, 50) * ms, "baseline": _pct(cv_times, 50) * ms,
                 "unit": "ms", "target": None})

    def rate(cells: list[dict[str, int]], key: str) -> float:
        present = sum(c["present"] for c in cells)
        return 100.0 * sum(c[key] for c in cells) / present if present else float("nan")

    for angle in angles:
        cells = [v for (a, _), v in rates.items() if a == angle]
        rows.append({"figure": f"codes: decode rate at {angle}°, all blur/noise conditions "
                               "(baseline zxing-cpp alone)",
                     "ours": rate(cells, "ours"), "baseline": rate(cells, "zxing"),
                     "unit": "%", "target": None})
    for name in CONDITIONS:
        cells = [v for (_, c), v in rates.items() if c == name]
        rows.append({"figure": f"codes: decode rate, {name}, all angles "
                               "(baseline zxing-cpp alone)",
                     "ours": rate(cells, "ours"), "baseline": rate(cells, "zxing"),
                     "unit": "%", "target": None})
    every = list(rates.values())
    rows.append({"figure": "codes: misreads fitting a carrier pattern (wrong waybill accepted), "
                           "rendered images (baseline zxing-cpp alone)",
                 "ours": float(sum(c["ours_valid_misread"] for c in every)),
                 "baseline": float(sum(c["zxing_valid_misread"] for c in every)),
                 "unit": "codes", "target": "0"})
    rows.append({"figure": "codes: decode rate, all rendered images (baseline zxing-cpp alone)",
                 "ours": rate(every, "ours"), "baseline": rate(every, "zxing"),
                 "unit": "%", "target": None})
    rows.append({"figure": "codes: decode rate, all rendered images "
                           "(baseline OpenCV's detector alone, Code 128 decoded)",
                 "ours": rate(every, "ours"), "baseline": rate(every, "opencv"),
                 "unit": "%", "target": None})
    return {
        "rows": rows,
        "quick": quick,
        "frames": {"timing_frames_per_config": frames_per_config, "reps": reps,
                   "rate_angles": list(angles), "rate_frames_per_cell": frames_per_cell,
                   "codes_per_rate_frame": 5,
                   "rate_codes_total": sum(c["present"] for c in every)},
        "read_counts": {f"{s[0]}x{s[1]}x{n}": t["read"] for (s, n), t in timing.items()},
        "opencv_false_on_rate_set": sum(c["opencv_false"] for c in every),
        "seconds": {"timing": t_mid - t_start, "rates": t_end - t_mid},
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0],
                              "cpus": os.cpu_count()},
        "machine": {"python": platform.python_version(), "opencv": cv2.__version__,
                    "opencv_threads": cv2.getNumThreads(),
                    "zxing_cpp": version("zxing-cpp"),
                    "processor": platform.processor() or platform.machine()},
    }


def _print(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"Codes: document-camera frames (OpenCV {m['opencv']}, {m['opencv_threads']} threads; "
          f"zxing-cpp {m['zxing_cpp']}); {result['frames']}")
    print(f"{'figure':<104}{'ours':>9}{'baseline':>10}{'ratio':>8}  unit")
    for r in result["rows"]:
        ratio = r["baseline"] / r["ours"] if r["ours"] else float("nan")
        print(f"{r['figure']:<104}{r['ours']:>9.1f}{r['baseline']:>10.1f}{ratio:>7.2f}x"
              f"  {r['unit']}")
    print(f"read counts (first decode of each timing frame): {result['read_counts']}")
    print(f"OpenCV invented strings on the rate set: {result['opencv_false_on_rate_set']}; "
          f"seconds: { {k: round(v, 1) for k, v in result['seconds'].items()} }")
    print(f"machine load (1-min average): {result['load_average_1min']}")


if __name__ == "__main__":
    _print(run("--quick" in sys.argv[1:]))
