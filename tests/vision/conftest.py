"""Vision fixtures: the gathered real faces (tests/data/gather.py), one engine per session
and every portrait analysed once (encoding costs ~100 ms a face; tests share the results)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.vision.faces import Face, FaceEngine
from tests.support.testdata import FACE_CACHE as CACHE
from tests.support.testdata import face_file, face_manifest


@dataclass(frozen=True)
class Portrait:
    name: str  # e.g. "obama-2"
    person: str
    image: np.ndarray
    face: Face


@pytest.fixture(scope="session")
def manifest() -> dict:
    return face_manifest()


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    return FaceEngine()


@pytest.fixture(scope="session")
def portraits(manifest: dict, engine: FaceEngine) -> dict[str, Portrait]:
    out: dict[str, Portrait] = {}
    for entry in manifest["portraits"]:
        image = cv2.imread(str(CACHE / entry["file"]))
        assert image is not None, entry["file"]
        faces = engine.analyse(image, landmarks=True)
        assert len(faces) == 1, f"{entry['file']}: {len(faces)} faces"
        name = Path(entry["file"]).stem
        out[name] = Portrait(name, entry["person"], image, faces[0])
    return out


@pytest.fixture(scope="session")
def scene(manifest: dict):
    def load(raw_name: str) -> bytes:
        for entry in manifest["scenes"]:
            if entry["file"] == f"raw/{raw_name}":
                return (CACHE / entry["file"]).read_bytes()
        return face_file(f"raw/{raw_name}").read_bytes()
    return load
