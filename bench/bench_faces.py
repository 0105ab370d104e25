"""Face verification: one frame against 1,000 and 10,000 enrolled templates, on ONE core.

What is timed (DESIGN §8: p95 under 300 ms at 1,000 templates, one core, for the door):
  the door's path:      FaceVerifier.decide's per-frame work: detection on the frame scaled for
                        faces of verify_min_face_px, the 68 liveness landmarks, encoding by
                        cv2.dnn, matching; beside the path before ADRs 0120 and 0162
                        (full-resolution detection, dlib's encoder), in CPU and wall time
  full path, ours:      FaceEngine.analyse(frame, landmarks=True, max_faces=1) + FaceMatcher.match
                        (enrolment's full-resolution search, upsample 1)
  full path, baseline:  face_recognition.face_encodings(frame) + compare_faces(templates, tol 0.5)
  matching alone:       FaceMatcher.match  vs  face_recognition.compare_faces / face_distance
                        over the same templates (the baseline gets a ready (N, 128) float64
                        array, its cheapest input; ours holds float32 in a prepared matrix)
  detection alone:      FaceEngine.detect  vs  face_recognition.face_locations (the profile: HOG
                        detection is most of the full path)
  passive spoof check:  AntiSpoof.score on the verification path's face box (two 80x80
                        MiniFASNet nets by cv2.dnn), timed in the same loop as detection +
                        encoding so the two figures share the machine's load
  command-line tool:    `face_recognition KNOWN_DIR UNKNOWN.jpg` as a subprocess, wall time per
                        image processed (10 known + 1 unknown), beside our in-process engine
                        doing the same job; the tool's fixed cost (interpreter, imports, loading
                        five models) is estimated from a second run with 1 known image.
Ours and the baselines alternate within each iteration, so machine noise hits both alike.

One core: the measuring process sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS
to 1 before numpy is imported (threadpoolctl is not installed) AND pins itself to one CPU with
os.sched_setaffinity, which also covers dlib's own threads and the CLI subprocess (inherited).
`run()` therefore measures in a fresh `python -m bench.bench_faces --json` process unless this
module was itself started as __main__ (then the variables were set before numpy loaded).

Data (tests/data/cache, `python -m tests.data.gather`): enrolled real templates are the
encodings of one portrait per person (10 people; obama-1 for Obama); the query frames are
obama2.jpg and obama3.jpg letterboxed into 640x480 (different photos from the enrolled one;
faces 129 and 62 px). Synthetic templates fill up to 1,000 / 10,000: a real encoding plus
Gaussian noise (about 0.8 away, like a different person), rescaled to a norm drawn from the
real encodings' norms (dlib's descriptors are not unit length: 1.36-1.59 here).
Note: importing face_recognition sets PIL's LOAD_TRUNCATED_IMAGES process-wide; fine here.
"""

from __future__ import annotations

import os
import sys

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
if __name__ == "__main__" and "numpy" not in sys.modules:
    for _var in _THREAD_VARS:
        os.environ[_var] = "1"
    _ONE_THREAD_ENV = True
else:
    _ONE_THREAD_ENV = False

import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.cpus import one_cpu

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "tests" / "data" / "cache"
SIZES = (1_000, 10_000)
THRESHOLD = 0.5  # FaceMatcher's default, also given to compare_faces as its tolerance
QUERY_SCENES = ("raw/obama2.jpg", "raw/obama3.jpg")
QUERY_PERSON = "obama"
ENROL_SKIP = {"obama-2", "obama-3"}  # cut from the query photos: would be self-matches


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def _med(values: list[float]) -> float:
    return float(np.median(np.asarray(values)))


def _imread(path: str) -> np.ndarray:
    import cv2

    image = cv2.imread(path)
    if image is None:
        raise RuntimeError(f"cannot read {path}")
    return image


