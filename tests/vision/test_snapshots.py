from __future__ import annotations

import hashlib
import os

import cv2
import numpy as np
import pytest

from station.vision.snapshots import SnapshotError, SnapshotStore

DAY = 86400.0


def frame(value: int = 100) -> np.ndarray:
    img = np.full((48, 64, 3), value, np.uint8)
    cv2.putText(img, str(value), (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
    return img


def test_snapshot_is_named_by_its_sha256(tmp_path) -> None:
    store = SnapshotStore(tmp_path)
    ref = store.save(frame())
    assert ref is not None
    data = store.path(ref).read_bytes()
    assert hashlib.sha256(data).hexdigest() == ref
    assert data.startswith(b"\xff\xd8\xff") and store.load(ref) == data
    assert store.path(ref).parent.name == ref[:2]


def test_jpeg_bytes_are_kept_as_they_are_and_deduplicated(tmp_path) -> None:
    _ok, buf = cv2.imencode(".jpg", frame(7))
    store = SnapshotStore(tmp_path)
    ref = store.save(buf.tobytes())
    assert store.save(buf.tobytes()) == ref
    assert ref == hashlib.sha256(buf.tobytes()).hexdigest()
    assert len(list(tmp_path.rglob("*.jpg"))) == 1


def test_disabled_store_keeps_nothing(tmp_path) -> None:
    store = SnapshotStore(tmp_path / "snaps", enabled=False)
    assert store.save(frame()) is None
    assert not (tmp_path / "snaps").exists()


def test_no_temporary_files_left_behind(tmp_path) -> None:
    store = SnapshotStore(tmp_path)
    for v in range(5):
        store.save(frame(v * 40))
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]


def test_bad_references_and_non_jpeg_bytes_are_refused(tmp_path) -> None:
    store = SnapshotStore(tmp_path)
    for ref in ("../../etc/passwd", "ABC", "g" * 64):
        with pytest.raises(SnapshotError):
            store.path(ref)
    with pytest.raises(SnapshotError):
        store.save(b"\x89PNG\r\n\x1a\n....")


def test_prune_removes_only_snapshots_past_retention(tmp_path) -> None:
    store = SnapshotStore(tmp_path)
    now = 1_800_000_000.0
    old = store.save(frame(1))
    new = store.save(frame(2))
    assert old and new
    os.utime(store.path(old), (now - 31 * DAY, now - 31 * DAY))
    os.utime(store.path(new), (now - 29 * DAY, now - 29 * DAY))
    stray = tmp_path / "notes.txt"
    stray.write_text("operator notes")
    assert store.prune(retention_days=30, now=now) == 1
    assert not store.path(old).exists() and store.path(new).exists()
    assert stray.exists()
    assert store.prune(retention_days=30, now=now) == 0


def test_prune_on_missing_directory_is_a_no_op(tmp_path) -> None:
    assert SnapshotStore(tmp_path / "none").prune(30) == 0


KEY = bytes(range(32))


def test_with_a_key_the_file_on_disk_is_not_a_jpeg_and_only_the_key_opens_it(tmp_path) -> None:
    """#21.3: snapshots (faces of couriers and customers) encrypted at rest."""
    store = SnapshotStore(tmp_path, key=KEY)
    _ok, buf = cv2.imencode(".jpg", frame(9))
    jpeg = buf.tobytes()
    ref = store.save(jpeg)
    assert ref == hashlib.sha256(jpeg).hexdigest()  # the chain covers the picture itself
    on_disk = store.path(ref).read_bytes()
    assert store.path(ref).suffix == ".snap" and not list(tmp_path.rglob("*.jpg"))
    assert not on_disk.startswith(b"\xff\xd8\xff") and jpeg not in on_disk
    assert cv2.imdecode(np.frombuffer(on_disk, np.uint8), cv2.IMREAD_COLOR) is None
    assert store.load(ref) == jpeg
    with pytest.raises(SnapshotError):
        SnapshotStore(tmp_path, key=bytes(32)).load(ref)  # another station's key
    other = store.save(cv2.imencode(".jpg", frame(10))[1].tobytes())
    os.replace(store.path(other), store.path(ref))  # a file swapped under another reference
    with pytest.raises(SnapshotError):
        store.load(ref)


def test_plain_snapshots_from_before_the_key_stay_readable_and_are_pruned_alike(tmp_path) -> None:
    old = SnapshotStore(tmp_path).save(frame(1))
    store = SnapshotStore(tmp_path, key=KEY)
    new = store.save(frame(2))
    assert store.load(old).startswith(b"\xff\xd8\xff") and store.load(new).startswith(b"\xff\xd8\xff")
    count, size = store.usage()
    assert count == 2
    assert store.prune_to(0) == (2, size) and store.usage() == (0, 0)
