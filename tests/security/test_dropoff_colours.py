"""Drop-offs cannot starve pickups of colours (#14.8, ADR 0076). A burst of concurrent
drop-off starts from one kiosk token, far more than the eight colours, opens exactly
`dropoff_max_colours` drop-offs; the customers who then come hold the other colours and
none is held at the door or refused `room_busy`; when the drop-offs time out, the next
burst again gets exactly the reserve. Against `station run`."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from station.domain.colours import PALETTE_HEX
from tests.reliability.harness import ProcStation, shelve, until

RESERVE = 2                      # dropoff_max_colours' default
CUSTOMERS = len(PALETTE_HEX) - RESERVE


def _concurrently(ps: ProcStation, calls: list[tuple[str, dict[str, Any]]],
                  kiosks: int = 1) -> list[httpx.Response]:
    """Every call at once from 16 clients; call i from kiosk token i % `kiosks` (customers
    entering together come through separate kiosks: a guess in flight at one kiosk counts
    against it, docs/pickup-codes.md)."""
    tokens = [{"Authorization": "Bearer " + ps.token("kiosk", f"kiosk-{k + 1}")} for k in range(kiosks)]
    local = threading.local()
    start = threading.Barrier(min(16, len(calls)))

    def one(item: tuple[int, tuple[str, dict[str, Any]]]) -> httpx.Response:
        i, call = item
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=ps.base_url, timeout=60.0)
            start.wait()
        return local.http.post(call[0], json=call[1], headers=tokens[i % kiosks])

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, enumerate(calls)))


def _dropoffs(ps: ProcStation, first: int, n: int) -> list[httpx.Response]:
    return _concurrently(ps, [("/api/kiosk/dropoff", {"send_code": f"SFS{first + i:06d}", "size": "M"})
                              for i in range(n)])


def _most_open_at_once(ps: ProcStation) -> int:
    """Drop-off sessions open at once at any point of the log (opened minus closed)."""
    most = now = 0
    for r in ps.query("SELECT type FROM events WHERE type IN ('dropoff.opened', 'dropoff.closed')"
                      " ORDER BY seq"):
        now += 1 if r["type"] == "dropoff.opened" else -1
        most = max(most, now)
    return most


def test_a_burst_of_dropoffs_takes_at_most_the_reserve_and_customers_still_get_in(tmp_path: Path) -> None:
    with ProcStation(tmp_path, placement_timeout_s=20.0) as ps:
        ps.start()
        got = shelve(ps, [(f"SF{7000000000001 + i:013d}", f"1390000{i:04d}") for i in range(CUSTOMERS)])

        answers = _dropoffs(ps, 1, 40)
        opened = [r.json() for r in answers if r.status_code == 200]
        assert len(opened) == RESERVE, [r.text for r in answers][:3]
        assert {(r.status_code, r.json()["error"]) for r in answers if r.status_code != 200} == \
            {(503, "dropoff_busy")}
        assert len({d["colour"] for d in opened}) == RESERVE

        # every customer now gets in at once, with a colour of their own, held by nobody
        assert len(ps.query("SELECT 1 FROM sessions WHERE kind = 'dropoff' AND state = 'open'")) == RESERVE
        entries = _concurrently(ps, [("/api/kiosk/code", {"code": g["code"]}) for g in got.values()],
                                kiosks=CUSTOMERS)
        assert [r.status_code for r in entries] == [200] * CUSTOMERS, [r.text for r in entries]
        assert all(r.json()["held_s"] == 0 for r in entries)
        colours = {r.json()["colour"] for r in entries} | {d["colour"] for d in opened}
        assert len(colours) == len(PALETTE_HEX)
        assert not ps.query("SELECT 1 FROM events WHERE type = 'entry.refused'")

        # a minute later (here: the placement timeout) the same burst gets the reserve again
        until(lambda: not ps.query("SELECT 1 FROM sessions WHERE kind = 'dropoff' AND state = 'open'"),
              40, "drop-offs timed out")
        ps.lights_match()
        answers = _dropoffs(ps, 100, 40)
        assert sum(r.status_code == 200 for r in answers) == RESERVE
        assert _most_open_at_once(ps) == RESERVE
        opened_events = ps.query("SELECT data FROM events WHERE type = 'dropoff.opened'")
        assert len(opened_events) == 2 * RESERVE
        inside = {r["colour"] for r in ps.query(
            "SELECT colour FROM sessions WHERE kind = 'pickup' AND state = 'open'")}
        assert len(inside) == CUSTOMERS
        assert not inside & {json.loads(e["data"])["colour"] for e in opened_events[RESERVE:]}
        assert ps.verify_log().returncode == 0
