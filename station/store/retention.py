"""Retention of the event log (#16, ADR 0101): events older than `[retention] keep_days` move
into archive segments, then leave the live database, in batches that never hold the
station's lock for long.

One segment at a time, in an order that a crash at any point leaves recoverable:
  1. its rows are read on a snapshot connection (no lock) and written to a segment file
     (temporary file, fsync, rename);
  2. one short transaction records the segment, moves the checkpoint (seq and hash of its
     last event) and logs `log.archived`;
  3. its rows are deleted in transactions of `batch_events` rows (the delete trigger allows
     it at or below the checkpoint only).
Killed after 1, the file is unrecorded and its events live: verify notes it, the next run
writes the same file again. Killed in 3, the rows left at or below the checkpoint are in
both places, which the checkpoint says: verify counts them, the next run deletes them.
Nothing is deleted before its segment is durable and recorded.

With `[upstream]` enabled nothing above the forwarder's cursor (what the fleet has
acknowledged) is archived. Projections of finished parcels and closed sessions older than
the cut are deleted by the applier of a `retention.applied` event, so that replaying the
log (archive + live) rebuilds exactly the tables on disk; rows of a live parcel never go."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .archive import recorded_segments, write_segment
from .db import Store, StoreError
from .eventlog import EVENT_COLUMNS, Event, utc_iso

log = logging.getLogger("station.retention")
UPSTREAM_CURSOR = "upstream"  # the forwarder's row in upstream_cursor (station/upstream.py)


@dataclass
class RetentionRun:
    segments: int = 0
    archived: int = 0  # events moved to the archive
    deleted: int = 0  # live rows deleted
    through_seq: int = 0  # the checkpoint after the run
    held_by_upstream: bool = False


class Retention:
    def __init__(self, store: Store, archive_dir: Path | str, *, keep_days: float,
                 segment_events: int = 50_000, batch_events: int = 500,
                 upstream: bool = False) -> None:
        self.store = store
        self.archive_dir = Path(archive_dir)
        self.keep_days = keep_days
        self.segment_events = segment_events
        self.batch_events = batch_events
        self.upstream = upstream

    def checkpoint_seq(self) -> int:
        row = self.store.query_one("SELECT seq FROM log_checkpoint WHERE id = 1")
        return int(row["seq"]) if row else 0

    def limit_seq(self, now: float) -> tuple[int, bool]:
        """The highest seq that may leave the live database now, and whether the upstream
        cursor is what holds it back."""
        cut = utc_iso(now - self.keep_days * 86400.0)
        with self.store.snapshot() as conn:
            row = conn.execute("SELECT MAX(seq) FROM events WHERE ts < ?", (cut,)).fetchone()
            limit = int(row[0] or 0)
            if self.upstream:
                acked = conn.execute("SELECT seq FROM upstream_cursor WHERE name = ?",
                                     (UPSTREAM_CURSOR,)).fetchone()
                acked_seq = int(acked[0]) if acked else 0
                if acked_seq < limit:
                    return acked_seq, True
        return limit, False

    def run(self, now: float, *, max_segments: int | None = None,
            stop: Callable[[], bool] | None = None) -> RetentionRun:
        """Archive and delete what is due; `stop` is asked between segments (a station
        shutting down does not wait for a first run over years of history)."""
        out = RetentionRun()
        limit, out.held_by_upstream = self.limit_seq(now)
        out.deleted += self._delete_pending()
        cut_ts = utc_iso(now - self.keep_days * 86400.0)
        while (max_segments is None or out.segments < max_segments) and not (stop and stop()):
            cp_seq = self.checkpoint_seq()
            first = cp_seq + 1
            last = min(cp_seq + self.segment_events, limit)
            if last < first:
                break
            if last - first + 1 < self.segment_events and not self._partial_is_due(first, now):
                break  # a short segment waits a day for more events, unless it is that old
            n = self._archive(first, last)
            out.segments += 1
            out.archived += n
            out.deleted += self._delete_pending()
        out.through_seq = self.checkpoint_seq()
        if out.segments:
            with self.store.transaction() as tx:
                tx.emit(Event("retention.applied", "log", "station", {
                    "before": cut_ts, "through_seq": out.through_seq, "segments": out.segments,
                    "archived": out.archived}))
        return out

    def _partial_is_due(self, first: int, now: float) -> bool:
        row = self.store.query_one("SELECT ts FROM events WHERE seq = ?", (first,))
        return row is not None and row["ts"] < utc_iso(now - (self.keep_days + 1) * 86400.0)

    def _archive(self, first: int, last: int) -> int:
        with self.store.snapshot() as conn:
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (first, last)).fetchall()
        if not rows or rows[0][0] != first or rows[-1][0] != last or len(rows) != last - first + 1:
            raise StoreError(f"events {first}..{last} are not all in the live log: not archived")
        seg = write_segment(self.archive_dir, rows)
        with self.store.transaction() as tx:
            cp = tx.execute("SELECT seq FROM log_checkpoint WHERE id = 1").fetchone()
            if (int(cp[0]) if cp else 0) != first - 1:
                raise StoreError("another retention run moved the checkpoint")
            tip = tx.execute("SELECT hash FROM events WHERE seq = ?", (last,)).fetchone()
            if tip is None or tip[0] != seg.last_hash:
                raise StoreError(f"event {last} changed while it was archived")
            tx.execute(
                "INSERT OR REPLACE INTO archive_segments(first_seq, last_seq, first_prev_hash,"
                " last_hash, first_ts, last_ts, file, sha256, bytes, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (seg.first_seq, seg.last_seq, seg.first_prev_hash, seg.last_hash, seg.first_ts,
                 seg.last_ts, seg.file, seg.sha256, seg.bytes, tx.now))
            tx.execute(
                "INSERT INTO log_checkpoint(id, seq, hash, ts) VALUES (1, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
                " ts = excluded.ts", (seg.last_seq, seg.last_hash, seg.last_ts))
            tx.emit(Event("log.archived", seg.file, "station", {
                "first_seq": seg.first_seq, "last_seq": seg.last_seq, "last_hash": seg.last_hash,
                "sha256": seg.sha256, "bytes": seg.bytes}))
        return len(rows)

    def _delete_pending(self) -> int:
        """Delete the live rows at or below the checkpoint, `batch_events` per transaction."""
        deleted = 0
        while True:
            with self.store.transaction() as tx:
                row = tx.execute("SELECT seq FROM log_checkpoint WHERE id = 1").fetchone()
                low = tx.execute("SELECT MIN(seq) FROM events").fetchone()[0]
                if row is None or low is None or low > row[0]:
                    return deleted
                high = min(int(row[0]), int(low) + self.batch_events - 1)
                cur = tx.execute("DELETE FROM events WHERE seq BETWEEN ? AND ?", (low, high))
                deleted += max(0, cur.rowcount)

    def prune_archives(self, free_bytes: int) -> tuple[int, int]:
        """Delete archive segments, oldest first, until `free_bytes` are freed (the disk
        budget, when configured so); their rows stay, marked deleted, so the chain through
        them is still known by its hashes. Returns (segments, bytes)."""
        removed = freed = 0
        with self.store.snapshot() as conn:
            segments = recorded_segments(conn)
        for seg in segments:
            if freed >= free_bytes:
                break
            if seg["deleted_at"] is not None:
                continue
            path = self.archive_dir / seg["file"]
            size = path.stat().st_size if path.exists() else 0
            with self.store.transaction() as tx:
                tx.execute("UPDATE archive_segments SET deleted_at = ? WHERE first_seq = ?",
                           (tx.now, seg["first_seq"]))
                tx.emit(Event("log.archive_deleted", seg["file"], "station", {
                    "first_seq": seg["first_seq"], "last_seq": seg["last_seq"],
                    "reason": "disk_low"}))
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            removed += 1
            freed += size
        return removed, freed

