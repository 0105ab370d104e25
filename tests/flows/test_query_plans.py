"""Every question the hot paths ask uses an index: a week of history (100,000 parcels,
sessions and scans) turned one OR into a scan of every session on each exit."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from station.config import Secrets
from station.store.db import Store, Tx

from .harness import make_station, phone, sf_waybill

GROWING = ("events", "parcels", "sessions", "session_slots", "pending_placements", "otps",
           "outbox", "auth_failures")


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every SQL statement the flows run, with its number of parameters."""
    seen: dict[str, int] = {}
    query, execute = Store.query, Tx.execute

    def spy_query(self: Store, sql: str, args: Any = ()) -> Any:
        seen.setdefault(sql, len(args))
        return query(self, sql, args)

    def spy_execute(self: Tx, sql: str, args: Any = ()) -> Any:
        seen.setdefault(sql, len(args))
        return execute(self, sql, args)

    monkeypatch.setattr(Store, "query", spy_query)
    monkeypatch.setattr(Tx, "execute", spy_execute)
    return seen


def test_shelving_pickup_and_exit_never_scan_a_growing_table(
        tmp_path: Path, secrets: Secrets, asked: dict[str, int]) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    slot, code = st.shelve(sf_waybill(1), phone(1), session_id=sid)
    st.shelve(sf_waybill(2), phone(2), session_id=sid)
    pending = st.core.shelving.scan(sid, sf_waybill(3), phone(3), "S").pending_id
    st.core.shelving.session(sid)
    st.core.shelving.item(sid, pending)
    st.core.pickup.enter_with_code(code)
    st.take(slot)
    assert st.core.exit.check([sf_waybill(1)]).allowed
    st.take(slot)                                    # nobody's take: an alarm
    st.tick(1.0)
    conn = sqlite3.connect(str(st.config.station.database))
    scans = []
    for sql, n in asked.items():
        if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            continue
        for row in conn.execute("EXPLAIN QUERY PLAN " + sql, [None] * n):
            detail = row[3]
            if detail.startswith("SCAN ") and "USING" not in detail \
                    and detail.split()[1] in GROWING:
                scans.append(f"{detail}: {' '.join(sql.split())[:160]}")
    assert not scans, "\n".join(scans)
