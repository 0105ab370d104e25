"""The webhook sender's own connection (ADR 0163): kept alive, renewed once when the gateway
has closed it, and every fault a short, safe SendError."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from station.mosquitto import free_port
from station.notify import StationInfo, WebhookSender
from station.notify.senders import SendError

from .helpers import pickup as note
from .receiver import WebhookReceiver

STATION = StationInfo("Riverside")


class KeepAliveGateway:
    """HTTP/1.1 with keep-alive; `close_after` closes a connection after that many answers
    without saying so, as a gateway's idle timeout does."""

    def __init__(self, close_after: int | None = None) -> None:
        self.connections = 0
        self.requests: list[tuple[dict[str, Any], dict[str, str]]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                gateway.connections += 1
                self.answered = 0

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                gateway.requests.append((body, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.answered += 1
                if close_after is not None and self.answered >= close_after:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server.server_port}/sms?key=abc"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_one_connection_carries_every_message() -> None:
    gateway = KeepAliveGateway()
    try:
        sender = WebhookSender(gateway.url(), STATION, timeout_s=5)
        for n in range(5):
            sender.send(f"id-{n}", note(n))
        sender.close()
        assert gateway.connections == 1
        assert [b["id"] for b, _ in gateway.requests] == [f"id-{n}" for n in range(5)]
        assert [h["Idempotency-Key"] for _, h in gateway.requests] == [f"id-{n}" for n in range(5)]
        assert all(h["Content-Type"] == "application/json" for _, h in gateway.requests)
    finally:
        gateway.stop()


def test_a_connection_the_gateway_closed_is_renewed_once_and_the_message_delivered() -> None:
    gateway = KeepAliveGateway(close_after=1)
    try:
        sender = WebhookSender(gateway.url(), STATION, timeout_s=5)
        for n in range(3):
            sender.send(f"id-{n}", note(n))  # each after the gateway dropped the last connection
        assert [b["id"] for b, _ in gateway.requests] == ["id-0", "id-1", "id-2"]
        assert gateway.connections == 3
    finally:
        gateway.stop()


def test_credentials_in_the_url_go_as_basic_auth_and_the_query_is_kept() -> None:
    gateway = KeepAliveGateway()
    try:
        WebhookSender(gateway.url("acct:s%40cret@"), STATION, timeout_s=5).send("id-1", note(1))
        _, headers = gateway.requests[0]
        assert base64.b64decode(headers["Authorization"].split()[1]) == b"acct:s@cret"
    finally:
        gateway.stop()


def test_a_gateway_that_is_not_there_is_a_channel_fault_that_names_no_url() -> None:
    sender = WebhookSender(f"http://user:key@127.0.0.1:{free_port()}/sms", STATION, timeout_s=5)
    with pytest.raises(SendError) as err:
        sender.send("id-1", note(1))
    assert str(err.value) == "webhook: ConnectionRefusedError" and err.value.channel_down


def test_a_gateway_that_never_answers_is_a_timeout() -> None:
    receiver = WebhookReceiver().start()
    receiver.hold.set()
    try:
        with pytest.raises(SendError, match="^webhook: timeout$"):
            WebhookSender(receiver.url, STATION, timeout_s=0.5).send("id-1", note(1))
    finally:
        receiver.release.set()
        receiver.stop()


@pytest.mark.parametrize("status,channel_down", [(400, False), (429, True), (503, True)])
def test_a_refusal_names_the_status_and_says_whether_the_channel_is_down(
        status: int, channel_down: bool) -> None:
    receiver = WebhookReceiver().start()
    receiver.status = status
    try:
        with pytest.raises(SendError) as err:
            WebhookSender(receiver.url, STATION, timeout_s=5).send("id-1", note(1))
        assert str(err.value) == f"webhook: HTTP {status}" and err.value.channel_down is channel_down
    finally:
        receiver.stop()


@pytest.mark.parametrize("url", ["ftp://gw.example/sms", "gw.example/sms", "http:///sms"])
def test_a_url_that_is_not_http_with_a_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http:// or https:// with a host"):
        WebhookSender(url, STATION)
