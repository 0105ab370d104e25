"""Access control over the whole API, walked from the OpenAPI document so a new route is
covered the day it is added: no token -> 401, a forged or expired token -> 401, a wrong role
-> 403, each with a JSON error body; only an explicit allow-list is public. Also: the
OpenAPI document is served and complete, and CORS is closed unless configured."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from station.api.auth import ROLES, make_token
from station.bootstrap import build_station
from station.config import load_secrets, write_new_secrets
from tests.conftest import example_config

# Routes anyone may call. Keep this list short and explicit: adding to it is a decision.
PUBLIC = {
    ("GET", "/api/health"),
    ("POST", "/api/courier/login"),
    ("POST", "/api/operator/login"),
    ("POST", "/api/kiosk/pair"),
    ("GET", "/"),
    ("GET", "/kiosk"),
    ("GET", "/courier"),
    ("GET", "/operator"),
}
# Which role owns which part of the API. A route under no prefix fails the test.
ROLE_BY_PREFIX = {
    "/api/courier/": "courier",
    "/api/kiosk/": "kiosk",
    "/api/exit/": "kiosk",
    "/api/operator/": "operator",
}
# The right-role check below only proves the mapping above; these are left out of it: the
# stream never ends, and the camera routes wait seconds for a camera the test does not have.
NOT_CALLED_WITH_RIGHT_ROLE = {
    ("GET", "/api/operator/stream"),
    ("POST", "/api/kiosk/courier/face"),
    ("POST", "/api/exit/frame"),
}
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def station_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real app as build_station wires it; the station is never started (no broker)."""
    tmp = tmp_path_factory.mktemp("authz")
    secrets = load_secrets(write_new_secrets(tmp / "secrets.toml"), env={})
    station = build_station(example_config(tmp), secrets)
    station.app.state.test_secrets = secrets
    yield station.app
    station.store.close()


@pytest.fixture(scope="module")
def client(station_app: Any) -> TestClient:
    return TestClient(station_app, raise_server_exceptions=False)


def _operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    doc = app.openapi()
    ops = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                ops.append((method.upper(), path, item[method]))
    return ops


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "dummy-1", path)


def _call(client: TestClient, method: str, path: str, op: dict[str, Any],
          headers: dict[str, str] | None = None, body: dict[str, Any] | None = None) -> Any:
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if "requestBody" in op:
        kwargs["json"] = {} if body is None else body   # minimal body: the auth check comes first
    return client.request(method, _concrete(path), **kwargs)


def _role_for(path: str) -> str:
    for prefix, role in ROLE_BY_PREFIX.items():
        if path.startswith(prefix):
            return role
    raise AssertionError(f"{path} is neither public nor under a role's prefix: decide who may call it")


def _token(app: Any, role: str, ttl: float = 600, key: bytes | None = None, now: float | None = None) -> str:
    return make_token(key or app.state.test_secrets.token_key, role, f"t-{role}", ttl, now=now)


def _assert_json_error(res: Any, status: int, where: str) -> None:
    assert res.status_code == status, f"{where}: {res.status_code} {res.text[:200]}"
    body = res.json()
    assert set(body) >= {"error", "message"}, f"{where}: {body}"
    assert isinstance(body["error"], str) and body["error"], where


def test_the_walk_covers_every_api_route(station_app: Any) -> None:
    ops = {(m, p) for m, p, _ in _operations(station_app)}
    routes = {(m, r.path) for r in station_app.routes if isinstance(r, APIRoute) and r.include_in_schema
              for m in r.methods if m != "HEAD"}
    assert routes <= ops, f"routes missing from the OpenAPI document: {sorted(routes - ops)}"
    assert ops >= PUBLIC, f"public routes that do not exist any more: {sorted(PUBLIC - ops)}"
    assert len(ops) >= 40, "the walk found suspiciously few routes"
    for role in ROLES:
        assert any(_role_for(p) == role for m, p in ops if (m, p) not in PUBLIC), role


def test_every_route_refuses_a_caller_without_a_token(station_app: Any, client: TestClient) -> None:
    checked = 0
    for method, path, op in _operations(station_app):
        if (method, path) in PUBLIC:
            continue
        _role_for(path)
        res = _call(client, method, path, op)
        _assert_json_error(res, 401, f"{method} {path} without a token")
        assert res.headers.get("www-authenticate", "").lower().startswith("bearer"), f"{method} {path}"
        checked += 1
    assert checked >= 35


@pytest.mark.parametrize("kind", ["garbage", "forged", "expired", "bad-scheme", "query-string"])
def test_every_route_refuses_a_bad_token(station_app: Any, client: TestClient, kind: str) -> None:
    for method, path, op in _operations(station_app):
        if (method, path) in PUBLIC:
            continue
        role = _role_for(path)
        if kind == "garbage":
            headers = {"Authorization": "Bearer ps1.operator.x.9999999999.AAAA"}
        elif kind == "forged":                   # right shape and role, another station's key
            headers = {"Authorization": "Bearer " + _token(station_app, role, key=b"k" * 32)}
        elif kind == "expired":
            headers = {"Authorization": "Bearer " + _token(station_app, role, ttl=60, now=time.time() - 3600)}
        elif kind == "bad-scheme":               # a valid token, but not as a bearer token
            headers = {"Authorization": "Basic " + _token(station_app, role)}
        else:                                    # tokens in URLs are not accepted by the API
            headers = {}
            path = path + ("&" if "?" in path else "?") + "token=" + _token(station_app, role)
        res = _call(client, method, path, op, headers)
        _assert_json_error(res, 401, f"{method} {path} with a {kind} token")


