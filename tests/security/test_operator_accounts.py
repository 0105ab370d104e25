"""Operator accounts, sessions and kiosk pairing over a real `station run` (#20.1, ADR 0130).

Every test talks HTTP to the child process, sets accounts up with the real CLI beside it,
and reads what the station did from its database: logins and refusals are events, a
revoked or idle session is refused while another stays valid, a viewer cannot act as an
admin, a kiosk pairs once and loses access when revoked, a cross-site request is refused,
and bursts of wrong passwords and pairing codes test exactly as many as the lockout allows.
Service tokens are off here as in production (`[api] service_tokens = false`)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from tests.reliability.harness import ProcStation, until
from tests.support.bursts import run_burst

OFF = {"service_tokens": False}
ADMIN_PW = "admin password 1"
VIEWER_PW = "viewer password 1"


def _events(ps: ProcStation, event_type: str) -> list[dict[str, object]]:
    return [{**dict(r), "data": json.loads(r["data"])}
            for r in ps.query("SELECT * FROM events WHERE type = ? ORDER BY seq", (event_type,))]


def _count(ps: ProcStation, event_type: str) -> int:
    return int(ps.query("SELECT COUNT(*) n FROM events WHERE type = ?", (event_type,))[0]["n"])


def test_login_roles_and_logout_over_the_real_process(tmp_path: Path) -> None:
    with ProcStation(tmp_path, api=OFF) as ps:
        ps.start(wait_devices=False)
        ps.add_operator("ada", "admin", ADMIN_PW)
        ps.add_operator("vic", "viewer", VIEWER_PW)
        assert "ada" in ps.cli("operator", "list").stdout

        wrong = httpx.post(ps.base_url + "/api/operator/login", json={"operator_id": "ada", "password": "not it at all"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "wrong_password"
        admin, viewer = ps.login("ada", ADMIN_PW), ps.login("vic", VIEWER_PW)
        cookie = next(c for c in admin.cookies.jar if c.name == "ps_session")
        assert cookie.has_nonstandard_attr("HttpOnly") and cookie.path == "/api" and not cookie.secure
        assert admin.get("/api/operator/me").json() == {
            "operator_id": "ada", "role": "admin", "session": admin.get("/api/operator/me").json()["session"]}

        # the viewer reads: console, log, replay, export
        for path in ("/api/operator/state", "/api/operator/events", "/api/operator/replay?seq=1",
                     "/api/operator/events/export", "/api/operator/verify"):
            assert viewer.get(path).status_code == 200, path
        # ... and is refused every admin action, which leaves no trace but the refusal
        before = ps.query("SELECT MAX(seq) m FROM events")[0]["m"]
        refused = [viewer.post("/api/operator/couriers", json={"courier_id": "c9", "carrier": "SF", "name": "Li",
                                                               "pin": "2468"}),
                   viewer.post("/api/operator/parcels/p1/recall"),
                   viewer.post("/api/operator/alarms/a1/ack"),
                   viewer.post("/api/operator/placements", json={"device": "shelf-1", "row": 1, "col": 1,
                                                                "action": "put"}),
                   viewer.post("/api/operator/kiosks/kiosk-1/pairing"),
                   viewer.post("/api/operator/sessions/revoke-all", json={}),
                   viewer.get("/api/operator/sessions")]
        assert [r.status_code for r in refused] == [403] * len(refused), [r.text for r in refused]
        assert ps.query("SELECT MAX(seq) m FROM events")[0]["m"] == before

        # the admin acts, and the act is in the log under the admin's name
        res = admin.post("/api/operator/couriers", json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": "2468"})
        assert res.status_code == 201, res.text
        assert _events(ps, "courier.added")[-1]["actor"] == "ada"
        assert [e["subject"] for e in _events(ps, "operator.login")] == ["ada", "vic"]
        assert _count(ps, "auth.password.rejected") == 1

        assert admin.post("/api/operator/logout").status_code == 200
        assert admin.get("/api/operator/state").status_code == 401
        assert viewer.get("/api/operator/state").status_code == 200
        assert _events(ps, "operator.logout")[-1]["actor"] == "ada"
        # no session id and no password anywhere in the log or the service's output
        log_text = json.dumps([dict(r) for r in ps.query("SELECT * FROM events")]) + ps.log_tail(10**6)
        assert cookie.value not in log_text and ADMIN_PW not in log_text and VIEWER_PW not in log_text

        # a disabled operator's sessions end with the account (CLI beside the station)
        assert ps.cli("operator", "disable", "vic").returncode == 0
        assert viewer.get("/api/operator/state").status_code == 401
        assert ps.verify_log().returncode == 0


def test_one_session_revoked_while_another_stays_valid_then_all_at_once(tmp_path: Path) -> None:
    with ProcStation(tmp_path, api=OFF) as ps:
        ps.start(wait_devices=False)
        ps.add_operator("ada", "admin", ADMIN_PW)
        laptop, desk, admin = (ps.login("ada", ADMIN_PW) for _ in range(3))
        sessions = {s["handle"] for s in admin.get("/api/operator/sessions").json()}
        assert len(sessions) == 3
        lost = laptop.get("/api/operator/me").json()["session"]
        assert admin.post(f"/api/operator/sessions/{lost}/revoke").json() == {"revoked": 1}
        assert laptop.get("/api/operator/state").status_code == 401
        assert desk.get("/api/operator/state").status_code == 200
        assert admin.get("/api/operator/state").status_code == 200
        assert _events(ps, "operator.session.revoked")[-1]["data"]["sessions"] == [lost]
        assert lost not in ps.cli("operator", "sessions").stdout

        # all at once, from the command line (a lost laptop, a fired operator)
        res = ps.cli("operator", "revoke")
        assert res.returncode == 0 and "2 session(s) ended" in res.stdout, res.stdout
        assert desk.get("/api/operator/state").status_code == 401
        assert admin.get("/api/operator/state").status_code == 401
        assert ps.verify_log().returncode == 0


def test_an_idle_session_expires_while_a_busy_one_stays(tmp_path: Path) -> None:
    idle = 3.0
    with ProcStation(tmp_path, api=OFF, operators={"session_idle_s": idle}) as ps:
        ps.start(wait_devices=False)
        ps.add_operator("ada", "admin", ADMIN_PW)
        left_alone = ps.login("ada", ADMIN_PW)
        left_at = time.monotonic()
        busy = ps.login("ada", ADMIN_PW)
        # both clocks are the machine's steady clock: the wait is a condition on it, a few
        # seconds, not minutes; `busy` acts all along, and so stays
        while time.monotonic() < left_at + idle + 0.5:
            assert busy.get("/api/operator/me").status_code == 200
            time.sleep(0.1)
        # a page's own background poll neither keeps a session alive nor is let through
        res = left_alone.get("/api/operator/state", headers={"X-PS-Background": "1"})
        assert res.status_code == 401 and res.json()["error"] == "session_ended"
        assert busy.get("/api/operator/state").status_code == 200
        expired = _events(ps, "operator.session.expired")
        assert len(expired) == 1 and expired[0]["data"]["reason"] == "idle"
        # ... and a session only polled in the background idles out too
        for _ in range(int((idle + 0.5) / 0.1)):
            busy.get("/api/operator/state", headers={"X-PS-Background": "1"})
            time.sleep(0.1)
        until(lambda: busy.get("/api/operator/state", headers={"X-PS-Background": "1"}).status_code == 401,
              idle + 5, "the polled-only session to idle out")
        assert ps.verify_log().returncode == 0


def test_cross_site_requests_with_the_session_cookie_are_refused(tmp_path: Path) -> None:
    with ProcStation(tmp_path, api=OFF) as ps:
        ps.start(wait_devices=False)
        ps.add_operator("ada", "admin", ADMIN_PW)
        admin = ps.login("ada", ADMIN_PW)
        cookie = admin.cookies.get("ps_session")
        jar = {"ps_session": cookie}
        target = ps.base_url + "/api/operator/sessions/revoke-all"
        attempts = [
            {"Origin": "https://evil.example"},
            {"Origin": "http://127.0.0.1:1"},  # same host, another port: same site, other origin
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": ps.base_url},
            {},  # neither header: not a browser's same-origin fetch
        ]
        for headers in attempts:
            res = httpx.post(target, json={}, headers=headers, cookies=jar)
            assert res.status_code == 403 and res.json()["error"] == "cross_site_refused", (headers, res.text)
        # a login from another site (login CSRF) is refused too
        res = httpx.post(ps.base_url + "/api/operator/login", json={"operator_id": "ada", "password": ADMIN_PW},
                         headers={"Origin": "https://evil.example"})
        assert res.status_code == 403
        assert _count(ps, "operator.session.revoked") == 0
        # reads are not state changes; a bearer session is not sent by a browser by itself
        assert httpx.get(ps.base_url + "/api/operator/state", cookies=jar, headers={"Origin": "https://evil.example"}
                         ).status_code == 200
        assert httpx.post(target, json={}, headers={"Authorization": "Bearer " + cookie}).status_code == 200
        assert _count(ps, "operator.session.revoked") == 1


def test_a_kiosk_pairs_once_and_loses_access_when_revoked(tmp_path: Path) -> None:
    ttl = 4.0
    with ProcStation(tmp_path, api=OFF, operators={"pairing_ttl_s": ttl}) as ps:
        ps.start(wait_devices=False)
        ps.add_operator("ada", "admin", ADMIN_PW)
        admin = ps.login("ada", ADMIN_PW)
        # stateless kiosk and operator tokens are off; a courier's PIN token still works
        assert ps.api("post", "/api/kiosk/code", "kiosk", json={"code": "1-1-01-00000000"}).status_code == 401
        assert ps.api("get", "/api/operator/state", "operator").status_code == 401

        code = admin.post("/api/operator/kiosks/kiosk-1/pairing").json()["code"]
        res = httpx.post(ps.base_url + "/api/kiosk/pair", json={"code": code.lower()})
        assert res.status_code == 200, res.text
        credential = res.json()["credential"]
        kiosk = {"Authorization": "Bearer " + credential}
        again = httpx.post(ps.base_url + "/api/kiosk/pair", json={"code": code})
        assert again.status_code == 401 and again.json()["error"] == "wrong_pairing_code"
        assert httpx.get(ps.base_url + "/api/kiosk/me", headers=kiosk).json() == {"device_id": "kiosk-1"}
        res = httpx.post(ps.base_url + "/api/kiosk/code", json={"code": "1-1-01-00000000"}, headers=kiosk)
        assert res.json()["error"] not in ("invalid_token", "unauthenticated", "forbidden"), res.text
        # a kiosk credential is no operator
        assert httpx.get(ps.base_url + "/api/operator/state", headers=kiosk).status_code == 403
        # the station restarts: the credential stays good (it is a device's, long-lived)
        ps.kill()
        ps.start(wait_devices=False)
        assert httpx.get(ps.base_url + "/api/kiosk/me", headers=kiosk).status_code == 200

        # ... and so does the admin's session (sessions are rows, not memory)
        assert admin.post("/api/operator/kiosks/kiosk-1/revoke").status_code == 200
        res = httpx.get(ps.base_url + "/api/kiosk/me", headers=kiosk)
        assert res.status_code == 401 and res.json()["error"] == "invalid_token"
        assert _events(ps, "kiosk.revoked")[-1]["actor"] == "ada"

        # an unused code expires (on the steady clock)
        stale = ps.cli("kiosk", "pair", "kiosk-2").stdout.split(": ")[1].split()[0]
        created = time.monotonic()
        until(lambda: time.monotonic() > created + ttl + 0.3, ttl + 5, "the pairing code's life")
        res = httpx.post(ps.base_url + "/api/kiosk/pair", json={"code": stale})
        assert res.status_code == 401
        assert _count(ps, "kiosk.paired") == 1
        # nothing secret in the log: no pairing code, no credential
        log_text = json.dumps([dict(r) for r in ps.query("SELECT * FROM events")]) + ps.log_tail(10**6)
        for secret in (code, stale, credential, credential.rsplit(".", 1)[1]):
            assert secret not in log_text
        assert ps.verify_log().returncode == 0


def _burst(base_url: str, path: str, bodies: list[dict[str, str]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base_url, timeout=120.0, limits=limits) as client:
            start = asyncio.Event()

            async def one(body: dict[str, str]) -> httpx.Response:
                await start.wait()
                return await client.post(path, json=body)

            tasks = [asyncio.create_task(one(b)) for b in bodies]
            await asyncio.sleep(0.05)
            start.set()
            return await asyncio.gather(*tasks)

    return run_burst(run)


def _statuses(responses: list[httpx.Response]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


def test_bursts_of_wrong_passwords_and_pairing_codes_test_exactly_what_the_lockout_allows(tmp_path: Path) -> None:
    with ProcStation(tmp_path, api=OFF) as ps:
        ps.start(wait_devices=False)
        ps.add_operator("ada", "admin", ADMIN_PW)
        lk = ps.config.lockout
        allowed = lk.free_failures + 1  # then the scope waits first_delay_s

        # one account, many parallel wrong passwords
        res = _burst(ps.base_url, "/api/operator/login",
                     [{"operator_id": "ada", "password": f"wrong password {n}"} for n in range(100)])
        assert _statuses(res) == {401: allowed, 429: 100 - allowed}
        assert _count(ps, "auth.password.attempt") == allowed
        assert _count(ps, "auth.password.rejected") == allowed
        # the right password is refused too while the account waits: the bound holds
        ok = httpx.post(ps.base_url + "/api/operator/login", json={"operator_id": "ada", "password": ADMIN_PW})
        assert ok.status_code == 429 and _count(ps, "operator.login") == 0

        # sprayed over many ids: no more than the station's daily cap of password guesses
        res = _burst(ps.base_url, "/api/operator/login",
                     [{"operator_id": f"x{n}", "password": "wrong password"} for n in range(100)])
        cap = lk.daily_failure_cap
        assert _statuses(res) == {401: cap - allowed, 429: 100 - (cap - allowed)}
        assert _count(ps, "auth.password.attempt") == cap

        # pairing codes: one station-wide scope, its own count (customers' codes unaffected)
        admin_code = ps.cli("kiosk", "pair", "kiosk-1").stdout.split(": ")[1].split()[0]
        res = _burst(ps.base_url, "/api/kiosk/pair", [{"code": f"WRONG{n:05d}"} for n in range(100)])
        assert _statuses(res) == {401: allowed, 429: 100 - allowed}
        assert _count(ps, "auth.pair.attempt") == allowed
        assert _count(ps, "kiosk.paired") == 0
        assert ps.query("SELECT consumed_at FROM pairing_codes")[0]["consumed_at"] is None
        # a lockout alarm for each, and the customer's code entry is not paused by them
        kinds = [e["data"]["message"] for e in _events(ps, "alarm.raised")]
        assert any(k.startswith("password lockout") for k in kinds) and any(k.startswith("pair lockout") for k in kinds)
        assert _count(ps, "auth.code.attempt") == 0
        assert admin_code not in ps.log_tail(10**6)
        assert ps.verify_log().returncode == 0
