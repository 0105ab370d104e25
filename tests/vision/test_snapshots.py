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


class _Walks:
    """Counts directory listings under one root (the housekeeper's cost before the index)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root) -> None:
        self.count = 0
        original = type(root).iterdir

        def iterdir(path):
            if str(path).startswith(str(root)):
                self.count += 1
            return original(path)
        monkeypatch.setattr(type(root), "iterdir", iterdir)


def test_after_the_first_walk_a_disk_check_lists_no_directory(tmp_path, monkeypatch) -> None:
    """#18: every disk check used to stat every snapshot (222,000 files and rising by the middle
    of the week scenario: the station's CPU per parcel grew with them). Now the store keeps
    its own index: one walk, then what it writes and removes."""
    clock = [0.0]
    store = SnapshotStore(tmp_path, monotonic=lambda: clock[0])
    refs = [store.save(frame(i)) for i in range(5)]
    walks = _Walks(monkeypatch, tmp_path)
    count, size = store.usage()
    assert count == 5 and walks.count > 0
    walks.count = 0
    for i in range(5, 8):  # written after the walk: counted without one
        refs.append(store.save(frame(i)))
    assert store.usage()[0] == 8
    assert store.prune(30) == 0
    removed, freed = store.prune_to(store.usage()[1] - 1)
    assert removed == 1 and freed > 0 and not store.path(refs[0]).exists()
    assert walks.count == 0
    assert store.usage()[0] == 7 and store.usage()[1] == sum(
        store.path(r).stat().st_size for r in refs[1:])


def test_files_gone_by_hand_or_added_by_another_writer_are_found_by_the_next_walk(tmp_path) -> None:
    clock = [0.0]
    store = SnapshotStore(tmp_path, monotonic=lambda: clock[0])
    refs = [store.save(frame(i)) for i in range(3)]
    assert store.usage()[0] == 3
    store.path(refs[0]).unlink()  # an operator's hand
    removed, freed = store.prune_to(0)
    assert (removed, store.usage()) == (2, (0, 0))  # the missing one is neither removed nor freed
    other = SnapshotStore(tmp_path)  # a restore from backup, say
    restored = other.save(frame(9))
    (tmp_path / "ab").mkdir()
    leftover = tmp_path / "ab" / ".tmp-crash.jpg"
    leftover.write_bytes(b"half")
    os.utime(leftover, (0, 0))
    assert store.usage()[0] == 0  # not walked again yet
    clock[0] += 86400.0 + 1
    assert store.usage()[0] == 1 and store.path(restored).exists()
    assert not leftover.exists() and not (tmp_path / "ab").exists()


def test_a_snapshot_that_cannot_be_removed_stays_counted_and_its_error_is_raised(tmp_path, monkeypatch) -> None:
    """A refusal other than "not found" (permissions, a read-only remount) reaches the
    housekeeper's log, and the file stays in the counts: the budget still sees its bytes."""
    store = SnapshotStore(tmp_path)
    refs = [store.save(frame(i)) for i in range(3)]
    before = store.usage()
    real_unlink = type(tmp_path).unlink
    stuck = store.path(refs[0])

    def unlink(self, missing_ok=False):
        if self == stuck:
            raise PermissionError(13, "Permission denied", str(self))
        return real_unlink(self, missing_ok)

    monkeypatch.setattr(type(tmp_path), "unlink", unlink)
    with pytest.raises(PermissionError):
        store.prune_to(0)
    assert store.usage() == before and stuck.exists()
    monkeypatch.undo()
    assert store.prune_to(0)[0] == 3 and store.usage() == (0, 0)
