"""The gathered test faces (tests/data/gather.py, run by `make test` before pytest).

Missing data is a broken set-up, not a reason to pass quietly: the tests that need it fail
and say how to get it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FACE_CACHE = Path(__file__).resolve().parent.parent / "data" / "cache"
HOW = "run `make testdata` (python -m tests.data.gather; make test does it first)"


def face_manifest() -> dict[str, Any]:
    path = FACE_CACHE / "manifest.json"
    if not path.exists():
        pytest.fail(f"face test data missing in {FACE_CACHE}: {HOW}", pytrace=False)
    return json.loads(path.read_text())


def face_file(relative: str) -> Path:
    path = FACE_CACHE / relative
    if not path.exists():
        pytest.fail(f"{relative} missing in {FACE_CACHE}: {HOW}", pytrace=False)
    return path
