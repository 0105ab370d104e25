"""`station backup DIR` and `station restore DIR` (#16.4, ADR 0103).

A backup is a directory: `station.db` (an online, consistent copy through SQLite's backup
API, taken on a read connection of its own, so the station's commits go on beside it), the
device sequence file (`station.devseq`), optionally the archive's segments, and
`manifest.json` with the SHA-256 and size of every file, the last seq and hash and the
retention checkpoint. Restore checks all of that (hashes, `PRAGMA integrity_check`, the
chain from the checkpoint) before it touches anything, refuses while a station runs on the
database (the run lock), keeps the database it replaces beside it, and installs the device
sequence as the larger of the two (a restored, older sequence would make every device
refuse the station's commands as replayed)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .archive import checkpoint, recorded_segments, verify_log
from .eventlog import utc_iso

FORMAT = 1
DB_NAME = "station.db"
SEQ_NAME = "station.devseq"
ARCHIVE_NAME = "archive"
MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    """A backup that cannot be taken or installed; the message is for a person."""


def seq_path_for(db: Path) -> Path:
    return db.with_suffix(".devseq")


def lock_path_for(db: Path) -> Path:
    return db.with_suffix(".lock")


class RunLock:
    """An exclusive advisory lock beside the database, held by `station run` for as long as
    it runs: restore (and anything else that must not run beside the station) takes it
    first. The kernel drops it with the process, so a killed station leaves no stale lock."""

    def __init__(self, db: Path | str) -> None:
        self.path = lock_path_for(Path(db))
        self._fh: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            who = fh.read().strip()
            fh.close()
            raise BackupError(f"{self.path.with_suffix('.db')}: a station is running on this database"
                              f"{f' (pid {who})' if who else ''}: stop it first") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class BackupInfo:
    directory: Path
    last_seq: int
    checkpoint_seq: int
    files: int
    bytes: int


def take_backup(db: Path, out_dir: Path, *, archive_dir: Path | None = None,
                station_id: str = "") -> BackupInfo:
    db, out_dir = Path(db), Path(out_dir)
    if not db.is_file():
        raise BackupError(f"{db}: no such database")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BackupError(f"{out_dir}: exists and is not empty; a backup goes into a new directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / DB_NAME
    src = sqlite3.connect(str(db), isolation_level=None, timeout=10)
    try:
        src.execute("PRAGMA busy_timeout=10000")
        src.execute("PRAGMA query_only=ON")
        dst = sqlite3.connect(str(target), isolation_level=None)
        try:
            src.backup(dst)  # one step: one read transaction, so one consistent state
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{db}: cannot be copied: {exc}") from None
    finally:
        src.close()
    check = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        ok = check.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise BackupError(f"{target}: the copy fails SQLite's integrity check: {ok}")
        result = verify_log(check)
        if not result.ok:
            raise BackupError(f"{db}: the event log does not verify (seq {result.first_bad_seq}: "
                              f"{result.problem}); keep the database for inspection")
        row = check.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        cp_seq, cp_hash, _ = checkpoint(check)
        last_seq, last_hash = (row[0], row[1]) if row else (cp_seq, cp_hash)
        version = check.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        segments = recorded_segments(check)
    finally:
        check.close()
    seq = seq_path_for(db)
    if seq.exists():
        shutil.copy2(seq, out_dir / SEQ_NAME)
    if archive_dir is not None:
        (out_dir / ARCHIVE_NAME).mkdir()
        for seg in segments:
            src_seg = Path(archive_dir) / seg["file"]
            if seg["deleted_at"] is None and src_seg.is_file():
                shutil.copy2(src_seg, out_dir / ARCHIVE_NAME / seg["file"])
        # restore verifies the copied archive end to end: a segment missing or changed here
        # is said now, not by a backup that can never be restored
        check = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            result = verify_log(check, out_dir / ARCHIVE_NAME)
        finally:
            check.close()
        if not result.ok:
            raise BackupError(f"{archive_dir}: the archive does not verify ({result.problem}); a backup "
                              "with it could not be restored: take it without --archive")
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        _fsync(path)
        files[str(path.relative_to(out_dir))] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    manifest = {
        "format": FORMAT, "station_id": station_id, "created_at": utc_iso(time.time()),
        "source": str(db), "schema_version": int(version[0]) if version else 0,
        "last_seq": last_seq, "last_hash": last_hash,
        "checkpoint": {"seq": cp_seq, "hash": cp_hash}, "files": files,
    }
    tmp = out_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _fsync(tmp)
    os.replace(tmp, out_dir / MANIFEST)
    _fsync(out_dir)
    return BackupInfo(out_dir, last_seq, cp_seq, len(files), sum(f["bytes"] for f in files.values()))


def check_backup(backup_dir: Path) -> dict[str, Any]:
    """The manifest, once every file it names is there with its size and hash, the database
    passes the integrity check and its chain verifies; a BackupError naming the first fault
    otherwise."""
    backup_dir = Path(backup_dir)
    try:
        manifest = json.loads((backup_dir / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{backup_dir}: no {MANIFEST}: not a station backup") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{backup_dir / MANIFEST}: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{backup_dir / MANIFEST}: not a backup format this station reads")
    files = manifest.get("files")
    if not isinstance(files, dict) or DB_NAME not in files:
        raise BackupError(f"{backup_dir / MANIFEST}: names no {DB_NAME}")
    for name, meta in sorted(files.items()):
        path = backup_dir / name
        if not path.is_file():
            raise BackupError(f"{path}: missing from the backup")
        if path.stat().st_size != meta.get("bytes") or _sha256(path) != meta.get("sha256"):
            raise BackupError(f"{path}: changed since the backup was taken (size or SHA-256 differs)")
    conn = sqlite3.connect(f"file:{backup_dir / DB_NAME}?mode=ro", uri=True)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise BackupError(f"{backup_dir / DB_NAME}: fails SQLite's integrity check: {ok}")
        archive = backup_dir / ARCHIVE_NAME
        result = verify_log(conn, archive if archive.is_dir() else None)
        if not result.ok:
            raise BackupError(f"{backup_dir / DB_NAME}: the event log does not verify at seq "
                              f"{result.first_bad_seq}: {result.problem}")
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{backup_dir / DB_NAME}: not a station database: {exc}") from None
    finally:
        conn.close()
    return manifest


@dataclass(frozen=True)
class RestoreInfo:
    last_seq: int
    kept_aside: Path | None
    devseq: int | None


def restore_backup(backup_dir: Path, db: Path, *, archive_dir: Path | None = None) -> RestoreInfo:
    """Check the backup, then install it at `db` with no station running on it. The
    database it replaces (with its WAL) is moved beside it, never deleted."""
    backup_dir, db = Path(backup_dir), Path(db)
    manifest = check_backup(backup_dir)
    lock = RunLock(db).acquire()
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        staged = db.with_name(db.name + ".restoring")
        shutil.copy2(backup_dir / DB_NAME, staged)
        _fsync(staged)
        aside: Path | None = None
        if db.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            aside = db.with_name(f"{db.name}.before-restore-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{db}{suffix}")
                if part.exists():
                    os.replace(part, Path(f"{aside}{suffix}"))
        os.replace(staged, db)
        _fsync(db.parent)
        devseq = _install_devseq(backup_dir / SEQ_NAME, seq_path_for(db))
        if archive_dir is not None and (backup_dir / ARCHIVE_NAME).is_dir():
            Path(archive_dir).mkdir(parents=True, exist_ok=True)
            for seg in sorted((backup_dir / ARCHIVE_NAME).iterdir()):
                if not (Path(archive_dir) / seg.name).exists():
                    shutil.copy2(seg, Path(archive_dir) / seg.name)
        return RestoreInfo(int(manifest.get("last_seq", 0)), aside, devseq)
    finally:
        lock.release()


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _install_devseq(from_backup: Path, target: Path) -> int | None:
    """The larger of the backup's and the current high-water mark: sequence numbers only
    grow, and a device that saw a higher one would refuse everything below it."""
    value = max(_read_int(from_backup), _read_int(target))
    if value == 0:
        return None
    tmp = target.with_suffix(".devseq-tmp")
    tmp.write_text(str(value))
    _fsync(tmp)
    os.replace(tmp, target)
    _fsync(target.parent)
    return value
