"""A local SMS gateway stand-in: an HTTP server on a free loopback port, in a thread.

It can be taken down and brought back on the same port (an outage), answer with an error
status, or hold a request without answering (to crash a sender mid-flight)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from station.mosquitto import free_port


class WebhookReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.hold = threading.Event()  # set: requests are received, then never answered
        self.release = threading.Event()
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sms"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver._cond:
                    receiver.bodies.append(body)
                    receiver.headers.append(dict(self.headers))
                    receiver._cond.notify_all()
                if receiver.hold.is_set():
                    receiver.release.wait(30)
                    return
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def ids(self) -> list[str]:
        with self._cond:
            return [b["id"] for b in self.bodies]

    def wait_for(self, count: int, timeout: float = 15.0) -> bool:
        """Until `count` requests arrived; a guard against hanging, not a timing claim."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.bodies) >= count, timeout)

    def wait_for_ids(self, ids: set[str], timeout: float = 15.0) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: ids <= {b["id"] for b in self.bodies}, timeout
            )
