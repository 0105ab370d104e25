"""Crash consistency: `station run` killed with SIGKILL at random moments of a shelving and
pickup workload, restarted each time, and checked after every restart.

The workload goes through the HTTP API (courier scans, kiosk codes, exit check) and the
shelves' HAL (a courier's hand on a slot sensor). A timer thread kills the station at a random
moment; whatever request was in flight has an unknown outcome, and the driver reconciles it
the way people would (a courier whose screen never confirmed a placement lifts the parcel and
puts it back, which the test counts as a lost placement and fails on; a customer whose exit
did not open enters again and shows the parcels again).

A quarter of the restarts are themselves killed at a random moment of the start-up.
After each restart:
  * `station log verify` passes;
  * no parcel lost or duplicated: every placement the courier's screen confirmed is in the
    database exactly once, every exit that passed stays picked up, no waybill twice;
  * every pickup code sent is still the code of its parcel while that parcel waits
    (keyed digest), and one of them opens the entry door again over HTTP;
  * the outbox still delivers: every outbox row reaches the webhook (by id);
  * the shelves' LEDs (firmware state) match the database's desired lights.
At the end, after a last SIGKILL, `station log replay` rebuilds exactly the projections on
disk (parcels, sessions, session slots, pending placements, couriers, alarms).

KILLS (default 50 as the issue asks; env PS_CRASH_KILLS) took 113 s on two cores when written:
each cycle is a ~1.4 s process start plus the checks. Lower it for a quick run;
PS_CRASH_SEED replays a failing sequence.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from station.domain.codes import PickupCode, code_digest
from tests.reliability.harness import PY, ROOT, ProcStation, until

KILLS = int(os.environ.get("PS_CRASH_KILLS", "50"))
PHONES = [f"1381234{n:04d}" for n in range(1, 9)]


class StationDied(Exception):
    pass


class Driver:
    """Shelving and pickup through the API and the HAL, with what was acknowledged."""

    def __init__(self, ps: ProcStation, rng: random.Random) -> None:
        self.ps = ps
        self.rng = rng
        self.counter = 0
        self.session: str | None = None
        # waybill -> {"phone", "slot", "put": bool}; scans answered 200 (or found after a crash)
        self.scanned: dict[str, dict[str, Any]] = {}
        self.shelved: set[str] = set()       # the courier's screen showed "placed"
        self.picked: set[str] = set()        # the exit check passed with them
        self.taken: set[str] = set()         # physically lifted by their customer
        self.inflight_pickup: list[str] | None = None
        self.entries_ok = 0
        self.interrupted = 0   # kills that cut a request or a wait short
        self.redone = 0        # placements or pickups finished after a restart
        self.startup_kills = 0
        self.reseated: list[str] = []  # placements the station never heard of (a bug)

    # --- plumbing ----------------------------------------------------------------------------

    def call(self, method: str, path: str, role: str, subject: str | None = None,
             **kw: Any) -> httpx.Response:
        try:
            return self.ps.api(method, path, role, subject, **kw)
        except httpx.TransportError:
            # dead (the kill): StationDied; alive, yet the request failed: TimeoutExpired
            self.ps.proc.wait(3)  # type: ignore[union-attr]
            raise StationDied from None

    def session_items(self) -> dict[str, dict[str, Any]]:
        res = self.call("get", f"/api/courier/sessions/{self.session}", "courier", "c1")
        assert res.status_code == 200, res.text
        return {i["waybill"]: i for i in res.json()["items"]}

    # --- workload steps ------------------------------------------------------------------------

    def ensure_session(self) -> None:
        if self.session is not None:
            res = self.call("get", f"/api/courier/sessions/{self.session}", "courier", "c1")
            if res.status_code == 200 and res.json()["state"] == "open":
                return
        res = self.call("post", "/api/courier/sessions", "courier", "c1", json={})
        assert res.status_code == 200, res.text
        self.session = res.json()["session_id"]

    def shelve_one(self) -> None:
        self.ensure_session()
        self.counter += 1
        waybill = f"SF{self.counter:013d}"
        phone = self.rng.choice(PHONES)
        res = self.call("post", f"/api/courier/sessions/{self.session}/scans", "courier", "c1",
                        json={"waybill": waybill, "phone": phone,
                              "size": self.rng.choice("SSM")})
        if res.status_code == 422 and res.json().get("error") == "station_full":
            self.pick_up()
            return
        assert res.status_code == 200, res.text
        slot = res.json()["slot"]
        self.scanned[waybill] = {"phone": phone, "slot": slot, "put": False, "session": self.session}
        self.ps.put(slot)
        self.scanned[waybill]["put"] = True
        self.wait_placed(waybill)

    def wait_placed(self, waybill: str, timeout: float = 10) -> None:
        def placed() -> bool:
            item = self.session_items().get(waybill)
            return bool(item and item["state"] == "placed")

        until(placed, timeout, f"placement of {waybill} confirmed")
        self.shelved.add(waybill)

    def code_of(self, waybill: str) -> str | None:
        digest = {r["waybill"]: r["code_digest"] for r in self.ps.query(
            "SELECT waybill, code_digest FROM parcels WHERE waybill = ?", (waybill,))}.get(waybill)
        for m in self.ps.messages("pickup_code"):
            if code_digest(PickupCode.parse(m["code"]), self.ps.secrets.hash_key) == digest:
                return m["code"]
        return None

    def waiting(self) -> list[str]:
        return sorted(self.shelved - self.picked - self.taken)

    def pick_up(self, waybill: str | None = None) -> None:
        """A customer enters with one code, takes all their parcels, shows them at the exit."""
        waiting = self.waiting()
        if waybill is None:
            if not waiting:
                return
            waybill = self.rng.choice(waiting)
        phone = self.scanned[waybill]["phone"]
        mine = sorted(w for w in self.shelved - self.picked if self.scanned[w]["phone"] == phone)
        code = until(lambda: self.code_of(waybill), 10, f"code of {waybill} delivered")
        self.inflight_pickup = mine
        res = self.call("post", "/api/kiosk/code", "kiosk", "kiosk-1", json={"code": code})
        assert res.status_code == 200, f"code {code} refused: {res.text}"
        body = res.json()
        assert body["door"] == "unlocked", body
        assert set(body["slots"]) >= {self.scanned[w]["slot"] for w in mine}, body
        self.entries_ok += 1
        for w in mine:
            if w not in self.taken:
                self.ps.take(self.scanned[w]["slot"])
                self.taken.add(w)
        self.exit_with(mine)

    def exit_with(self, waybills: list[str]) -> None:
        res = self.call("post", "/api/exit/waybills", "kiosk", "exit-1", json={"waybills": waybills})
        assert res.status_code == 200 and res.json()["allowed"], res.text
        self.picked.update(waybills)
        self.inflight_pickup = None

    def step(self) -> None:
        if self.waiting() and self.rng.random() < 0.35:
            self.pick_up()
        else:
            self.shelve_one()

    # --- after a restart ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Finish what the crash interrupted, as the people in the room would."""
        rows = {r["waybill"]: r for r in self.ps.query("SELECT waybill, state FROM parcels")}
        pend = {r["waybill"]: r for r in self.ps.query(
            "SELECT waybill, state, target_slot FROM pending_placements")}
        for w, info in list(self.scanned.items()):
            if w in self.shelved:
                continue
            if w in rows:  # bound before the kill; the screen just never showed it
                self.shelved.add(w)
                continue
            p = pend.get(w)
            if p is not None and p["state"] == "waiting" and info["put"]:
                # the placement the shelf reported before or during the kill must still arrive
                # (persistent MQTT session); a courier would re-seat the parcel otherwise
                try:
                    self.wait_placed(w, timeout=5)
                except AssertionError:
                    self.reseated.append(w)
                    self.ps.take(info["slot"])
                    self.ps.put(info["slot"])
                    self.wait_placed(w)
                self.redone += 1
            elif p is not None and p["state"] == "waiting":  # killed before the hand moved
                self.ps.put(info["slot"])
                info["put"] = True
                self.wait_placed(w)
                self.redone += 1
            elif info["put"]:  # never bound and no longer expected: the courier takes it away
                self.ps.take(info["slot"])
                del self.scanned[w]
        if self.inflight_pickup:
            states = {w: rows[w]["state"] for w in self.inflight_pickup if w in rows}
            if all(s == "picked_up" for s in states.values()):
                self.picked.update(self.inflight_pickup)
                self.inflight_pickup = None
            else:
                self.pick_up(self.inflight_pickup[0])
                self.redone += 1


