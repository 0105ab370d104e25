"""Schema migrations, applied in order; `meta.schema_version` says how far a database is.

Projection tables are rebuilt from the event log by replay. Side tables hold what must
never be in the log (encrypted face templates, encrypted outbox payloads, one-time code
digests) and are not projections."""

from __future__ import annotations

import sqlite3

PROJECTION_TABLES = (
    "parcels",
    "couriers",
    "sessions",
    "pending_placements",
    "devices",
    "auth_failures",
    "alarms",
    "session_slots",
    "slot_alarms",
    "sensed",
    "slot_counts",
    "slot_lifts",
    "device_events",
    "parcel_notices",
    "operators",
    "operator_sessions",
    "kiosk_devices",
    "refusals",
    "bundle_state",
    "takes",
    "session_exits",
    "recipient_flags",
)
SIDE_TABLES = ("face_templates", "outbox", "otps", "upstream_cursor", "recipient_contacts",
               "log_checkpoint", "archive_segments", "session_seen", "pairing_codes")

MIGRATIONS: list[str] = [
    # 1: event log and projections
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        type TEXT NOT NULL,
        actor TEXT NOT NULL,
        subject TEXT NOT NULL,
        data TEXT NOT NULL,
        snapshot TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX events_ts ON events(ts);
    CREATE INDEX events_type ON events(type, seq);
    CREATE INDEX events_subject ON events(subject, seq);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;

    CREATE TABLE parcels (
        id TEXT PRIMARY KEY,
        waybill TEXT NOT NULL UNIQUE,
        carrier TEXT NOT NULL,
        direction TEXT NOT NULL,
        state TEXT NOT NULL,
        slot TEXT NOT NULL,
        size TEXT NOT NULL,
        recipient_hash TEXT,
        phone_masked TEXT,
        code_digest TEXT,
        courier_id TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        deadline REAL
    );
    CREATE INDEX parcels_slot ON parcels(slot, state);
    CREATE INDEX parcels_recipient ON parcels(recipient_hash, state);
    CREATE INDEX parcels_code ON parcels(code_digest);
    CREATE INDEX parcels_state ON parcels(state, carrier);

    CREATE TABLE couriers (
        id TEXT PRIMARY KEY,
        carrier TEXT NOT NULL,
        name TEXT NOT NULL,
        pin_hash TEXT NOT NULL,
        active INTEGER NOT NULL,
        valid_from REAL,
        valid_until REAL,
        has_face INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );

    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        recipient_hash TEXT,
        colour TEXT,
        mode TEXT,
        state TEXT NOT NULL,
        opened_at REAL NOT NULL,
        expires_at REAL,
        closed_at REAL,
        reason TEXT,
        parcels TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX sessions_open ON sessions(state, kind);

    CREATE TABLE pending_placements (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        waybill TEXT NOT NULL,
        carrier TEXT NOT NULL,
        size TEXT NOT NULL,
        recipient_hash TEXT NOT NULL,
        phone_masked TEXT NOT NULL,
        target_slot TEXT,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        deadline REAL NOT NULL,
        parcel_id TEXT,
        reason TEXT
    );
    CREATE INDEX pending_open ON pending_placements(state, session_id);

    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        online INTEGER NOT NULL,
        boot_id TEXT,
        changed_at REAL NOT NULL
    );

    CREATE TABLE auth_failures (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        scope TEXT NOT NULL,
        cleared INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX auth_failures_scope ON auth_failures(kind, scope, cleared);
    CREATE INDEX auth_failures_at ON auth_failures(at);

    CREATE TABLE alarms (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        message TEXT NOT NULL,
        raised_at REAL NOT NULL,
        acknowledged_at REAL,
        acknowledged_by TEXT
    );

    CREATE TABLE session_slots (
        session_id TEXT NOT NULL,
        slot TEXT NOT NULL,
        remaining INTEGER NOT NULL,
        PRIMARY KEY (session_id, slot)
    );
    CREATE INDEX session_slots_slot ON session_slots(slot);

    CREATE TABLE slot_alarms (
        slot TEXT PRIMARY KEY,
        until REAL NOT NULL,
        reason TEXT NOT NULL
    );

    CREATE TABLE face_templates (
        courier_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        blob BLOB NOT NULL,
        PRIMARY KEY (courier_id, idx)
    );

    CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        channel TEXT NOT NULL,
        subject TEXT NOT NULL,
        payload BLOB NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        last_error TEXT,
        delivered_at REAL
    );
    CREATE INDEX outbox_due ON outbox(state, next_at);

    CREATE TABLE otps (
        id TEXT PRIMARY KEY,
        recipient_hash TEXT NOT NULL,
        digest TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        tries_left INTEGER NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX otps_recipient ON otps(recipient_hash, created_at);

    CREATE TABLE recipient_contacts (
        recipient_hash TEXT PRIMARY KEY,
        phone_sealed BLOB NOT NULL,
        updated_at REAL NOT NULL
    );

    CREATE TABLE upstream_cursor (
        name TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    );
    """,
    # 2: what the shelf sensors said (once per device event), their item counts, and lifts
    # awaiting a put-back. Migrations are append-only from here: a database at version 1
    # gets these tables by this step, never by an edited step 1.
    """
    CREATE TABLE IF NOT EXISTS sensed (
        evt TEXT PRIMARY KEY
    );
    CREATE TABLE IF NOT EXISTS slot_lifts (
        slot TEXT PRIMARY KEY,
        n INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS slot_counts (
        slot TEXT PRIMARY KEY,
        count INTEGER NOT NULL
    );
    """,
    # 3: indexes for the questions asked on every exit, take and handheld view, which a
    # week of history (100,000 sessions and scans) turned into full table scans
    """
    CREATE INDEX IF NOT EXISTS sessions_recent ON sessions(kind, reason, closed_at);
    CREATE INDEX IF NOT EXISTS pending_session ON pending_placements(session_id, created_at);
    CREATE INDEX IF NOT EXISTS session_slots_live ON session_slots(slot, remaining);
    DROP INDEX IF EXISTS session_slots_slot;
    """,
    # 4: every device event the log took, by (device, boot id, event seq), so a captured
    # signed event published again after a restart is recognised (#14.9); filled from the
    # log for a database that already holds device events, as replay would fill it
    """
    CREATE TABLE IF NOT EXISTS device_events (
        device TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        evt_seq INTEGER NOT NULL,
        PRIMARY KEY (device, boot_id, evt_seq)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO device_events(device, boot_id, evt_seq)
        SELECT subject, json_extract(data, '$.boot_id'), json_extract(data, '$.evt_seq')
        FROM events
        WHERE type IN ('door.unlocked', 'door.locked', 'door.opened', 'door.closed',
                       'door.held_open', 'door.forced_open', 'door.emergency_release',
                       'door.emergency_reset', 'device.command_refused')
          AND json_type(data, '$.boot_id') = 'text' AND json_type(data, '$.evt_seq') = 'integer';
    """,
    # 5: guesses are stamped on the steady clock (boot id + monotonic reading, ADR 0070) so a
    # wall-clock step can neither lengthen nor shorten a lockout; the lockout reads the
    # youngest failures of a kind, and a phone's one-time codes, newest first
    """
    ALTER TABLE auth_failures ADD COLUMN boot TEXT;
    ALTER TABLE auth_failures ADD COLUMN mono REAL;
    CREATE INDEX IF NOT EXISTS auth_failures_kind_seq ON auth_failures(kind, seq);
    ALTER TABLE otps ADD COLUMN boot TEXT;
    ALTER TABLE otps ADD COLUMN mono REAL;
    """,
    # 6: retention (#16, ADR 0101): the checkpoint (seq and hash of the last event moved to
    # the archive) and the archive's segments with their hashes. Events may be deleted only
    # at or below the checkpoint, which moves only after their segment is on disk.
    """
    CREATE TABLE IF NOT EXISTS log_checkpoint (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        ts TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS archive_segments (
        first_seq INTEGER PRIMARY KEY,
        last_seq INTEGER NOT NULL,
        first_prev_hash TEXT NOT NULL,
        last_hash TEXT NOT NULL,
        first_ts TEXT NOT NULL,
        last_ts TEXT NOT NULL,
        file TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at REAL NOT NULL,
        deleted_at REAL
    );
    DROP TRIGGER IF EXISTS events_no_delete;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        WHEN OLD.seq > COALESCE((SELECT seq FROM log_checkpoint WHERE id = 1), 0)
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only above its archive checkpoint'); END;
    """,
    # 7: where a put the station could not attribute for certain was sensed, while the
    # courier is asked to confirm it (docs/adr/0095)
    """
    ALTER TABLE pending_placements ADD COLUMN put_slot TEXT;
    """,
    # 8: customer care (#19, ADR 0150): each reminder or notice about a parcel, once. The key
    # is what makes "never twice" hold across a crash: the notice's event, this row and its
    # outbox row commit together, and a second decision about the same notice cannot insert.
    """
    CREATE TABLE IF NOT EXISTS parcel_notices (
        parcel_id TEXT NOT NULL,
        notice TEXT NOT NULL,
        outbox_id TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (parcel_id, notice)
    );
    """,
    # 9: deadline extensions (#19.3): how many times the customer extended (once allowed)
    """
    ALTER TABLE parcels ADD COLUMN extensions INTEGER NOT NULL DEFAULT 0;
    """,
    # 10: operator accounts, their server-side sessions and paired kiosk screens (#20.1,
    # ADR 0130). A session is known by the keyed hash of its id, a kiosk by the keyed hash of
    # its credential: neither secret is stored. `session_seen` (when a session was last
    # used) and `pairing_codes` (digests of one-time pairing codes) are side tables, never
    # replayed: the first is volatile bookkeeping, the second a secret's digest.
    """
    CREATE TABLE IF NOT EXISTS operators (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        pw_hash TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS operator_sessions (
        key_hash TEXT PRIMARY KEY,
        handle TEXT NOT NULL,
        operator_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        boot TEXT,
        mono REAL,
        ended_at REAL,
        end_reason TEXT
    );
    CREATE INDEX IF NOT EXISTS operator_sessions_operator ON operator_sessions(operator_id, ended_at);
    CREATE INDEX IF NOT EXISTS operator_sessions_handle ON operator_sessions(handle);
    CREATE TABLE IF NOT EXISTS kiosk_devices (
        id TEXT PRIMARY KEY,
        cred_hash TEXT,
        active INTEGER NOT NULL DEFAULT 0,
        paired_at REAL,
        revoked_at REAL
    );
    CREATE TABLE IF NOT EXISTS session_seen (
        key_hash TEXT PRIMARY KEY,
        at REAL NOT NULL,
        boot TEXT,
        mono REAL
    );
    CREATE TABLE IF NOT EXISTS pairing_codes (
        code_hash TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        boot TEXT,
        mono REAL,
        consumed_at REAL
    );
    """,
    # 11: refusals at the kiosk (#19.4): a parcel the customer refused, waiting to be put back
    # in its slot (state 'waiting') or back there and refused ('done')
    """
    CREATE TABLE IF NOT EXISTS refusals (
        parcel_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        slot TEXT NOT NULL,
        state TEXT NOT NULL,
        at REAL NOT NULL
    );
    """,
    # 12: couriers from the fleet's bundles (#20.2, ADR 0131): where each courier comes from
    # ('local': the station's own CLI or API; 'fleet': a bundle) and the last bundle applied
    """
    ALTER TABLE couriers ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE couriers ADD COLUMN disabled_by TEXT;
    CREATE TABLE IF NOT EXISTS bundle_state (
        kind TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        issued_at REAL,
        applied_at REAL NOT NULL,
        digest TEXT
    );
    """,
    # 13: every take the shelves sensed that some customer must answer for (their own
    # parcel not yet shown, or nobody's), until it is shown at the exit, put back or settled
    # by an operator; and which sessions have passed the exit. The exit decides from these
    # (ADR 0075). A database upgraded to this step starts with no open take (earlier
    # takes count as settled; `station log replay` rebuilds them); its exits are filled
    # from the log, so no session that already left can leave again.
    """
    CREATE TABLE IF NOT EXISTS takes (
        seq INTEGER PRIMARY KEY,
        slot TEXT NOT NULL,
        session_id TEXT,
        at REAL NOT NULL,
        resolved_seq INTEGER,
        how TEXT
    );
    CREATE INDEX IF NOT EXISTS takes_open ON takes(resolved_seq, seq);
    CREATE INDEX IF NOT EXISTS takes_session ON takes(session_id, resolved_seq);
    CREATE TABLE IF NOT EXISTS session_exits (
        session_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO session_exits(session_id, seq)
        SELECT json_extract(data, '$.session_id'), seq FROM events
        WHERE type = 'exit.passed' AND json_type(data, '$.session_id') = 'text';
    """,
    # 14: when a session closed on the steady clock too (its boot and monotonic reading), so
    # "closed within the last two minutes" cannot stretch with a wall-clock step (#22.3)
    """
    ALTER TABLE sessions ADD COLUMN closed_boot TEXT;
    ALTER TABLE sessions ADD COLUMN closed_mono REAL;
    """,
    # 15: recipients who need a reachable slot (#19.5, ADR 0154), by the keyed hash of their
    # number (and its masked form for the operator's list): never the number itself. Who
    # set the flag (`source` operator or pre-advice, and the carrier of a pre-advice) says
    # who may clear it.
    """
    CREATE TABLE IF NOT EXISTS recipient_flags (
        recipient_hash TEXT PRIMARY KEY,
        phone_masked TEXT NOT NULL,
        source TEXT NOT NULL,
        carrier TEXT,
        actor TEXT NOT NULL,
        set_at REAL NOT NULL
    );
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this software ({len(MIGRATIONS)})"
        )
    for number in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split(MIGRATIONS[number - 1]):
                conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(number),)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def _split(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buf: list[str] = []
    for line in script.strip().splitlines():
        buf.append(line)
        candidate = "\n".join(buf).strip()
        if candidate.endswith(";") and sqlite3.complete_statement(candidate):
            statements.append(candidate)
            buf = []
    if "".join(buf).strip():
        statements.append("\n".join(buf))
    return statements
