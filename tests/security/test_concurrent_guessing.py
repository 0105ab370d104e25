"""Guessing limits hold however many requests arrive at once (issue #14.1, DESIGN §9).

Each test fires a burst of concurrent HTTP requests (asyncio + httpx, hundreds in flight) at
a real `station run` and counts what the station actually did from its database and the
webhook receiver: guesses tested (each one is an `auth.*.attempt` settled by a rejection or
an acceptance), one-time codes issued and sent, a one-time code consumed. Each bound is
asserted exactly. Before the fix the lockout read its counters, tested the secret and
recorded the failure in separate steps: a burst from one kiosk got 43 codes tested against
a daily cap of 20, 30 requests sent 30 SMS to one phone, and 40 wrong one-time codes left
the code alive.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx

from tests.reliability.harness import ProcStation, shelve, until
from tests.support.bursts import run_burst

PHONE = "13900000007"
PIN = "90817263"
# delays short enough that a burst lasting a second reaches the daily cap, not the scope delay
FAST = {"first_delay_s": 0.01, "max_delay_s": 0.02, "daily_failure_cap": 20}
# no cap in reach: what limits a one-time code is its own tries
WIDE = {"free_failures": 10, "daily_failure_cap": 1000}


def _burst(ps: ProcStation, calls: list[tuple[str, str | None, str | None, dict[str, Any]]]) -> list[httpx.Response]:
    """All `calls` (path, role, subject, json) at once, each on its own connection."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=ps.base_url, timeout=60.0, limits=limits) as client:
            start = asyncio.Event()

            async def one(path: str, role: str | None, subject: str | None, body: dict[str, Any]) -> httpx.Response:
                headers = {"Authorization": "Bearer " + ps.token(role, subject)} if role else {}
                await start.wait()
                return await client.post(path, json=body, headers=headers)

            tasks = [asyncio.create_task(one(*c)) for c in calls]
            await asyncio.sleep(0.05)
            start.set()
            return await asyncio.gather(*tasks)

    return run_burst(run)


def _count(ps: ProcStation, event_type: str) -> int:
    return int(ps.query("SELECT COUNT(*) n FROM events WHERE type = ?", (event_type,))[0]["n"])


