"""Event snapshots: JPEG files named by their SHA-256, referenced from the event log.

Content addressing makes a snapshot tamper-evident (the name is the hash the event's own
hash chain covers) and de-duplicates identical frames for free. Writes are atomic (temporary
file, fsync, rename, fsync of the directory) so a power cut leaves either the whole file or
none, never a half JPEG that an event points at.

With a key (the station's `encryption_key`; HKDF purpose "snapshot") every file is AES-256-GCM
ciphertext (`<ref>.snap`) with its reference as associated data, so a stolen disk shows no
faces and a file swapped under another reference does not open. The reference stays the
SHA-256 of the JPEG itself, so the event chain covers the picture, not the ciphertext. Files
written before encryption was on (`<ref>.jpg`) stay readable until they are pruned.

Room pictures (#21.3, ADR 0142) cannot be named by their hash: the event that references one
is committed before the frame is encoded (encoding is off the station's hot path), so they get
a random 32-hex id decided up front, stored the same way (`<id>.snap`), and alarm clips as
`<id>.clip`: one sealed container of JPEG frames (`encode_clip`). Both are pruned with the
snapshots, by age and by the disk budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from station.crypto import DecryptError, Sealer
from station.vision.images import ensure_frame

# a JPEG's SHA-256 (content-named) or a room picture's random id (named before it exists)
# matched whole (fullmatch): with match and "$" a trailing newline got in
_REF = re.compile(r"[0-9a-f]{64}|[0-9a-f]{32}")
JPEG_QUALITY = 85
PLAIN, SEALED, CLIP = ".jpg", ".snap", ".clip"
_AAD = b"ps-snapshot/v1\x00"
_CLIP_AAD = b"ps-clip/v1\x00"
_CLIP_MAGIC = b"PSCLIP1\n"
# the directory is walked once, then at most this often (steady clock): between walks the
# store keeps its own index of what it wrote and removed, so a disk check costs what it
# prunes, not a stat of every file (222,000 files by the middle of the week scenario)
REWALK_S = 86400.0


def is_ref(ref: str) -> bool:
    """A well-formed snapshot, room picture or clip reference (nothing about whether it exists)."""
    return bool(_REF.fullmatch(ref))


def encode_clip(frames: list[tuple[float, bytes]]) -> bytes:
    """(offset from the event in s, JPEG) pairs as one container: magic, a JSON index line,
    then the JPEGs back to back. No video codec: no new dependency, and every frame is a
    JPEG the console already shows."""
    index = [{"t": round(t, 3), "n": len(jpeg)} for t, jpeg in frames]
    return _CLIP_MAGIC + json.dumps(index, separators=(",", ":")).encode() + b"\n" + \
        b"".join(jpeg for _, jpeg in frames)


def decode_clip(blob: bytes) -> list[tuple[float, bytes]]:
    if not blob.startswith(_CLIP_MAGIC):
        raise SnapshotError("not a clip")
    head, _, body = blob[len(_CLIP_MAGIC):].partition(b"\n")
    out: list[tuple[float, bytes]] = []
    at = 0
    for item in json.loads(head):
        n = int(item["n"])
        out.append((float(item["t"]), body[at:at + n]))
        at += n
    return out


class SnapshotError(ValueError):
    """A bad reference or an unusable frame."""


class SnapshotStore:
    """Snapshots under `directory`, two-level fan-out (ab/abcdef....jpg) to keep directories
    small. With `enabled=False` (the operator turned snapshots off: no raw images kept),
    `save` stores nothing and returns None, so callers need no branch of their own."""

    def __init__(self, directory: Path | str, enabled: bool = True,
                 key: bytes | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.enabled = enabled
        self._sealer = Sealer(key, "snapshot") if key is not None else None
        self._monotonic = monotonic
        # every snapshot as path -> (mtime, bytes), oldest first; None until the first walk.
        # The station is the directory's only writer (station.lock); a file put there by
        # anything else (a restore) is counted from the next walk on.
        self._index: OrderedDict[Path, tuple[float, int]] | None = None
        self._total = 0
        self._walked_at = 0.0
        self._lock = threading.Lock()

    def path(self, ref: str, suffix: str | None = None) -> Path:
        """Where the snapshot `ref` is (or would be) kept: ciphertext when the store has a key."""
        if not _REF.fullmatch(ref):
            raise SnapshotError(f"not a snapshot reference: {ref!r}")
        if suffix is None:
            suffix = SEALED if self._sealer is not None else PLAIN
        return self.directory / ref[:2] / f"{ref}{suffix}"

    def save(self, image: np.ndarray | bytes) -> str | None:
        """Store a frame (encoded as JPEG) or JPEG bytes as they are; returns the reference."""
        if not self.enabled:
            return None
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            if not data.startswith(b"\xff\xd8\xff"):
                raise SnapshotError("snapshot bytes are not a JPEG")
        else:
            ok, buf = cv2.imencode(".jpg", ensure_frame(image),
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise SnapshotError("frame could not be encoded as JPEG")
            data = buf.tobytes()
        ref = hashlib.sha256(data).hexdigest()
        target = self.path(ref)
        if target.exists():
            return ref
        if self._sealer is not None:
            data = self._sealer.seal(data, _AAD + ref.encode())
        _write_atomic(target, data)
        self._wrote(target, len(data))
        return ref

    def save_as(self, ref: str, jpeg: bytes) -> None:
        """A room picture under the id its event already carries (sealed like a snapshot)."""
        if not jpeg.startswith(b"\xff\xd8\xff"):
            raise SnapshotError("snapshot bytes are not a JPEG")
        target = self.path(ref)
        data = self._sealer.seal(jpeg, _AAD + ref.encode()) if self._sealer is not None else jpeg
        _write_atomic(target, data)
        self._wrote(target, len(data))

    def save_clip(self, ref: str, frames: list[tuple[float, bytes]]) -> None:
        """An alarm's clip under the id its event carries; sealed when the store has a key."""
        blob = encode_clip(frames)
        if self._sealer is not None:
            blob = self._sealer.seal(blob, _CLIP_AAD + ref.encode())
        target = self.path(ref, CLIP)
        _write_atomic(target, blob)
        self._wrote(target, len(blob))

    def load_clip(self, ref: str) -> list[tuple[float, bytes]]:
        """The clip's frames (decrypted); FileNotFoundError once pruned or never written."""
        blob = self.path(ref, CLIP).read_bytes()
        if self._sealer is not None:
            try:
                blob = self._sealer.open(blob, _CLIP_AAD + ref.encode())
            except DecryptError:
                raise SnapshotError(f"clip {ref[:12]}... does not decrypt") from None
        return decode_clip(blob)

    def load(self, ref: str) -> bytes:
        """The JPEG bytes of `ref` (decrypted); FileNotFoundError once it has been pruned,
        SnapshotError if the ciphertext does not open (another key, tampered, renamed)."""
        if self._sealer is not None:
            sealed = self.path(ref, SEALED)
            if sealed.is_file():
                try:
                    return self._sealer.open(sealed.read_bytes(), _AAD + ref.encode())
                except DecryptError:
                    raise SnapshotError(f"snapshot {ref[:12]}... does not decrypt") from None
        return self.path(ref, PLAIN).read_bytes()

    def _wrote(self, path: Path, size: int) -> None:
        with self._lock:
            if self._index is None:
                return
            old = self._index.pop(path, None)
            self._total += size - (old[1] if old else 0)
            self._index[path] = (time.time(), size)

    def _indexed(self, now: float | None = None) -> OrderedDict[Path, tuple[float, int]]:
        """The index, walking the directory first if it has none or its walk is a day old.
        A walk also removes what a crash left: temporary files over an hour old and empty
        fan-out directories. Caller holds the lock."""
        if self._index is not None and self._monotonic() - self._walked_at < REWALK_S:
            return self._index
        now = time.time() if now is None else now
        found: list[tuple[float, int, Path]] = []
        if self.directory.is_dir():
            for sub in self.directory.iterdir():
                if not sub.is_dir():
                    continue
                for file in sub.iterdir():
                    try:
                        if file.name.startswith(".tmp-"):
                            if file.stat().st_mtime < now - 3600:
                                file.unlink()
                            continue
                        if file.suffix not in (PLAIN, SEALED, CLIP) or not _REF.fullmatch(file.stem):
                            continue
                        st = file.stat()
                    except FileNotFoundError:
                        continue
                    found.append((st.st_mtime, st.st_size, file))
                try:
                    sub.rmdir()  # only succeeds when empty
                except OSError:
                    pass
        found.sort(key=lambda f: (f[0], f[2].name))
        self._index = OrderedDict((path, (mtime, size)) for mtime, size, path in found)
        self._total = sum(size for _, size, _ in found)
        self._walked_at = self._monotonic()
        return self._index

    def _remove_oldest(self, keep: Callable[[float, int], bool]) -> tuple[int, int]:
        """Delete from the oldest on until `keep(mtime, total bytes left)` holds for the next
        one; returns (removed, bytes freed). The events that referenced them keep the
        reference: the console shows such a snapshot as pruned. Caller holds the lock."""
        assert self._index is not None
        removed = freed = 0
        while self._index:
            path, (mtime, size) = next(iter(self._index.items()))
            if keep(mtime, self._total):
                break
            existed = True
            try:
                path.unlink()  # any other refusal (permissions) escapes to the housekeeper's
            except FileNotFoundError:  # log with the file still counted: the counts stay true
                existed = False  # gone already (an operator's hand): nothing freed
            del self._index[path]
            self._total -= size
            if not existed:
                continue
            removed += 1
            freed += size
        return removed, freed

    def usage(self) -> tuple[int, int]:
        """(snapshots, bytes) on disk."""
        with self._lock:
            index = self._indexed()
            return len(index), self._total

    def prune_to(self, max_bytes: int) -> tuple[int, int]:
        """Delete the oldest snapshots until at most `max_bytes` remain (the disk budget,
        #14.13); returns (removed, bytes freed)."""
        with self._lock:
            self._indexed()
            return self._remove_oldest(lambda _mtime, total: total <= max_bytes)

    def prune(self, retention_days: float, now: float | None = None) -> int:
        """Delete snapshots older than the retention (by file time); returns how many."""
        now = time.time() if now is None else now
        cutoff = now - retention_days * 86400.0
        with self._lock:
            self._indexed(now)
            return self._remove_oldest(lambda mtime, _total: mtime >= cutoff)[0]


def _write_atomic(target: Path, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync of the directory: a power cut leaves the whole
    file or none, never half a picture that an event points at."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
