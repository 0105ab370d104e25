"""The people's kept-alive HTTP connection (shelf_sim/http.py): one connection for many
requests, a new one when the station closed the old, and a clear error when it is gone."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shelf_sim.http import HttpError, PersonHttp


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0
    close_after_each = False
    drop_once = False      # the next request is read, then the connection closed unanswered
    received = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.server.close_after_each:
            self.close_connection = True

    def _dropped(self) -> bool:
        self.server.received += 1
        if self.server.drop_once:
            self.server.drop_once = False
            self.close_connection = True
            return True
        return False

    def do_GET(self) -> None:
        if self._dropped():
            return
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        self._answer(200, {"path": self.path, "auth": self.headers.get("authorization")})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self._dropped():
            return
        status = 409 if self.path == "/refuse" else 200
        self._answer(status, {"got": json.loads(body), "type": self.headers.get("content-type")})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_many_requests_go_over_one_connection(server: _Server) -> None:
    with PersonHttp(_url(server)) as http:
        got = http.get("/api/items", params={"wait_s": 3.0, "q": "a b"}, headers={"Authorization": "Bearer t"})
        assert got.status_code == 200
        assert got.json() == {"path": "/api/items?wait_s=3.0&q=a+b", "auth": "Bearer t"}
        for i in range(20):
            res = http.post("/api/kiosk/code", json={"code": i})
            assert res.json() == {"got": {"code": i}, "type": "application/json"}
        refused = http.post("/refuse", json={})
        assert refused.status_code == 409
        with pytest.raises(HttpError, match="HTTP 409"):
            refused.raise_for_status()
    assert server.connections == 1


def test_a_connection_the_station_closed_is_opened_anew(server: _Server) -> None:
    server.close_after_each = True
    with PersonHttp(_url(server)) as http:
        for i in range(3):
            assert http.post("/x", json={"n": i}).json()["got"] == {"n": i}
            time.sleep(0.05)  # the station has closed it by the next request
    assert server.connections == 3


def test_a_connection_idle_near_the_stations_keep_alive_is_not_reused(server: _Server) -> None:
    """uvicorn closes a connection idle for 5 s; a POST sent as it closes is reset and not
    retried (it may have been read), so a person opens a new one well before that."""
    with PersonHttp(_url(server), max_idle_s=0.2) as http:
        http.post("/x", json={"n": 1})
        http.post("/x", json={"n": 2})  # at once: the same connection
        assert server.connections == 1
        time.sleep(0.3)
        assert http.post("/x", json={"n": 3}).json()["got"] == {"n": 3}
    assert server.connections == 2


def test_a_station_that_is_gone_or_slow_is_a_clear_error(server: _Server) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with PersonHttp(f"http://127.0.0.1:{free}") as http, pytest.raises(HttpError, match="cannot reach"):
        http.get("/api/health")
    with PersonHttp(_url(server), timeout=0.2) as http:
        with pytest.raises(HttpError, match="timed out"):
            http.get("/slow")
        assert http.get("/fast").status_code == 200      # the next request on a new connection
    with pytest.raises(ValueError, match="not an http:// URL"):
        PersonHttp("https://station.example")


def test_a_request_the_station_read_and_never_answered_is_sent_again_only_if_harmless(
        server: _Server) -> None:
    with PersonHttp(_url(server)) as http:
        assert http.get("/first").status_code == 200
        server.drop_once, server.received = True, 0
        assert http.get("/again").json()["path"] == "/again"      # a look: asked once more
        assert server.received == 2
        assert http.post("/x", json={}).status_code == 200
        server.drop_once, server.received = True, 0
        with pytest.raises(HttpError, match="RemoteDisconnected"):
            http.post("/api/exit/leave", json={"session_id": "pks_1"})   # a press: never twice
        assert server.received == 1
