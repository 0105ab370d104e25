"""The event log's archive: compressed, append-only segments of events moved out of the live
database by retention, and the verification that walks archive + live as one chain (#16,
ADR 0101).

A segment is gzip JSON Lines, one event row per line exactly as the database held it (the
`data` column kept as its canonical JSON text, so every hash can be recomputed), named by
its first and last seq: `events-000000000001-000000050000.jsonl.gz`. Its first seq, last
seq, the hash before its first event, its last hash and the SHA-256 of the file are
recorded in the database (`archive_segments`) in the same transaction that moves the
checkpoint past it; a file the database does not list is a segment whose prune was
interrupted (its events are still live), and verify says so."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .eventlog import EVENT_COLUMNS, GENESIS, EventRecord, record_from_row, row_hash

SEGMENT = re.compile(r"^events-(\d{12})-(\d{12})\.jsonl\.gz$")
COLUMNS = [c.strip() for c in EVENT_COLUMNS.split(",")]


def segment_name(first: int, last: int) -> str:
    return f"events-{first:012d}-{last:012d}.jsonl.gz"


@dataclass(frozen=True)
class Segment:
    first_seq: int
    last_seq: int
    first_prev_hash: str
    last_hash: str
    first_ts: str
    last_ts: str
    file: str
    sha256: str
    bytes: int


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_segment(directory: Path, rows: list[tuple[Any, ...]]) -> Segment:
    """Write rows (in seq order, as selected with EVENT_COLUMNS) as one segment: temporary
    file, fsync, rename, fsync of the directory, so a crash leaves the whole file or none.
    The bytes depend on the rows alone (gzip without a time stamp): writing the same range
    again after an interrupted prune gives the same file."""
    if not rows:
        raise ValueError("an archive segment needs at least one event")
    directory.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:
        for row in rows:
            gz.write(json.dumps(dict(zip(COLUMNS, row)), ensure_ascii=False,
                                separators=(",", ":")).encode("utf-8") + b"\n")
    data = raw.getvalue()
    first, last = rows[0], rows[-1]
    name = segment_name(first[0], last[0])
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".gz")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return Segment(first[0], last[0], first[7], last[8], first[1], last[1], name,
                   hashlib.sha256(data).hexdigest(), len(data))


def read_segment(path: Path) -> Iterator[tuple[Any, ...]]:
    """The rows of one segment, as tuples in EVENT_COLUMNS order."""
    with gzip.open(path, "rb") as gz:
        for line in gz:
            obj = json.loads(line)
            yield tuple(obj[c] for c in COLUMNS)


def recorded_segments(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT first_seq, last_seq, first_prev_hash, last_hash, first_ts, last_ts, file, sha256,"
        " bytes, deleted_at FROM archive_segments ORDER BY first_seq")
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def checkpoint(conn: sqlite3.Connection) -> tuple[int, str, str]:
    """(seq, hash, ts) of the last archived event; (0, GENESIS, "") before any retention."""
    try:
        row = conn.execute("SELECT seq, hash, ts FROM log_checkpoint WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # a database from before migration 5 (read-only CLI)
        return 0, GENESIS, ""
    return (int(row[0]), str(row[1]), str(row[2])) if row else (0, GENESIS, "")


def iter_archive(conn: sqlite3.Connection, archive_dir: Path, *, until_seq: int | None = None
                 ) -> Iterator[EventRecord]:
    """The archived events in seq order (segments as the database lists them)."""
    for seg in recorded_segments(conn):
        if seg["deleted_at"] is not None:
            raise FileNotFoundError(
                f"archive segment {seg['file']} was deleted to free disk: events "
                f"{seg['first_seq']}..{seg['last_seq']} are no longer at this station")
        path = archive_dir / seg["file"]
        if not path.is_file():
            raise FileNotFoundError(f"archive segment {path} is missing")
        for row in read_segment(path):
            if until_seq is not None and row[0] > until_seq:
                return
            yield record_from_row(row)


def iter_all_events(conn: sqlite3.Connection, archive_dir: Path | None, *,
                    until_seq: int | None = None) -> Iterator[EventRecord]:
    """Archive, then the live events above the checkpoint: the whole log from seq 1, for
    replay. Without an archive dir a pruned log cannot be replayed from its start."""
    from .eventlog import iter_events

    cp_seq = checkpoint(conn)[0]
    if cp_seq:
        if archive_dir is None:
            raise FileNotFoundError(
                f"events 1..{cp_seq} are in the archive: give the archive directory to replay them")
        yield from iter_archive(conn, archive_dir, until_seq=until_seq)
        if until_seq is not None and until_seq <= cp_seq:
            return
    yield from iter_events(conn, after_seq=cp_seq, until_seq=until_seq)


@dataclass
class LogVerify:
    """What `station log verify` found: `ok` is the whole answer; the rest says what was
    walked and, when broken, where."""

    ok: bool = True
    checked: int = 0  # live events whose chain was checked
    first_bad_seq: int | None = None
    problem: str = ""
    checkpoint_seq: int = 0
    archived_checked: int = 0  # archived events checked (with the archive dir)
    segments: int = 0
    bad_segment: str | None = None
    pending_delete: int = 0  # live rows at or below the checkpoint (a prune was interrupted)
    notes: list[str] = field(default_factory=list)

    def fail(self, seq: int | None, problem: str, segment: str | None = None) -> LogVerify:
        self.ok, self.first_bad_seq, self.problem, self.bad_segment = False, seq, problem, segment
        return self


def _walk(rows: Iterable[tuple[Any, ...]], prev: str, expected: int | None, out: LogVerify,
          where: str | None) -> tuple[str, int | None, int, bool]:
    """Check rows as one stretch of the chain; returns (last hash, next seq, count, ok)."""
    n = 0
    for seq, ts, type_, actor, subject, data, snapshot, prev_hash, hash_ in rows:
        if expected is not None and seq != expected:
            out.fail(expected, f"row {expected} is missing" + (f" from {where}" if where else ""), where)
            return prev, expected, n, False
        if prev_hash != prev:
            out.fail(seq, "prev_hash does not match the row before", where)
            return prev, expected, n, False
        if row_hash(seq, ts, type_, actor, subject, data, snapshot, prev_hash) != hash_:
            out.fail(seq, "hash does not match the row's content", where)
            return prev, expected, n, False
        prev, expected, n = hash_, seq + 1, n + 1
    return prev, expected, n, True


def verify_log(conn: sqlite3.Connection, archive_dir: Path | None = None) -> LogVerify:
    """The live chain from the checkpoint and, given the archive directory, every segment
    from the first event (or the first segment still kept) to the checkpoint, end to end."""
    out = LogVerify()
    cp_seq, cp_hash, _ = checkpoint(conn)
    out.checkpoint_seq = cp_seq
    if archive_dir is not None and not _verify_archive(conn, Path(archive_dir), cp_seq, cp_hash, out):
        return out
    out.pending_delete = int(conn.execute(
        "SELECT COUNT(*) FROM events WHERE seq <= ?", (cp_seq,)).fetchone()[0]) if cp_seq else 0
    if out.pending_delete:
        out.notes.append(f"{out.pending_delete} events at or below the checkpoint are still live "
                         "(an interrupted prune); the next retention run deletes them")
    cursor = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq", (cp_seq,))

    def rows() -> Iterator[tuple[Any, ...]]:
        while batch := cursor.fetchmany(20000):
            yield from batch

    _, _, n, _ = _walk(rows(), cp_hash, cp_seq + 1 if cp_seq else None, out, None)
    out.checked = n
    return out


def _verify_archive(conn: sqlite3.Connection, archive_dir: Path, cp_seq: int, cp_hash: str,
                    out: LogVerify) -> bool:
    segments = recorded_segments(conn)
    listed = {s["file"] for s in segments}
    if archive_dir.is_dir():
        for path in sorted(archive_dir.iterdir()):
            if SEGMENT.match(path.name) and path.name not in listed:
                out.notes.append(f"{path.name} is not recorded (a prune was interrupted before it "
                                 "was committed): its events are still live")
    prev, expected = GENESIS, 1
    for seg in segments:
        name = seg["file"]
        if seg["deleted_at"] is not None:
            out.notes.append(f"{name} was deleted to free disk: events {seg['first_seq']}.."
                             f"{seg['last_seq']} are verified only through the recorded hashes")
            prev, expected = seg["last_hash"], seg["last_seq"] + 1
            continue
        if seg["first_seq"] != expected or seg["first_prev_hash"] != prev:
            out.fail(seg["first_seq"], f"archive segment {name} does not follow the one before", name)
            return False
        path = archive_dir / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            out.fail(seg["first_seq"], f"archive segment {name} cannot be read: {exc.strerror or exc}", name)
            return False
        if hashlib.sha256(data).hexdigest() != seg["sha256"]:
            out.fail(seg["first_seq"], f"archive segment {name} was changed (its SHA-256 is not the "
                     "one recorded when it was written)", name)
            return False
        try:
            prev, walked_to, n, ok = _walk(read_segment(path), prev, expected, out, name)
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
            out.fail(seg["first_seq"], f"archive segment {name} cannot be decoded: {exc}", name)
            return False
        if not ok:
            out.problem = f"archive segment {name}: {out.problem}"
            return False
        expected = walked_to if walked_to is not None else expected
        if expected != seg["last_seq"] + 1 or prev != seg["last_hash"]:
            out.fail(seg["last_seq"], f"archive segment {name} ends before its recorded last event", name)
            return False
        out.archived_checked += n
        out.segments += 1
    if cp_seq and (expected != cp_seq + 1 or prev != cp_hash):
        out.fail(expected, "the archive does not reach the checkpoint kept in the database")
        return False
    return True