def check_invariants(ps: ProcStation, d: Driver, where: str) -> None:
    verify = ps.verify_log()
    assert verify.returncode == 0, f"{where}: log verify failed: {verify.stdout}{verify.stderr}"

    rows = ps.query("SELECT waybill, state, code_digest FROM parcels")
    by_waybill: dict[str, list[Any]] = {}
    for r in rows:
        by_waybill.setdefault(r["waybill"], []).append(r)
    dupes = {w: len(v) for w, v in by_waybill.items() if len(v) > 1}
    assert not dupes, f"{where}: duplicated parcels {dupes}"
    lost = sorted(d.shelved - set(by_waybill))
    assert not lost, f"{where}: confirmed placements lost: {lost}"
    for w in d.picked:
        assert by_waybill[w][0]["state"] == "picked_up", f"{where}: {w} picked up, now {by_waybill[w][0]['state']}"
    for w in d.waiting():
        assert by_waybill[w][0]["state"] == "shelved", f"{where}: {w} waiting, now {by_waybill[w][0]['state']}"

    # the outbox delivers every row (at least once, by id)
    def delivered() -> bool:
        ids = {r["id"] for r in ps.query("SELECT id FROM outbox")}
        return ids <= {m["id"] for m in ps.messages()}

    until(delivered, 20, f"{where}: every outbox row delivered")

    # every code sent for a waiting parcel still is that parcel's code
    key = ps.secrets.hash_key
    sent = {code_digest(PickupCode.parse(m["code"]), key) for m in ps.messages("pickup_code")}
    waiting_digests = {r["code_digest"] for r in rows if r["state"] == "shelved"}
    missing = waiting_digests - sent
    assert not missing, f"{where}: {len(missing)} waiting parcels whose code never reached the customer"

    ps.lights_match(15)


