"""Guessing at the kiosk and the courier screen hits the lockout (HTTP 429), and the lockout
holds even against the right secret, so a guesser learns nothing from a lucky hit while
locked. The daily cap bounds the guesses per station per day (docs/pickup-codes.md derives
the odds from it); these tests shorten the delays so the cap is reached in a test's time.

Device-side attacks (forged, replayed, expired, cross-device commands) are in
tests/devices/test_door_security.py; role checks on every route in tests/api/test_authorization.py.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.reliability.harness import ProcStation, until

PHONE = "13900000007"
PIN = "90817263"
FAST = {"first_delay_s": 0.05, "max_delay_s": 0.1, "daily_failure_cap": 20}


def _shelve_one(ps: ProcStation) -> str:
    res = ps.api("post", "/api/operator/couriers", "operator",
                 json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": PIN})
    assert res.status_code == 201, res.text
    sid = ps.api("post", "/api/courier/sessions", "courier", "c1", json={}).json()["session_id"]
    res = ps.api("post", f"/api/courier/sessions/{sid}/scans", "courier", "c1",
                 json={"waybill": "SF0000000000001", "phone": PHONE, "size": "S"})
    assert res.status_code == 200, res.text
    ps.put(res.json()["slot"])
    return until(lambda: next((m["code"] for m in ps.messages("pickup_code")), None), 10, "code sent")


def _guess(rng: random.Random, code: str) -> str:
    slot, secret = code.rsplit("-", 1)
    while True:  # the right slot, a wrong random part: the strongest guess there is
        guess = f"{slot}-{rng.randrange(10 ** len(secret)):0{len(secret)}d}"
        if guess != code:
            return guess


def _locked(res) -> bool:  # type: ignore[no-untyped-def]
    if res.status_code != 429:
        return False
    assert res.json()["error"] == "locked_out", res.text
    assert int(res.headers["Retry-After"]) >= 1
    return True


def test_guessing_pickup_codes_is_locked_out_and_the_right_code_waits_too(tmp_path: Path) -> None:
    rng = random.Random(1)
    with ProcStation(tmp_path) as ps:
        ps.start()
        code = _shelve_one(ps)
        # `free_failures` failures cost nothing; the next one starts the wait (domain/lockout.py)
        free = ps.config.lockout.free_failures + 1
        for _ in range(free):
            res = ps.api("post", "/api/kiosk/code", "kiosk", "kiosk-1", json={"code": _guess(rng, code)})
            assert res.status_code == 401 and res.json()["error"] == "wrong_code", res.text
        res = ps.api("post", "/api/kiosk/code", "kiosk", "kiosk-1", json={"code": _guess(rng, code)})
        assert _locked(res), res.text
        res = ps.api("post", "/api/kiosk/code", "kiosk", "kiosk-1", json={"code": code})
        assert _locked(res), "a locked kiosk still tested a code"
        assert ps.controller("door-entry").hal.locked
        alarms = {a["kind"] for a in ps.query("SELECT kind FROM alarms")}
        assert "auth.lockout" in alarms
        # a typo (not a code at all) is refused without counting as a guess
        res = ps.api("post", "/api/kiosk/code", "kiosk", "kiosk-2", json={"code": "hello"})
        assert res.status_code == 422, res.text
        assert ps.verify_log().returncode == 0


def test_the_daily_cap_bounds_guesses_per_station_across_kiosks(tmp_path: Path) -> None:
    rng = random.Random(2)
    with ProcStation(tmp_path, lockout=FAST) as ps:
        ps.start()
        code = _shelve_one(ps)
        wrong = 0
        for attempt in range(200):
            kiosk = f"kiosk-{attempt % 3}"  # several kiosks (scopes) share the station's cap
            res = ps.api("post", "/api/kiosk/code", "kiosk", kiosk, json={"code": _guess(rng, code)})
            if res.status_code == 401:
                wrong += 1
                continue
            assert _locked(res), res.text
            if float(res.json()["retry_after_s"]) > 3600:
                break  # the day is over for guessers
            time.sleep(float(res.json()["retry_after_s"]))
        else:
            pytest.fail("never reached the daily cap")
        assert wrong == FAST["daily_failure_cap"]
        for kiosk in ("kiosk-0", "kiosk-new"):
            res = ps.api("post", "/api/kiosk/code", "kiosk", kiosk, json={"code": code})
            assert _locked(res), "the right code got through after the daily cap"
        # one-time codes count against the same cap: no second budget of guesses
        res = ps.api("post", "/api/kiosk/otp/verify", "kiosk", "kiosk-9", json={"phone": PHONE, "otp": "123456"})
        assert _locked(res), res.text


def test_one_time_codes_die_after_their_tries_and_guessing_hits_the_lockout(tmp_path: Path) -> None:
    with ProcStation(tmp_path, lockout=FAST) as ps:
        ps.start()
        _shelve_one(ps)
        res = ps.api("post", "/api/kiosk/otp/request", "kiosk", "kiosk-1", json={"phone": PHONE})
        assert res.status_code == 200, res.text
        otp = until(lambda: next((m["code"] for m in ps.messages("otp")), None), 10, "otp sent")
        tries = ps.config.lockout.otp_tries
        wrong = [f"{(int(otp) + n) % 10**6:06d}" for n in range(1, 50)]
        failures = 0
        for guess in wrong:
            res = ps.api("post", "/api/kiosk/otp/verify", "kiosk", "kiosk-1", json={"phone": PHONE, "otp": guess})
            if res.status_code == 429:
                assert _locked(res)
                time.sleep(float(res.json()["retry_after_s"]))
                continue
            assert res.status_code == 401 and res.json()["error"] == "wrong_otp", res.text
            failures += 1
            if failures == tries:
                break
        # the one-time code is spent: even the right digits no longer open anything
        until(lambda: ps.api("post", "/api/kiosk/otp/verify", "kiosk", "kiosk-1",
                             json={"phone": PHONE, "otp": otp}).status_code != 429, 5)
        res = ps.api("post", "/api/kiosk/otp/verify", "kiosk", "kiosk-2", json={"phone": PHONE, "otp": otp})
        assert res.status_code in (401, 429), res.text
        assert ps.controller("door-entry").hal.locked
        states = {r["state"] for r in ps.query("SELECT state FROM otps")}
        assert states == {"spent"}, states

        # default policy: after the free failures and one more, a kiosk waits
    with ProcStation(tmp_path / "default") as ps:
        ps.start()
        _shelve_one(ps)
        ps.api("post", "/api/kiosk/otp/request", "kiosk", "kiosk-1", json={"phone": PHONE})
        for n in range(ps.config.lockout.free_failures + 1):
            res = ps.api("post", "/api/kiosk/otp/verify", "kiosk", "kiosk-1", json={"phone": PHONE, "otp": f"99999{n}"})
            assert res.status_code == 401, res.text
        res = ps.api("post", "/api/kiosk/otp/verify", "kiosk", "kiosk-1", json={"phone": PHONE, "otp": "999990"})
        assert _locked(res), res.text


def test_courier_pin_guessing_is_locked_out_per_courier_and_station_wide(tmp_path: Path) -> None:
    with ProcStation(tmp_path) as ps:
        ps.start()
        res = ps.api("post", "/api/operator/couriers", "operator",
                     json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": PIN})
        assert res.status_code == 201
        for n in range(ps.config.lockout.free_failures + 1):
            res = ps.api("post", "/api/courier/login", json={"courier_id": "c1", "pin": f"{n:04d}"})
            assert res.status_code == 401 and res.json()["error"] == "wrong_pin", res.text
        res = ps.api("post", "/api/courier/login", json={"courier_id": "c1", "pin": "0000"})
        assert _locked(res), res.text
        # the right PIN, on the screen or at the door, waits out the lockout like any guess
        res = ps.api("post", "/api/courier/login", json={"courier_id": "c1", "pin": PIN})
        assert _locked(res), res.text
        res = ps.api("post", "/api/kiosk/courier/pin", "kiosk", "kiosk-1", json={"courier_id": "c1", "pin": PIN})
        assert _locked(res), res.text
        assert ps.controller("door-entry").hal.locked
        assert "token" not in res.json()

    # a PIN sprayed across courier ids escapes the per-id lockout but not the daily cap
    with ProcStation(tmp_path / "spray", lockout=FAST) as ps:
        ps.start()
        ps.api("post", "/api/operator/couriers", "operator",
               json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": PIN})
        wrong = 0
        for n in range(100):
            res = ps.api("post", "/api/courier/login", json={"courier_id": f"x{n}", "pin": "1234"})
            if res.status_code == 401:
                wrong += 1
                continue
            assert _locked(res), res.text
            break
        assert wrong == FAST["daily_failure_cap"]
        # the price of that cap (an open risk in docs/threat-model.md): the real courier waits too
        res = ps.api("post", "/api/courier/login", json={"courier_id": "c1", "pin": PIN})
        assert _locked(res), res.text
