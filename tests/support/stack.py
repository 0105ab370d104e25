"""A whole station for end-to-end tests: Mosquitto, firmware on the in-memory HAL, the
service wired by bootstrap.build_station, optionally the HTTP API on a free port, and a
webhook receiver that captures the notifications (so tests learn the codes the way a
customer does: from the message).

    with LiveStation(tmp_path) as ls:
        ls.core.couriers.add(...)
        ls.put("1-1-01"); ls.take("1-1-01")
        code = ls.wait_code(waybill_tail="0123")
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from station.api.auth import make_token
from station.bootstrap import Station, build_station
from station.config import SenderConfig, StationConfig, load_secrets, write_new_secrets
from station.demo import start_devices
from station.domain.layout import SlotAddress
from station.mosquitto import MosquittoProcess, free_port
from tests.conftest import example_config


class WebhookReceiver:
    """An SMS gateway stand-in on a loopback port; `up` False answers 503."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.up = True
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if not receiver.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.messages.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@dataclass
class LiveStation:
    tmp: Path
    station_overrides: dict[str, Any] = field(default_factory=dict)
    http: bool = False
    # other config sections' keys, e.g. {"home_assistant": {"enabled": True}}
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # top-level keys, validated like a config file's, e.g. {"cameras": [...]}
    top: dict[str, Any] = field(default_factory=dict)
    broker: MosquittoProcess | None = None
    config: StationConfig | None = None
    station: Station | None = None
    devices: list[Any] = field(default_factory=list)
    webhook: WebhookReceiver | None = None
    base_url: str = ""
    _server: Any = None

    def __enter__(self) -> LiveStation:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.broker = self.broker or MosquittoProcess(workdir=self.tmp / "mosquitto").start()
        self.webhook = WebhookReceiver()
        cfg = example_config(self.tmp, **self.station_overrides)
        cfg = cfg.model_copy(update={name: getattr(cfg, name).model_copy(update=keys)
                                     for name, keys in self.sections.items()})
        cfg = cfg.model_copy(update={
            "mqtt": cfg.mqtt.model_copy(update={"port": self.broker.port}),
            "notify": cfg.notify.model_copy(update={
                "senders": [SenderConfig(kind="webhook", url=self.webhook.url)],
                "retry_initial_s": 0.2, "retry_max_s": 1.0}),
        })
        if self.top:
            cfg = StationConfig.model_validate({**cfg.model_dump(), **self.top})
        self.config = cfg
        secrets_path = self.tmp / "secrets.toml"
        if not secrets_path.exists():
            write_new_secrets(secrets_path)
        self.secrets = load_secrets(secrets_path, env={})
        self.devices = start_devices(cfg, self.secrets, self.broker.url, self.tmp)
        self.station = build_station(cfg, self.secrets).start()
        assert self.station.link.wait_online(cfg.device_ids, 15), "devices did not come online"
        if self.http:
            self._serve()
        return self

    def _serve(self) -> None:
        import uvicorn

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(self.station.app, host="127.0.0.1", port=port,
                                               log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        self._server = server
        self.base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: server.started, 10)

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self.station is not None:
            self.station.stop()
        for d in self.devices:
            d.stop()
        if self.webhook is not None:
            self.webhook.stop()
        if self.broker is not None:
            self.broker.stop()

    # --- handy views ------------------------------------------------------------------------

    @property
    def core(self) -> Any:
        return self.station.core

    def token(self, role: str, subject: str) -> str:
        return make_token(self.secrets.token_key, role, subject, 3600)

    def shelf(self, slot: str | SlotAddress) -> tuple[Any, int, int]:
        addr = slot if isinstance(slot, SlotAddress) else SlotAddress.parse(slot)
        device = self.core.ctx.device_of(addr)
        ctrl = next(d for d in self.devices if d.device_id == device)
        return ctrl, addr.row, addr.col

    def shelve_one(self, waybill: str = "SF1234567890123", phone: str = "13812341234") -> tuple[str, str]:
        """One parcel shelved the way a courier's handheld would (through the flows, no page),
        by courier c1: (slot, the pickup code the recipient got)."""
        self.core.couriers.add("c1", "SF", "Li", "1234")
        s = self.core.shelving.open_session("c1")
        r = self.core.shelving.scan(s["session_id"], waybill, phone, "S")
        self.put(r.slot)
        return r.slot, self.wait_code_for(phone)

    def put(self, slot: str | SlotAddress) -> None:
        ctrl, row, col = self.shelf(slot)
        ctrl.hal.sensor(row, col).put()

    def take(self, slot: str | SlotAddress) -> None:
        ctrl, row, col = self.shelf(slot)
        ctrl.hal.sensor(row, col).take()

    def lit(self) -> dict[str, tuple[str, ...]]:
        """Every slot the firmware shows lit right now: printed address -> colours."""
        out: dict[str, tuple[str, ...]] = {}
        for shelf in self.config.shelves:
            ctrl = next(d for d in self.devices if d.device_id == shelf.device)
            for (row, col), led in ctrl.hal.lit().items():
                out[f"{shelf.number}-{row}-{col:02d}"] = tuple(led.colours)
        return out

    def codes_for(self, phone: str, kind: str = "pickup_code") -> list[str]:
        """Codes (or one-time codes, kind="otp") the webhook received for `phone`."""
        return [m["code"] for m in self.webhook.snapshot() if m.get("to") == phone and m.get("kind") == kind]

    def wait_code_for(self, phone: str, count: int = 1, kind: str = "pickup_code",
                      timeout: float = 10.0) -> str:
        """The newest of at least `count` codes sent to `phone`."""
        return wait_until(lambda: (c := self.codes_for(phone, kind)) and len(c) >= count and c[-1], timeout)
