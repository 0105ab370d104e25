"""Rebuild projections from the event log into a new database (`station log replay`).

After retention the log is the archive's segments followed by the live events above the
checkpoint; replay reads both, so the rebuilt projections are those on disk (the
`retention.applied` events delete, at their place in the log, what retention deleted)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .archive import iter_all_events
from .db import connect
from .eventlog import EVENT_COLUMNS, parse_utc
from .projections import apply_event
from .schema import migrate


def replay_into(
    source: sqlite3.Connection,
    out_path: str | Path,
    *,
    until_seq: int | None = None,
    until_time: str | None = None,
    archive_dir: str | Path | None = None,
) -> int:
    """Copy events (unchanged, so the chain still verifies) up to a point and apply each;
    returns the last seq replayed."""
    out_path = Path(out_path)
    if out_path.exists():
        raise FileExistsError(f"{out_path} exists: replay writes a new database")
    dest = connect(out_path)
    try:
        migrate(dest)
        last = 0
        dest.execute("BEGIN")
        limit_ts = None
        if until_time is not None:
            # compare as epoch: accepts any ISO form the operator types
            limit_ts = parse_utc(until_time)
        archive = Path(archive_dir) if archive_dir is not None else None
        for n, event in enumerate(iter_all_events(source, archive, until_seq=until_seq), 1):
            if limit_ts is not None and parse_utc(event.ts) > limit_ts:
                break
            dest.execute(
                f"INSERT INTO events({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                (event.seq, event.ts, event.type, event.actor, event.subject,
                 _canonical(event.data), event.snapshot, event.prev_hash, event.hash),
            )
            apply_event(dest, event)
            last = event.seq
            if n % 50000 == 0:
                dest.execute("COMMIT")
                dest.execute("BEGIN")
        dest.execute("COMMIT")
        return last
    finally:
        dest.close()


def _canonical(data: object) -> str:
    from .eventlog import canonical_json

    return canonical_json(data)