def _letterbox(image: np.ndarray, w: int = 640, h: int = 480) -> np.ndarray:
    import cv2

    ih, iw = image.shape[:2]
    s = min(w / iw, h / ih)
    small = cv2.resize(image, (round(iw * s), round(ih * s)), interpolation=cv2.INTER_AREA)
    frame = np.full((h, w, 3), 128, np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    frame[y:y + small.shape[0], x:x + small.shape[1]] = small
    return frame


def _synthetic(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n encodings near-but-not-at the real ones: like further people, dlib-like norms."""
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(real, axis=1)
    base = real[rng.integers(0, len(real), n)]
    noise = rng.normal(0.0, 0.8 / np.sqrt(real.shape[1]), (n, real.shape[1]))
    out = base + noise
    target = rng.normal(norms.mean(), max(norms.std(), 1e-3), n).clip(norms.min(), norms.max())
    out *= (target / np.linalg.norm(out, axis=1))[:, None]
    return out


class _DlibEncoder:
    """dlib's own compute_face_descriptor, for the baseline engine (the path before ADR 0162)."""

    def __init__(self) -> None:
        import dlib

        from station.vision.faces import _models_dir

        self._model = dlib.face_recognition_model_v1(
            str(_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"))

    def encode(self, rgb: np.ndarray, shape: Any, num_jitters: int = 1) -> np.ndarray:
        return np.array(self._model.compute_face_descriptor(rgb, shape, num_jitters), dtype=np.float64)


def _verify_path(engine: Any, matcher: Any, frames: list[np.ndarray],
                 portraits: list[tuple[str, str, Path]], iters: int) -> dict[str, Any]:
    """The station's verification path (FaceVerifier's per-frame work: detection scaled for
    the verification face size, 68 landmarks for liveness, encoding by cv2.dnn, matching)
    beside the path before ADRs 0120 and 0162 (full-resolution detection, dlib's encoder), in
    CPU time; its floor (fast detection + encoding alone); the encoder alone both ways; and
    the pairwise distances of the test portraits by both paths."""
    from station.vision.faces import FaceEngine

    dlib_encoder = _DlibEncoder()
    baseline = FaceEngine(engine.settings, encoder=dlib_encoder)
    min_px = engine.settings.verify_min_face_px
    usable = [f for f in frames if any(b.size >= min_px for b in engine.detect(f))]
    if not usable:
        raise RuntimeError(f"no query frame has a face of {min_px} px or more")
    fast_cpu, full_cpu, floor_cpu, fdet, udet, enc, spoof, enc_dlib = [], [], [], [], [], [], [], []
    fast_wall, full_wall = [], []
    antispoof = engine.antispoof  # loaded before timing, as the station keeps it loaded
    for i in range(iters):
        frame = usable[i % len(usable)]
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        c0, w0 = time.process_time(), time.perf_counter()
        face = engine.analyse(frame, landmarks=True, max_faces=1, min_face_px=min_px)[0]
        matcher.match(face.encoding)
        c1, w1 = time.process_time(), time.perf_counter()
        # the path before ADRs 0120 and 0162: HOG on the full frame with one upsampling,
        # dlib's own encoder, the 68 landmarks for liveness; the largest face
        matcher.match(baseline.analyse(frame, landmarks=True, max_faces=1)[0].encoding)
        c2, w2 = time.process_time(), time.perf_counter()
        fast_wall.append(w1 - w0)
        full_wall.append(w2 - w1)
        rects = engine._detect_from(rgb, min_px)
        c3 = time.process_time()
        shape = engine._aligner(rgb, rects[0])
        engine._encoder.encode(rgb, shape)
        c4 = time.process_time()
        engine._detector(rgb, engine.settings.upsample)
        c5 = time.process_time()
        antispoof.score(frame, face.box.xywh())
        c6 = time.process_time()
        shape = engine._aligner(rgb, rects[0])
        dlib_encoder.encode(rgb, shape)
        c7 = time.process_time()
        spoof.append(c6 - c5)
        fast_cpu.append(c1 - c0)
        full_cpu.append(c2 - c1)
        floor_cpu.append(c4 - c2)
        fdet.append(c3 - c2)
        enc.append(c4 - c3)
        udet.append(c5 - c4)
        enc_dlib.append(c7 - c6)
    # accuracy: every test portrait encoded both ways, all pairs compared
    encs: dict[str, list[tuple[str, np.ndarray]]] = {"fast": [], "full": []}
    skipped = []
    for name, person, path in portraits:
        image = _imread(str(path))
        fast = engine.analyse(image, max_faces=1, min_face_px=min_px)
        full = baseline.analyse(image, max_faces=1)
        if not fast or not full:
            skipped.append(name)
            continue
        encs["fast"].append((person, fast[0].encoding))
        encs["full"].append((person, full[0].encoding))
    distances: dict[str, Any] = {}
    pairs: dict[str, np.ndarray] = {}
    for way, items in encs.items():
        m = np.stack([e for _, e in items])
        d = np.linalg.norm(m[:, None, :] - m[None, :, :], axis=2)
        people = [p for p, _ in items]
        same = [d[i, j] for i in range(len(people)) for j in range(i + 1, len(people)) if people[i] == people[j]]
        diff = [d[i, j] for i in range(len(people)) for j in range(i + 1, len(people)) if people[i] != people[j]]
        distances[way] = {"same_max": float(max(same)) if same else float("nan"),
                          "same_pairs": len(same), "different_min": float(min(diff)),
                          "different_pairs": len(diff)}
        pairs[way] = d
    distances["max_change"] = float(np.abs(pairs["fast"] - pairs["full"]).max())
    return {"min_face_px": min_px, "frames": len(usable), "fast_cpu": fast_cpu, "full_cpu": full_cpu,
            "floor_cpu": floor_cpu, "fast_detect_cpu": fdet, "full_detect_cpu": udet, "encode_cpu": enc,
            "encode_dlib_cpu": enc_dlib, "antispoof_cpu": spoof,
            "fast_wall": fast_wall, "full_wall": full_wall,
            "distances": distances, "skipped": skipped}


def _cli(known_dir: Path, unknown: Path, runs: int) -> list[float]:
    exe = Path(sys.executable).with_name("face_recognition")
    cmd = [str(exe) if exe.exists() else "face_recognition", "--cpus", "1",
           "--tolerance", str(THRESHOLD), str(known_dir), str(unknown)]
    env = dict(os.environ, **{v: "1" for v in _THREAD_VARS}, PYTHONWARNINGS="ignore")
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        walls.append(time.perf_counter() - t0)
        if done.returncode != 0 or QUERY_PERSON not in done.stdout:
            raise RuntimeError(f"face_recognition CLI failed or did not find {QUERY_PERSON}: "
                               f"rc={done.returncode} out={done.stdout!r} err={done.stderr[-500:]!r}")
    return walls


def _measure(quick: bool) -> dict[str, Any]:
    import cv2
    import face_recognition  # baseline; sets PIL.ImageFile.LOAD_TRUNCATED_IMAGES

    from station.vision.faces import FaceEngine, FaceMatcher

    manifest_path = CACHE / "manifest.json"
    if not manifest_path.exists():
        raise RuntimeError("face data missing: run `python -m tests.data.gather` first")
    manifest = json.loads(manifest_path.read_text())
    load_before = os.getloadavg()
    with one_cpu() as cpu:
        engine = FaceEngine()
        portraits: list[tuple[str, str, Path]] = []
        for entry in manifest["portraits"]:
            name = Path(entry["file"]).stem
            if name not in ENROL_SKIP:
                portraits.append((name, entry["person"], CACHE / entry["file"]))
        all_portraits = [(Path(e["file"]).stem, e["person"], CACHE / e["file"]) for e in manifest["portraits"]]
        # one portrait per person, first listed (obama-1 for Obama)
        first: dict[str, tuple[str, str, Path]] = {}
        for entry in portraits:
            first.setdefault(entry[1], entry)
        portraits = list(first.values())
        real, real_labels = [], []
        for _, person, path in portraits:
            faces = engine.analyse(_imread(str(path)), max_faces=1)
            if not faces:
                raise RuntimeError(f"no face in {path}")
            real.append(faces[0].encoding)
            real_labels.append(person)
        real_arr = np.stack(real)
        frames = [_letterbox(_imread(str(CACHE / s))) for s in QUERY_SCENES
                  if (CACHE / s).exists()]
        if not frames:
            raise RuntimeError("query scenes missing from tests/data/cache/raw")
        frames_rgb = [np.ascontiguousarray(f[:, :, ::-1]) for f in frames]

        synth_all = _synthetic(real_arr, max(SIZES) - len(real_arr))
        sets = {}
        for n in SIZES:
            t64 = np.vstack([real_arr, synth_all[: n - len(real_arr)]])
            labels = real_labels + [f"synthetic-{i:05d}" for i in range(n - len(real_arr))]
            sets[n] = (FaceMatcher(t64, labels, threshold=THRESHOLD), t64)
        # how realistic the synthetic gallery is: distances to the nearest other template
        probe = sets[SIZES[0]][1]
        dd = np.linalg.norm(probe[:200, None, :] - probe[None, :, :], axis=2)
        np.fill_diagonal(dd, np.inf)
        nearest_other = dd.min(axis=1)

        iters_full = 4 if quick else 40
        iters_match = 50 if quick else 500
        out: dict[Any, Any] = {}
        outcomes: dict[int, list[str]] = {}
        for n in SIZES:
            matcher, t64 = sets[n]
            ours_full, base_full, ours_det, base_det = [], [], [], []
            ours_cpu, base_cpu = [], []
            results = []
            for i in range(iters_full):
                k = i % len(frames)
                c0, t0 = time.process_time(), time.perf_counter()
                faces = engine.analyse(frames[k], landmarks=True, max_faces=1)
                m = matcher.match(faces[0].encoding)[0]
                c1, t1 = time.process_time(), time.perf_counter()
                encs = face_recognition.face_encodings(frames_rgb[k])
                face_recognition.compare_faces(t64, encs[0], tolerance=THRESHOLD)
                c2, t2 = time.process_time(), time.perf_counter()
                ours_full.append(t1 - t0)
                base_full.append(t2 - t1)
                ours_cpu.append(c1 - c0)
                base_cpu.append(c2 - c1)
                results.append(f"{m.reason}:{m.label}:{m.distance:.2f}")
                if n == SIZES[0]:  # detection does not depend on the template count
                    t0 = time.perf_counter()
                    engine.detect(frames[k])
                    t1 = time.perf_counter()
                    face_recognition.face_locations(frames_rgb[k])
                    t2 = time.perf_counter()
                    ours_det.append(t1 - t0)
                    base_det.append(t2 - t1)
            outcomes[n] = sorted(set(results))
            q = np.stack([engine.analyse(f, max_faces=1)[0].encoding for f in frames])
            ours_m, base_cmp, base_dist = [], [], []
            for i in range(iters_match):
                e = q[i % len(q)]
                t0 = time.perf_counter()
                matcher.match(e)
                t1 = time.perf_counter()
                face_recognition.compare_faces(t64, e, tolerance=THRESHOLD)
                t2 = time.perf_counter()
                face_recognition.face_distance(t64, e)
                t3 = time.perf_counter()
                ours_m.append(t1 - t0)
                base_cmp.append(t2 - t1)
                base_dist.append(t3 - t2)
            out[n] = {"ours_full": ours_full, "base_full": base_full, "ours_cpu": ours_cpu,
                      "base_cpu": base_cpu, "ours_match": ours_m,
                      "base_compare": base_cmp, "base_distance": base_dist}
            if ours_det:
                out["detect"] = {"ours": ours_det, "base": base_det}

        verify = _verify_path(engine, sets[SIZES[0]][0], frames, all_portraits, 4 if quick else 40)

        # the command-line tool: same images, a directory of known people vs one unknown
        cli_runs = 1 if quick else 3
        with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
            known = Path(tmp) / "known"
            known.mkdir()
            for _name, person, path in portraits:
                shutil.copy(path, known / f"{person}{path.suffix}")
            one = Path(tmp) / "known1"
            one.mkdir()
            shutil.copy(portraits[0][2], one / f"{portraits[0][1]}{portraits[0][2].suffix}")
            unknown = Path(tmp) / "unknown.jpg"
            cv2.imwrite(str(unknown), frames[0], [cv2.IMWRITE_JPEG_QUALITY, 95])
            # the tool needs the query person among the known for its output check
            if not any(p[1] == QUERY_PERSON for p in portraits[:1]):
                obama = next(p for p in portraits if p[1] == QUERY_PERSON)
                shutil.copy(obama[2], one / f"{QUERY_PERSON}{obama[2].suffix}")
            n_known, n_one = len(list(known.iterdir())), len(list(one.iterdir()))
            cli_full = _cli(known, unknown, cli_runs)
            cli_one = [] if quick else _cli(one, unknown, cli_runs)
            # ours doing the same job in-process: encode every known image, then the unknown,
            # match; warm engine (the tool pays its start-up in its figure)
            unknown_img = _imread(str(unknown))

            def job(folder: Path) -> float:
                imgs = [_imread(str(p)) for p in sorted(folder.iterdir())]
                t0 = time.perf_counter()
                encs = [engine.analyse(im, max_faces=1)[0].encoding for im in imgs]
                matcher = FaceMatcher(np.stack(encs), [str(i) for i in range(len(encs))])
                matcher.match(engine.analyse(unknown_img, max_faces=1)[0].encoding)
                return time.perf_counter() - t0

            ours_job = [job(known) for _ in range(cli_runs)]
            ours_one = [] if quick else [job(one) for _ in range(cli_runs)]
        cli: dict[str, Any] = {
            "known_images": n_known, "wall_s": cli_full, "wall_1_known_s": cli_one,
            "per_image_ms": 1000 * _med(cli_full) / (n_known + 1),
            "ours_same_job_per_image_ms": 1000 * _med(ours_job) / (n_known + 1),
            "marginal_per_image_ms": None, "ours_marginal_per_image_ms": None,
            "fixed_ms_estimate": None,
        }
        if cli_one:
            cli["marginal_per_image_ms"] = 1000 * (_med(cli_full) - _med(cli_one)) / (n_known - n_one)
            cli["ours_marginal_per_image_ms"] = (1000 * (_med(ours_job) - _med(ours_one))
                                                 / (n_known - n_one))
            cli["fixed_ms_estimate"] = (1000 * _med(cli_one)
                                        - cli["marginal_per_image_ms"] * (n_one + 1))

    ms = 1000.0
    rows: list[dict[str, Any]] = []
    for n in SIZES:
        f = out[n]
        for p in (50, 95):
            rows.append({
                "figure": f"faces: frame analysed at full resolution (enrolment's search: upsample 1, "
                          f"68 landmarks) + matched vs {n:,} templates, p{p} (baseline face_recognition)",
                "ours": _pct(f["ours_full"], p) * ms,
                "baseline": _pct(f["base_full"], p) * ms,
                "unit": "ms",
                "target": None,
            })
    for p in (50, 95):
        rows.append({
            "figure": f"faces: frame analysed at full resolution + matched vs 1,000 templates, CPU "
                      f"time p{p} (process time: what the path costs on an uncontended core)",
            "ours": _pct(out[1_000]["ours_cpu"], p) * ms,
            "baseline": _pct(out[1_000]["base_cpu"], p) * ms,
            "unit": "ms", "target": None,
        })
    for n in SIZES:
        f = out[n]
        for p in (50, 95):
            rows.append({
                "figure": f"faces: matching alone vs {n:,} templates, p{p} "
                          "(baseline compare_faces)",
                "ours": _pct(f["ours_match"], p) * ms,
                "baseline": _pct(f["base_compare"], p) * ms,
                "unit": "ms", "target": None,
            })
        rows.append({
            "figure": f"faces: matching alone vs {n:,} templates, p50 (baseline face_distance)",
            "ours": _pct(f["ours_match"], 50) * ms,
            "baseline": _pct(f["base_distance"], 50) * ms,
            "unit": "ms", "target": None,
        })
    rows.append({
        "figure": "faces: HOG detection alone (640x480, upsample 1), p50 "
                  "(baseline face_locations)",
        "ours": _pct(out["detect"]["ours"], 50) * ms,
        "baseline": _pct(out["detect"]["base"], 50) * ms,
        "unit": "ms", "target": None,
    })
    rows.append({
        "figure": f"faces: CLI job ({cli['known_images']} known + 1 unknown), per image "
                  "(ours in-process warm; baseline face_recognition CLI wall incl. start-up)",
        "ours": cli["ours_same_job_per_image_ms"],
        "baseline": cli["per_image_ms"],
        "unit": "ms", "target": None,
    })
    if cli["marginal_per_image_ms"] is not None:
        rows.append({
            "figure": "faces: CLI job, marginal cost per extra known image, (T10 - T1) / 9 "
                      "(start-up excluded on both sides)",
            "ours": cli["ours_marginal_per_image_ms"],
            "baseline": cli["marginal_per_image_ms"],
            "unit": "ms", "target": None,
        })
    v = verify
    for p in (50, 95):  # DESIGN §8: the door's verification, one core, p95 under 300 ms
        rows.append({
            "figure": f"faces: frame verified at the door (the verifier's path) vs 1,000 templates, "
                      f"wall p{p} (baseline: the full-resolution path with dlib's encoder)",
            "ours": _pct(v["fast_wall"], p) * ms, "baseline": _pct(v["full_wall"], p) * ms,
            "unit": "ms", "target": "p95 < 300 ms" if p == 95 else None})
    for p in (50, 95):
        rows.append({
            "figure": f"faces: verification path (detect on the frame scaled for faces >= "
                      f"{v['min_face_px']} px, encode at full size by cv2.dnn) vs 1,000 templates, "
                      f"CPU time p{p} (baseline: the full-resolution path with dlib's encoder, "
                      "upsample 1)",
            "ours": _pct(v["fast_cpu"], p) * ms, "baseline": _pct(v["full_cpu"], p) * ms,
            "unit": "ms", "target": "p95 <= 100 ms CPU" if p == 95 else None,
            **({"target_ms": 100} if p == 95 else {})})
    rows.append({
        "figure": "faces: verification path CPU p95 vs its floor: fast detection + encoding alone, p95 "
                  "(goal: ratio <= 1.2)",
        "ours": _pct(v["fast_cpu"], 95) * ms, "baseline": _pct(v["floor_cpu"], 95) * ms,
        "unit": "ms", "target": None})
    rows.append({
        "figure": "faces: HOG detection for verification (scaled, no upsampling), CPU p50 "
                  "(baseline: full frame, upsample 1)",
        "ours": _pct(v["fast_detect_cpu"], 50) * ms, "baseline": _pct(v["full_detect_cpu"], 50) * ms,
        "unit": "ms", "target": None})
    for p in (50, 95):
        rows.append({
            "figure": f"faces: encoding alone (align + ResNet, one face), CPU p{p} (ours: dlib's "
                      "network run by cv2.dnn; baseline: dlib's compute_face_descriptor)",
            "ours": _pct(v["encode_cpu"], p) * ms, "baseline": _pct(v["encode_dlib_cpu"], p) * ms,
            "unit": "ms", "target": None})
    rows.append({
        "figure": "faces: passive spoof check (MiniFASNet V2 + V1SE via cv2.dnn, one face), CPU p50 "
                  "(baseline: fast detection + encoding, p50, same run)",
        "ours": _pct(v["antispoof_cpu"], 50) * ms, "baseline": _pct(v["floor_cpu"], 50) * ms,
        "unit": "ms", "target": None})
    for key, label in (("same_max", "same person, largest distance"),
                       ("different_min", "different people, smallest distance")):
        rows.append({"figure": f"faces: test portraits, {label} (ours: verification path; "
                               "baseline: full-resolution path, dlib's encoder)",
                     "ours": v["distances"]["fast"][key], "baseline": v["distances"]["full"][key],
                     "unit": "distance", "target": None})
    rows.append({"figure": "faces: test portraits, largest change of any pairwise distance between the two "
                           "paths (info)",
                 "ours": v["distances"]["max_change"], "baseline": None, "unit": "distance", "target": None})
    full_p50 = _pct(out[SIZES[0]]["ours_full"], 50) * ms
    det_p50 = _pct(out["detect"]["ours"], 50) * ms
    match_p50 = _pct(out[SIZES[0]]["ours_match"], 50) * ms
    profile = {  # where our full path's time goes at 1,000 templates (p50s, ms)
        "full_p50_ms": full_p50, "hog_detect_p50_ms": det_p50, "match_p50_ms": match_p50,
        "align_encode_landmarks_ms": full_p50 - det_p50 - match_p50,
    }
    return {
        "rows": rows,
        "profile_1000": profile,
        "verification_path": {k: v[k] for k in ("min_face_px", "frames", "distances", "skipped")},
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0],
                              "cpus": os.cpu_count()},
        "quick": quick,
        "iterations": {"full_path": iters_full, "matching": iters_match, "cli_runs": cli_runs},
        "one_core": {
            "thread_env_before_numpy": {v: os.environ.get(v) for v in _THREAD_VARS},
            "pinned_cpu": cpu,
            "method": "OMP/OPENBLAS/MKL_NUM_THREADS=1 set before numpy import + "
                      "os.sched_setaffinity to one CPU (threadpoolctl not installed)",
        },
        "data": {
            "enrolled_real": [f"{p[1]}:{p[0]}" for p in portraits],
            "query_frames": [f"{s} letterboxed to 640x480" for s in QUERY_SCENES],
            "synthetic_nearest_other_distance": {
                "min": float(nearest_other.min()), "p50": float(np.median(nearest_other))},
            "real_norms": [float(x) for x in np.linalg.norm(real_arr, axis=1)],
        },
        "match_outcomes": {str(n): outcomes[n] for n in SIZES},
        "cli": cli,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Figures for bench/run_all.py. Measures in a fresh single-threaded process unless this
    module is the __main__ of a process that set the thread variables before numpy."""
    if _ONE_THREAD_ENV:
        return _measure(quick)
    cmd = [sys.executable, "-m", "bench.bench_faces", "--json"] + (["--quick"] if quick else [])
    env = dict(os.environ, **{v: "1" for v in _THREAD_VARS})
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench_faces worker failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _print(result: dict[str, Any]) -> None:
    print("Faces: one frame vs enrolled templates, ONE core "
          f"({result['one_core']['method']}; cpu {result['one_core']['pinned_cpu']})")
    print(f"{'figure':<112}{'ours':>10}{'baseline':>10}{'ratio':>8}  unit  target")
    for r in result["rows"]:
        base = r["baseline"] if r["baseline"] is not None else float("nan")
        ratio = base / r["ours"] if r["ours"] else float("nan")
        print(f"{r['figure']:<112}{r['ours']:>10.3f}{base:>10.3f}{ratio:>7.2f}x"
              f"  {r['unit']:<4}  {r['target'] or ''}")
    cli = result["cli"]
    print(f"face_recognition CLI: wall {', '.join(f'{w:.2f}' for w in cli['wall_s'])} s for "
          f"{cli['known_images']} known + 1 unknown")
    if cli["fixed_ms_estimate"] is not None:
        print(f"face_recognition CLI fixed cost (interpreter, imports, five models) "
              f"~{cli['fixed_ms_estimate']:.0f} ms")
    pr = result["profile_1000"]
    print(f"profile at 1,000 (p50): full {pr['full_p50_ms']:.1f} ms = HOG detection "
          f"{pr['hog_detect_p50_ms']:.1f} + align/encode/68 landmarks "
          f"{pr['align_encode_landmarks_ms']:.1f} + match {pr['match_p50_ms']:.3f}")
    print(f"match outcomes: {result['match_outcomes']}")
    print(f"machine load (1-min average; >1 per CPU means ours and the baselines shared "
          f"their core with other work): {result['load_average_1min']}")
    print(f"synthetic gallery: nearest other template {result['data']['synthetic_nearest_other_distance']}")
    print(f"iterations: {result['iterations']}")


if __name__ == "__main__":
    args = sys.argv[1:]
    res = run("--quick" in args)
    if "--json" in args:
        print(json.dumps(res))
    else:
        _print(res)