def _statuses(responses: list[httpx.Response]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


def _wrong_codes(code: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    slot, secret = code.rsplit("-", 1)
    out: list[str] = []
    while len(out) < n:  # the right slot, a wrong random part: the strongest guess there is
        guess = f"{slot}-{rng.randrange(10 ** len(secret)):0{len(secret)}d}"
        if guess != code:
            out.append(guess)
    return out


def _shelve_one(ps: ProcStation) -> str:
    return shelve(ps, [("SF0000000000001", PHONE)], pin=PIN)["SF0000000000001"]["code"]


def test_a_burst_of_wrong_codes_from_one_kiosk_tests_only_the_free_failures_and_one_more(tmp_path: Path) -> None:
    with ProcStation(tmp_path) as ps:
        ps.start()
        code = _shelve_one(ps)
        res = _burst(ps, [("/api/kiosk/code", "kiosk", "kiosk-1", {"code": c})
                          for c in _wrong_codes(code, 300, 1)])
        allowed = ps.config.lockout.free_failures + 1  # then the kiosk waits first_delay_s
        assert _statuses(res) == {401: allowed, 429: 300 - allowed}
        assert _count(ps, "auth.code.attempt") == allowed
        assert _count(ps, "auth.code.rejected") == allowed
        assert ps.controller("door-entry").hal.locked
        assert ps.verify_log().returncode == 0
        # the guesses were recorded before they were tested: a kill -9 and a restart forget
        # none, and the wait left is measured on the monotonic clock (ADR 0070)
        ps.kill()
        ps.start()
        res = ps.api("post", "/api/kiosk/code", "kiosk", "kiosk-1", json={"code": code})
        assert res.status_code == 429, res.text
        assert 0 < float(res.json()["retry_after_s"]) <= ps.config.lockout.first_delay_s
        assert _count(ps, "auth.code.attempt") == allowed


def test_bursts_of_wrong_codes_never_get_more_tested_than_the_daily_cap(tmp_path: Path) -> None:
    with ProcStation(tmp_path, lockout=FAST) as ps:
        ps.start()
        code = _shelve_one(ps)
        guesses = iter(_wrong_codes(code, 3000, 2))
        capped = False
        for _ in range(10):  # bursts until the station says the day is over for guessers
            res = _burst(ps, [("/api/kiosk/code", "kiosk", "kiosk-1", {"code": next(guesses)})
                              for _ in range(300)])
            assert set(_statuses(res)) <= {401, 429}
            if any(r.status_code == 429 and float(r.json()["retry_after_s"]) > 3600 for r in res):
                capped = True
                break
        assert capped, "the daily cap was never reached"
        cap = FAST["daily_failure_cap"]
        assert _count(ps, "auth.code.rejected") == cap
        assert _count(ps, "auth.code.attempt") == cap
        # the right code waits out the day like any guess
        res = ps.api("post", "/api/kiosk/code", "kiosk", "kiosk-2", json={"code": code})
        assert res.status_code == 429, res.text
        assert _count(ps, "auth.code.attempt") == cap
        assert ps.controller("door-entry").hal.locked


def test_a_burst_of_one_time_code_requests_sends_no_more_than_the_daily_limit(tmp_path: Path) -> None:
    with ProcStation(tmp_path) as ps:
        ps.start()
        _shelve_one(ps)
        res = _burst(ps, [("/api/kiosk/otp/request", "kiosk", f"kiosk-{n % 3}", {"phone": PHONE})
                          for n in range(60)])
        assert _statuses(res) == {200: 60}  # the same answer whatever happened
        limit = ps.config.lockout.otp_per_phone_per_day
        assert len(ps.query("SELECT id FROM otps")) == limit
        assert _count(ps, "auth.otp.issued") == limit
        assert _count(ps, "auth.otp.not_sent") == 60 - limit
        until(lambda: not ps.query("SELECT id FROM outbox WHERE state = 'pending'"), 20, "outbox drained")
        assert len(ps.messages("otp")) == limit


def test_a_burst_of_wrong_one_time_codes_spends_the_code_after_its_tries(tmp_path: Path) -> None:
    with ProcStation(tmp_path, lockout=WIDE) as ps:
        ps.start()
        _shelve_one(ps)
        assert ps.api("post", "/api/kiosk/otp/request", "kiosk", "kiosk-0", json={"phone": PHONE}).status_code == 200
        otp = until(lambda: next((m["code"] for m in ps.messages("otp")), None), 10, "otp sent")
        wrong = [f"{(int(otp) + n) % 10**6:06d}" for n in range(1, 41)]
        res = _burst(ps, [("/api/kiosk/otp/verify", "kiosk", f"kiosk-{n}", {"phone": PHONE, "otp": g})
                          for n, g in enumerate(wrong)])
        assert _statuses(res) == {401: 40}
        (row,) = ps.query("SELECT state, tries_left FROM otps")
        assert (row["state"], row["tries_left"]) == ("spent", 0)
        # the right digits no longer open anything
        res = ps.api("post", "/api/kiosk/otp/verify", "kiosk", "kiosk-x", json={"phone": PHONE, "otp": otp})
        assert res.status_code == 401, res.text
        assert _count(ps, "auth.otp.accepted") == 0
        assert ps.controller("door-entry").hal.locked


def test_a_one_time_code_sent_in_a_burst_by_many_kiosks_is_consumed_exactly_once(tmp_path: Path) -> None:
    with ProcStation(tmp_path, lockout=WIDE) as ps:
        ps.start()
        _shelve_one(ps)
        assert ps.api("post", "/api/kiosk/otp/request", "kiosk", "kiosk-0", json={"phone": PHONE}).status_code == 200
        otp = until(lambda: next((m["code"] for m in ps.messages("otp")), None), 10, "otp sent")
        res = _burst(ps, [("/api/kiosk/otp/verify", "kiosk", f"kiosk-{n}", {"phone": PHONE, "otp": otp})
                          for n in range(40)])
        assert _statuses(res) == {200: 1, 401: 39}, [r.text for r in res if r.status_code not in (200, 401)]
        (row,) = ps.query("SELECT state FROM otps")
        assert row["state"] == "used"
        assert _count(ps, "auth.otp.accepted") == 1
        assert _count(ps, "pickup.opened") == 1


def test_a_burst_at_the_courier_login_verifies_no_more_pins_than_allowed(tmp_path: Path) -> None:
    with ProcStation(tmp_path) as ps:
        ps.start()
        res = ps.api("post", "/api/operator/couriers", "operator",
                     json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": PIN})
        assert res.status_code == 201, res.text
        res = _burst(ps, [("/api/courier/login", None, None, {"courier_id": "c1", "pin": f"{n:04d}"})
                          for n in range(300)])
        allowed = ps.config.lockout.free_failures + 1
        assert _statuses(res) == {401: allowed, 429: 300 - allowed}
        assert _count(ps, "auth.pin.attempt") == allowed
        assert _count(ps, "auth.pin.rejected") == allowed


def test_a_burst_of_pins_sprayed_across_courier_ids_verifies_no_more_than_the_daily_cap(tmp_path: Path) -> None:
    with ProcStation(tmp_path, lockout=FAST) as ps:
        ps.start()
        res = _burst(ps, [("/api/courier/login", None, None, {"courier_id": f"x{n}", "pin": "1234"})
                          for n in range(300)])
        cap = FAST["daily_failure_cap"]
        assert _statuses(res) == {401: cap, 429: 300 - cap}
        assert _count(ps, "auth.pin.attempt") == cap
        assert _count(ps, "auth.pin.rejected") == cap