PROJECTIONS = ("parcels", "sessions", "session_slots", "pending_placements", "couriers", "alarms")


def replay_matches_projections(ps: ProcStation, out: Path) -> None:
    res = subprocess.run([PY, "-m", "station.cli", "log", "replay", "--db", str(ps.db_path),
                          "--out", str(out)], check=False, capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    live, again = sqlite3.connect(ps.db_path), sqlite3.connect(out)
    try:
        for table in PROJECTIONS:
            a = sorted(map(repr, live.execute(f"SELECT * FROM {table}").fetchall()))
            b = sorted(map(repr, again.execute(f"SELECT * FROM {table}").fetchall()))
            assert a == b, f"{table}: the log does not rebuild it ({len(a)} rows live, {len(b)} replayed)"
    finally:
        live.close()
        again.close()


@pytest.mark.timeout(900)
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("PS_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    with ProcStation(tmp_path, placement_timeout_s=600, pickup_session_timeout_s=900) as ps:
        ps.start()
        res = ps.api("post", "/api/operator/couriers", "operator",
                     json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": "2468"})
        assert res.status_code == 201, res.text
        d = Driver(ps, rng)
        for _ in range(3):  # something on the shelves before the first kill
            d.shelve_one()
        kills = 0
        while kills < KILLS:
            killed = threading.Event()

            def assassin(killed: threading.Event = killed) -> None:
                ps.kill()
                killed.set()

            timer = threading.Timer(rng.uniform(0.02, 1.5), assassin)
            timer.start()
            try:
                for _ in range(200):
                    d.step()
                    if killed.is_set():
                        break
                else:
                    pytest.fail(f"seed {seed}: the station outlived 200 steps")
            except StationDied:
                d.interrupted += 1
            except AssertionError:
                if not killed.wait(5):
                    raise
                d.interrupted += 1
                # a wait that the kill cut short: the outcome is unknown, reconciled below
            timer.join()
            assert killed.is_set()
            kills += 1
            if kills < KILLS and rng.random() < 0.25:
                # killed again while starting: opening the store, migrating, logging
                # station.started, re-sending the lights
                ps.spawn()
                time.sleep(rng.uniform(0.2, 1.6))
                ps.kill()
                kills += 1
                d.startup_kills += 1
            ps.start()
            where = f"seed {seed}, after kill {kills}"
            d.reconcile()
            check_invariants(ps, d, where)
        # in the end every waiting parcel's code opens the door, over HTTP
        for w in d.waiting():
            if w in d.waiting():
                d.pick_up(w)
        check_invariants(ps, d, f"seed {seed}, final")
        stats = (f"seed {seed}: {KILLS} kills, {d.interrupted} mid-request, {d.startup_kills} while "
                 f"starting, {d.redone} redone, "
                 f"{len(d.shelved)} shelved, {len(d.picked)} picked up, {d.entries_ok} entries")
        print(stats)
        assert d.entries_ok >= 1 and len(d.picked) >= 3, stats
        assert d.interrupted >= KILLS // 3, stats  # the kills really landed mid-work
        assert not d.reseated, f"{stats}: placements lost across a kill: {d.reseated}"
        assert ps.starts == KILLS + 1  # each kill was followed by one start
        # one last SIGKILL, then DESIGN §3: replaying the log rebuilds exactly the projections
        ps.kill()
        replay_matches_projections(ps, tmp_path / "replayed.db")
        log = ps.log_tail(200_000)
        assert "Traceback" not in log, log[-3000:]


# Found by this suite as a bug (the link's clean MQTT session dropped placements published
# while the station was down); fixed in d51f5f4 with a persistent session for the link.
def test_a_parcel_put_while_the_station_is_down_is_shelved_after_restart(tmp_path: Path) -> None:
    with ProcStation(tmp_path, placement_timeout_s=600) as ps:
        ps.start()
        ps.api("post", "/api/operator/couriers", "operator",
               json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": "2468"})
        sid = ps.api("post", "/api/courier/sessions", "courier", "c1", json={}).json()["session_id"]
        res = ps.api("post", f"/api/courier/sessions/{sid}/scans", "courier", "c1",
                     json={"waybill": "SF0000000000001", "phone": PHONES[0], "size": "S"})
        slot = res.json()["slot"]
        ps.kill()
        ps.put(slot)  # the courier does not wait for the screen: the slot was lit
        ps.start()
        until(lambda: ps.query("SELECT 1 FROM parcels WHERE waybill = 'SF0000000000001'"), 10,
              "the parcel on the shelf is bound")
