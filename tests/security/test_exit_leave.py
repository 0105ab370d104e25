"""The exit decides from what the shelves sensed, never from what the kiosk claims (#14.2,
ADR 0075). A customer who lifted somebody else's parcel and pressed "leave without
parcels", a forged or null session id, another customer's id: none of them opens the exit
while a take since the session came in is unexplained, however many requests arrive at
once; once the take is explained (put back, shown, settled by an operator) the right
session leaves exactly once. Against `station run` with the firmware's real sensors."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.harness import ProcStation, shelve, until

PHONES = {"A": "13900000101", "B": "13900000202", "C": "13900000303", "D": "13900000404"}
WAYBILL = {k: f"SF{1000000000001 + i:013d}" for i, k in enumerate(PHONES)}


class UnlockCounter:
    """Counts unlock commands the exit door's firmware executes (bolt released)."""

    def __init__(self, ps: ProcStation) -> None:
        self.n = 0
        self._lock = threading.Lock()
        hal = ps.controller(ps.config.doors.exit).hal
        original = hal.set_locked

        def counting(locked: bool) -> None:
            if not locked:
                with self._lock:
                    self.n += 1
            original(locked)

        hal.set_locked = counting


def _burst(ps: ProcStation, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Fire every (path, body) at once from 32 clients; each answer with its request."""
    token = {"Authorization": "Bearer " + ps.token("kiosk", "kiosk-exit")}
    local = threading.local()
    start = threading.Barrier(min(32, len(calls)))

    def one(call: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=ps.base_url, timeout=30.0)
            start.wait()
        res = local.http.post(call[0], json=call[1], headers=token)
        assert res.status_code == 200, res.text
        return {"sent": call[1], **res.json()}

    with ThreadPoolExecutor(32) as pool:
        return list(pool.map(one, calls))


def _passed(ps: ProcStation) -> list[str]:
    return [json.loads(r["data"])["session_id"]
            for r in ps.query("SELECT data FROM events WHERE type = 'exit.passed' ORDER BY seq")]


def _sensed(ps: ProcStation, action: str) -> int:
    """Placements the station has processed (a condition to wait on that old code has too)."""
    return sum(json.loads(r["data"])["action"] == action
               for r in ps.query("SELECT data FROM events WHERE type = 'slot.sensed'"))


def _enter(ps: ProcStation, code: str) -> str:
    res = ps.api("post", "/api/kiosk/code", "kiosk", "kiosk-1", json={"code": code})
    assert res.status_code == 200, res.text
    return str(res.json()["session_id"])


def _setup(ps: ProcStation) -> dict[str, dict[str, Any]]:
    got = shelve(ps, [(WAYBILL[k], PHONES[k]) for k in PHONES])
    by_who = {k: got[WAYBILL[k]] for k in PHONES}
    others = {by_who[k]["slot"] for k in ("A", "C", "D")}
    assert by_who["B"]["slot"] not in others, f"B's parcel shares a slot: {by_who}"
    return by_who


def _leaves(ids: list[str | None], copies: int) -> list[tuple[str, dict[str, Any]]]:
    return [("/api/exit/leave", {"session_id": sid}) for sid in ids for _ in range(copies)]


def test_leave_without_parcels_never_opens_while_a_foreign_take_is_open(tmp_path: Path) -> None:
    with ProcStation(tmp_path) as ps:
        ps.start()
        who = _setup(ps)
        exit_door = UnlockCounter(ps)
        # D came in and left empty-handed: its id is spent
        d = _enter(ps, who["D"]["code"])
        assert ps.api("post", "/api/exit/leave", "kiosk", json={"session_id": d}).json()["allowed"]
        assert exit_door.n == 1 and _passed(ps) == [d]
        a = _enter(ps, who["A"]["code"])
        c = _enter(ps, who["C"]["code"])
        # A lifts B's parcel from a slot lit for nobody: only an alarm so far
        ps.take(who["B"]["slot"])
        until(lambda: _sensed(ps, "take") == 1, 10, "take sensed")

        forged = ["pks_" + "0" * 12, "", "x" * 64, "' OR 1=1 --"]
        answers = _burst(ps, _leaves([None, a, c, d, *forged], 25))
        assert [x for x in answers if x["allowed"]] == []
        assert exit_door.n == 1 and _passed(ps) == [d], "the exit opened during the burst"
        problems = {x["sent"]["session_id"]: {p["problem"] for p in x["problems"]} for x in answers}
        assert problems[a] == problems[c] == {"unexplained_take"}
        assert problems[None] == problems[d] == {"unknown_session"}
        # the operator is alarmed once per cause, not once per request
        alarms = ps.query("SELECT kind, subject FROM alarms WHERE kind LIKE 'exit.%' ORDER BY kind, subject")
        assert sorted((r["kind"], r["subject"]) for r in alarms) == sorted([
            ("exit.leave_refused", ps.config.doors.exit),
            ("exit.unexplained_take", a), ("exit.unexplained_take", c)])
        assert ps.verify_log().returncode == 0

        # the parcel goes back: the take is explained, and each session leaves exactly once
        ps.put(who["B"]["slot"])
        until(lambda: ps.query("SELECT 1 FROM events WHERE type = 'slot.put_back'"), 10, "put back")
        answers = _burst(ps, _leaves([a, c, None, "pks_forged"], 30))
        allowed = sorted(x["sent"]["session_id"] for x in answers if x["allowed"])
        assert allowed == sorted([a, c])
        assert exit_door.n == 3 and sorted(_passed(ps)) == sorted([d, a, c])


def test_an_operator_settles_a_take_and_only_then_the_exit_opens(tmp_path: Path) -> None:
    with ProcStation(tmp_path) as ps:
        ps.start()
        who = _setup(ps)
        exit_door = UnlockCounter(ps)
        a = _enter(ps, who["A"]["code"])
        ps.take(who["B"]["slot"])
        take = until(lambda: ps.api("get", "/api/operator/takes", "operator").json(), 10, "take listed")
        assert len(take) == 1 and take[0]["slot"] == who["B"]["slot"] and take[0]["session_id"] is None
        assert not ps.api("post", "/api/exit/leave", "kiosk", json={"session_id": a}).json()["allowed"]
        res = ps.api("post", f"/api/operator/takes/{take[0]['seq']}/resolve", "operator",
                     json={"note": "courier took it out for the return run"})
        assert res.status_code == 200 and res.json()["resolved"], res.text
        assert ps.api("get", "/api/operator/takes", "operator").json() == []
        answers = _burst(ps, _leaves([a], 40))
        assert sum(x["allowed"] for x in answers) == 1
        assert exit_door.n == 1 and _passed(ps) == [a]
        assert ps.api("post", "/api/operator/takes/999999/resolve", "operator").status_code == 404


def test_own_waybills_do_not_open_the_exit_while_a_take_nobody_explains_is_open(tmp_path: Path) -> None:
    """The waybill check has the same hole: A shows their own parcel, but B's parcel left
    its slot (lit for nobody) after A came in and is not shown. Concurrent checks and leaves
    open nothing; once B's parcel is back, A passes exactly once."""
    with ProcStation(tmp_path) as ps:
        ps.start()
        who = _setup(ps)
        exit_door = UnlockCounter(ps)
        a = _enter(ps, who["A"]["code"])
        ps.take(who["A"]["slot"])               # their own
        ps.take(who["B"]["slot"])               # and somebody else's, not shown
        until(lambda: _sensed(ps, "take") == 2, 10, "takes sensed")
        calls = [("/api/exit/waybills", {"waybills": [WAYBILL["A"]]})] * 40 + _leaves([a, None], 20)
        answers = _burst(ps, calls)
        assert [x for x in answers if x["allowed"]] == []
        assert exit_door.n == 0 and _passed(ps) == []
        checks = [x for x in answers if "waybills" in x["sent"]]
        assert all({"slot": who["B"]["slot"], "problem": "unexplained_take"} in x["problems"] for x in checks)
        ps.put(who["B"]["slot"])
        until(lambda: ps.query("SELECT 1 FROM events WHERE type = 'slot.put_back'"), 10, "put back")
        answers = _burst(ps, calls)
        assert sum(x["allowed"] for x in answers) == 1
        assert exit_door.n == 1 and _passed(ps) == [a]
        assert ps.query("SELECT state FROM parcels WHERE waybill = ?", (WAYBILL["A"],))[0]["state"] == "picked_up"


def test_a_take_from_another_customers_lit_slot_holds_an_empty_handed_leave(tmp_path: Path) -> None:
    """C's lit slot is emptied after A came in: the sensor cannot say whose hand it was, so
    A cannot leave with nothing until C has shown that parcel at the exit (or put it back)."""
    with ProcStation(tmp_path) as ps:
        ps.start()
        who = _setup(ps)
        exit_door = UnlockCounter(ps)
        c = _enter(ps, who["C"]["code"])
        a = _enter(ps, who["A"]["code"])
        ps.take(who["C"]["slot"])
        until(lambda: _sensed(ps, "take") == 1, 10, "take sensed")
        answers = _burst(ps, _leaves([a, c], 20))
        assert [x for x in answers if x["allowed"]] == [] and exit_door.n == 0
        assert {p["problem"] for x in answers if x["sent"]["session_id"] == c for p in x["problems"]} \
            == {"parcel_not_shown"}
        # C puts it back (changed their mind): their slot lights again, both may leave
        ps.put(who["C"]["slot"])
        until(lambda: _sensed(ps, "put") == len(PHONES) + 1, 10, "put sensed")
        assert ps.query("SELECT remaining FROM session_slots WHERE session_id = ?", (c,))[0]["remaining"] == 1
        answers = _burst(ps, _leaves([a, c], 20))
        assert sorted(x["sent"]["session_id"] for x in answers if x["allowed"]) == sorted([a, c])
        assert exit_door.n == 2

