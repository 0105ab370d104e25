"""The fleet's courier registry page (#20): read-only, behind the fleet's operator token,
showing carrier, name, validity, stations, disabled and whether a face is enrolled, never a
PIN hash or a template; in a real browser (Debian's Chromium), values rendered as text."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient

from fleet import couriers as registry
from fleet.config import FleetSecrets
from fleet.web import create_app, make_token
from station.mosquitto import free_port
from tests.reliability.harness import until

SECRETS = FleetSecrets(token_key=b"k" * 32, template_key=b"t" * 32)
EVIL = '<img src=x onerror="window.pwned=1">'


class _FakeEngine:
    """Two templates, as FaceEngine.enrol makes them (the real encoder is tested elsewhere)."""

    def enrol(self, images: list[bytes]) -> Any:
        from station.vision.faces import Enrolment

        return Enrolment(np.random.default_rng(1).normal(size=(len(images), 128)).astype(np.float32), ())


def _fill(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        registry.create_tables(conn)
        registry.add(conn, "f1", "SF", "Fleet Li", "2468", ["st-a", "st-b"], valid_until=1_900_000_000.0)
        registry.add(conn, "f2", "ZTO", EVIL, "1357", ["st-b"])
        registry.add(conn, "f3", "SF", "Nowhere Wang", "9753")
        registry.set_active(conn, "f2", False)
        registry.enrol_faces(conn, "f1", [b"a", b"b"], _FakeEngine(), registry.template_cipher(SECRETS.template_key))


def test_the_registry_api_is_read_only_behind_the_token_and_holds_no_secret(fleet_dsn: str) -> None:
    _fill(fleet_dsn)
    client = TestClient(create_app(fleet_dsn, SECRETS))
    assert client.get("/api/couriers").status_code == 401
    forged = make_token(b"x" * 32, "op-1", 600)
    assert client.get("/api/couriers", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    auth = {"Authorization": "Bearer " + make_token(SECRETS.token_key, "op-1", 600)}
    res = client.get("/api/couriers", headers=auth)
    assert res.status_code == 200
    rows = {r["id"]: r for r in res.json()["couriers"]}
    assert set(rows["f1"]) == {"id", "carrier", "name", "active", "valid_from", "valid_until", "stations",
                               "face_enrolled", "updated_at"}
    assert rows["f1"]["stations"] == ["st-a", "st-b"] and rows["f1"]["face_enrolled"] is True
    assert rows["f1"]["valid_until"] == 1_900_000_000.0
    assert rows["f2"]["active"] is False and rows["f2"]["face_enrolled"] is False
    assert rows["f3"]["stations"] == []
    assert "argon2" not in res.text and "template" not in res.text
    # read-only: nothing to write through this route
    assert client.post("/api/couriers", headers=auth, json={}).status_code == 405
    assert client.get("/couriers").status_code == 200   # the page itself is a plain file


@pytest.fixture
def served(fleet_dsn: str) -> Iterator[str]:
    _fill(fleet_dsn)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(fleet_dsn, SECRETS), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started, 20, "fleet serve")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_registry_page_shows_each_courier_in_a_browser(served: str, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(served + "/couriers")
    expect(page.locator("#err")).to_contain_text("log in")          # no token yet: nothing shown
    page.fill("#token", make_token(SECRETS.token_key, "op-1", 600))
    page.click("#save")
    expect(page.locator("#count")).to_have_text("3 of 3 couriers")
    f1 = page.locator('tr[data-courier="f1"] td')
    expect(f1).to_have_text(["f1", "SF", "Fleet Li", "active", "", "2030-03-17 17:46", "st-a, st-b", "yes"])
    f2 = page.locator('tr[data-courier="f2"] td')
    expect(f2.nth(2)).to_have_text(EVIL)                              # shown as text, not run
    expect(f2.nth(3)).to_have_text("disabled")
    expect(f2.nth(7)).to_have_text("no")
    assert page.evaluate("() => window.pwned") is None
    page.fill("#filter", "st-b")
    expect(page.locator("#count")).to_have_text("2 of 3 couriers")
    html = page.content()
    assert "argon2" not in html and "token" not in page.url
