"""The fleet's PostgreSQL schema (ADR 0110).

Every table has `station_id` first in its primary key and is written only with the station
named, so the same DDL runs on one PostgreSQL or, when one server is not enough, on Citus
with each table distributed by `station_id` (`citus_distribute()` below; docs/fleet.md). No
foreign keys across stations, no sequence shared by all rows that a shard would need to
consult. Hashes are stored as 32 bytes, times as timestamptz (the station's ISO form is
recomputed exactly for verification: microseconds, UTC, `Z`).
"""

from __future__ import annotations

import psycopg

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS fleet_meta (key text PRIMARY KEY, value text NOT NULL);

CREATE TABLE IF NOT EXISTS stations (
    station_id      text PRIMARY KEY,
    epoch           bigint NOT NULL DEFAULT 0,
    epoch_seq       bigint NOT NULL DEFAULT 1,
    verified_seq    bigint NOT NULL DEFAULT 0,
    verified_hash   bytea NOT NULL DEFAULT '\\x0000000000000000000000000000000000000000000000000000000000000000',
    max_seq         bigint NOT NULL DEFAULT 0,
    fork_seq        bigint,
    reported_seq    bigint NOT NULL DEFAULT 0,  -- the station's own head (its head messages)
    gap_from        bigint,
    gap_to          bigint,
    events          bigint NOT NULL DEFAULT 0,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz,
    last_event_ts   timestamptz,
    lag_s           double precision,
    occupancy       integer NOT NULL DEFAULT 0,
    open_alarms     integer NOT NULL DEFAULT 0,
    console_url     text
);

CREATE TABLE IF NOT EXISTS events (
    station_id  text NOT NULL,
    seq         bigint NOT NULL,
    epoch       bigint NOT NULL,
    ts          timestamptz NOT NULL,
    type        text NOT NULL,
    actor       text NOT NULL,
    subject     text NOT NULL,
    data        text NOT NULL,
    snapshot    text,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, seq)
);

-- the trace: one row per search key of an event (waybill, parcel, courier, recipient hash)
CREATE TABLE IF NOT EXISTS event_keys (
    station_id text NOT NULL,
    key        text NOT NULL,
    seq        bigint NOT NULL,
    PRIMARY KEY (station_id, key, seq)
);
CREATE INDEX IF NOT EXISTS event_keys_key ON event_keys (key);

-- rows a declared restore replaced: evidence, never deleted
CREATE TABLE IF NOT EXISTS superseded_events (
    station_id  text NOT NULL,
    epoch       bigint NOT NULL,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    type        text NOT NULL,
    actor       text NOT NULL,
    subject     text NOT NULL,
    data        text NOT NULL,
    snapshot    text,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL,
    received_at timestamptz NOT NULL,
    superseded_by bigint NOT NULL,
    PRIMARY KEY (station_id, epoch, seq, hash)
);

-- events that contradict the chain the fleet holds (forks): evidence of a rewrite
CREATE TABLE IF NOT EXISTS conflicts (
    station_id  text NOT NULL,
    seq         bigint NOT NULL,
    epoch       bigint NOT NULL,
    hash        bytea NOT NULL,
    prev_hash   bytea NOT NULL,
    payload     text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, seq, hash)
);

-- the fleet's own alarms about a station's chain: fork, restore
CREATE TABLE IF NOT EXISTS fleet_alarms (
    station_id text NOT NULL,
    kind       text NOT NULL,
    first_seq  bigint NOT NULL,
    last_seq   bigint NOT NULL,
    count      bigint NOT NULL DEFAULT 1,
    message    text NOT NULL,
    opened_at  timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz,
    closed_by  text,
    PRIMARY KEY (station_id, kind, opened_at)
);
CREATE UNIQUE INDEX IF NOT EXISTS fleet_alarms_open ON fleet_alarms (station_id, kind)
    WHERE closed_at IS NULL;

-- the station's own alarms (alarm.raised / alarm.acknowledged), for the stations page
CREATE TABLE IF NOT EXISTS station_alarms (
    station_id text NOT NULL,
    alarm_id   text NOT NULL,
    kind       text NOT NULL,
    message    text NOT NULL,
    raised_at  timestamptz NOT NULL,
    raised_seq bigint NOT NULL,
    cleared    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (station_id, alarm_id)
);

CREATE TABLE IF NOT EXISTS parcels (
    station_id     text NOT NULL,
    parcel_id      text NOT NULL,
    waybill        text,
    carrier        text,
    state          text NOT NULL,
    slot           text,
    courier_id     text,
    recipient_hash text,
    shelved_at     timestamptz,
    updated_at     timestamptz NOT NULL,
    last_seq       bigint NOT NULL,
    PRIMARY KEY (station_id, parcel_id)
);
CREATE INDEX IF NOT EXISTS parcels_waybill ON parcels (waybill);
CREATE INDEX IF NOT EXISTS parcels_state ON parcels (station_id, state);

-- messages that were not usable events (bad JSON, bad hash): counted, a sample kept
CREATE TABLE IF NOT EXISTS rejected (
    station_id  text NOT NULL,
    reason      text NOT NULL,
    count       bigint NOT NULL DEFAULT 1,
    last_at     timestamptz NOT NULL DEFAULT now(),
    sample      text,
    PRIMARY KEY (station_id, reason)
);
"""

DISTRIBUTED = ("stations", "events", "event_keys", "superseded_events", "conflicts",
               "fleet_alarms", "station_alarms", "parcels", "rejected")


def create_schema(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7110)")  # several ingests start at once
        conn.execute(DDL)  # type: ignore[arg-type]
        conn.execute("INSERT INTO fleet_meta VALUES ('schema_version', %s) ON CONFLICT DO NOTHING",
                     (str(SCHEMA_VERSION),))


def citus_distribute(conn: psycopg.Connection) -> None:
    """On a Citus coordinator: distribute every table by station, co-located, so a
    station's rows (and the ingest's transaction over them) stay on one worker."""
    with conn.transaction():
        conn.execute("SELECT create_distributed_table('stations', 'station_id')")
        for table in DISTRIBUTED[1:]:
            conn.execute("SELECT create_distributed_table(%s, 'station_id', colocate_with => 'stations')",
                         (table,))