@pytest.mark.parametrize("caller", ROLES)
def test_every_route_refuses_the_wrong_role(station_app: Any, client: TestClient, caller: str) -> None:
    headers = {"Authorization": "Bearer " + _token(station_app, caller)}
    refused = 0
    for method, path, op in _operations(station_app):
        if (method, path) in PUBLIC or _role_for(path) == caller:
            continue
        res = _call(client, method, path, op, headers)
        _assert_json_error(res, 403, f"{method} {path} as {caller}")
        assert res.json()["error"] == "forbidden"
        refused += 1
    assert refused >= 10


@pytest.mark.parametrize("caller", ROLES)
def test_the_right_role_gets_past_the_door(station_app: Any, client: TestClient, caller: str) -> None:
    """The mirror image: the owner of a route is let through (whatever the dummy data then
    earns), so the 401/403 above come from access control and not from a broken route.
    Bodies carry an unknown field, which every body model refuses: no call has an effect."""
    headers = {"Authorization": "Bearer " + _token(station_app, caller)}
    for method, path, op in _operations(station_app):
        if (method, path) in PUBLIC or (method, path) in NOT_CALLED_WITH_RIGHT_ROLE or _role_for(path) != caller:
            continue
        res = _call(client, method, path, op, headers, body={"__probe__": True})
        if "requestBody" in op:
            assert res.status_code == 422, f"{method} {path} as {caller}: {res.text[:200]}"
        assert res.status_code not in (401, 403) or res.json().get("error") not in (
            "unauthenticated", "invalid_token", "forbidden"), f"{method} {path} as {caller}: {res.text[:200]}"


def test_the_session_cookie_is_the_only_cookie_read(station_app: Any) -> None:
    """The console's session cookie authenticates (EventSource sends it too); a stateless
    token in a cookie does not (a cookie is sent by the browser by itself: ADR 0130), and a
    viewer's session is refused admin routes."""
    accounts = station_app.state.services.core.accounts
    accounts.add("cookie-viewer", "viewer", "a long password", actor="test")
    c = TestClient(station_app, raise_server_exceptions=False)
    c.cookies.set("ps_token", _token(station_app, "operator"))
    _assert_json_error(c.get("/api/operator/verify"), 401, "a stateless token in a cookie")
    res = c.post("/api/operator/login", json={"operator_id": "cookie-viewer", "password": "a long password"})
    assert res.status_code == 200, res.text
    assert c.get("/api/operator/verify").status_code == 200
    _assert_json_error(c.post("/api/operator/alarms/x/ack", headers={"Origin": "http://testserver"}), 403,
                       "a viewer acknowledging an alarm")


def test_public_routes_answer_without_a_token(client: TestClient) -> None:
    assert client.get("/api/health").json()["ok"] is True
    res = client.post("/api/courier/login", json={"courier_id": "nobody", "pin": "0000"})
    assert res.status_code in (401, 404, 422) and "error" in res.json()   # refused on the merits, not for a token
    for page in ("/", "/kiosk", "/courier", "/operator"):
        res = client.get(page)
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/html"), page


def test_openapi_document_is_served_and_complete(station_app: Any, client: TestClient) -> None:
    res = client.get("/openapi.json")
    assert res.status_code == 200
    doc = res.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"]
    served = {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in METHODS}
    assert served == {(m, p) for m, p, _ in _operations(station_app)}
    for method, path, op in _operations(station_app):
        assert op.get("responses"), f"{method} {path} documents no response"
    for want in ("/api/operator/replay", "/api/operator/stream", "/api/kiosk/code", "/api/courier/sessions/{session_id}/scans"):
        assert want in doc["paths"], want
    assert client.get("/docs").status_code == 200


FOREIGN = "https://evil.example"


def test_cors_is_closed_by_default(client: TestClient) -> None:
    for method, path in (("GET", "/api/health"), ("GET", "/api/operator/state"), ("POST", "/api/courier/login")):
        res = client.request(method, path, headers={"Origin": FOREIGN})
        assert "access-control-allow-origin" not in res.headers, path
        pre = client.options(path, headers={"Origin": FOREIGN, "Access-Control-Request-Method": method,
                                            "Access-Control-Request-Headers": "authorization"})
        assert "access-control-allow-origin" not in pre.headers, path
        assert "access-control-allow-headers" not in pre.headers, path


def test_cors_opens_only_to_configured_origins(tmp_path: Path) -> None:
    secrets = load_secrets(write_new_secrets(tmp_path / "secrets.toml"), env={})
    cfg = example_config(tmp_path)
    cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"cors_origins": ["https://ops.example"]})})
    c = TestClient(build_station(cfg, secrets).app)
    ok = c.get("/api/health", headers={"Origin": "https://ops.example"})
    assert ok.headers.get("access-control-allow-origin") == "https://ops.example"
    assert "access-control-allow-origin" not in c.get("/api/health", headers={"Origin": FOREIGN}).headers


def test_malformed_json_without_a_token_is_refused_as_unauthenticated(client: TestClient) -> None:
    res = client.post("/api/kiosk/code", content=b"{not json", headers={"content-type": "application/json"})
    assert res.status_code == 401


def test_a_sequence_number_sqlite_cannot_hold_is_refused_not_a_crash(client: TestClient) -> None:
    from station.api.auth import make_token

    token = make_token(client.app.state.token_key, "operator", "op", 60)
    for path in (f"/api/operator/replay?seq={2**64}", f"/api/operator/events?after_seq={2**64}"):
        res = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert res.status_code == 422 and res.json()["error"] == "invalid_request", res.text
