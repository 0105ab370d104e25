"""`station run` as a real child process, for tests that kill it, starve it or fuzz it.

    with ProcStation(tmp_path) as ps:        # broker + in-process firmware + webhook receiver
        ps.start()                           # `python -m station.cli run ...`, waits for health
        ps.api("post", "/api/kiosk/code", "kiosk", json={...})
        ps.kill()                            # SIGKILL, no goodbye
        ps.start()                           # same database, same firmware, same broker

The firmware runs in the test process on the in-memory HAL (station.demo.start_devices), so
a test puts and takes parcels with `ps.put(slot)` / `ps.take(slot)` and reads the LEDs the
shelves really show with `ps.lit()`. The station's stdout and stderr go to `ps.log_path`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx

from station.api.auth import make_token
from station.config import SenderConfig, dump_config_toml, load_config, load_secrets, write_new_secrets
from station.demo import start_devices
from station.domain.layout import SlotAddress
from station.mosquitto import MosquittoProcess, free_port
from tests.support.stack import WebhookReceiver, wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station.toml"
PY = sys.executable


def write_config(path: Path, tmp: Path, webhook_url: str | None, mqtt: dict[str, Any] | None = None,
                 lockout: dict[str, Any] | None = None, disk: dict[str, Any] | None = None,
                 api: dict[str, Any] | None = None, operators: dict[str, Any] | None = None,
                 sections: dict[str, dict[str, Any]] | None = None,
                 **station: Any) -> Path:
    """The example config with files under `tmp`, the webhook sender and fast retries.

    `station` overrides replace keys of the [station] table; `mqtt`, `lockout`, `api` and
    `operators` replace keys of theirs. The harness's `token()` mints stateless operator and
    kiosk tokens, so [api] service_tokens is on unless `api` says otherwise (ADR 0130)."""
    cfg = load_config(EXAMPLE)
    update: dict[str, Any] = {
        "station": cfg.station.model_copy(update={"database": str(tmp / "station.db"),
                                                  "snapshots_dir": str(tmp / "snapshots"), **station}),
        "mqtt": cfg.mqtt.model_copy(update=mqtt or {}),
        "lockout": cfg.lockout.model_copy(update=lockout or {}),
        "disk": cfg.disk.model_copy(update=disk or {}),
        # off: its kernel-chosen port could be the one picked for the station's HTTP API
        "metrics": cfg.metrics.model_copy(update={"enabled": False}),
        "api": cfg.api.model_copy(update={"service_tokens": True, **(api or {})}),
        "operators": cfg.operators.model_copy(update=operators or {}),
    }
    for name, keys in (sections or {}).items():  # any other table, e.g. {"bundles": {...}}
        update[name] = getattr(cfg, name).model_copy(update=keys)
    if webhook_url:
        update["notify"] = cfg.notify.model_copy(update={
            "senders": [SenderConfig(kind="webhook", url=webhook_url)],
            "retry_initial_s": 0.2, "retry_max_s": 1.0})
    path.write_text(dump_config_toml(cfg.model_copy(update=update)))
    load_config(path)  # fail here, not in the child, if an override is not a valid value
    return path


class ProcStation:
    def __init__(self, tmp: Path, *, broker: MosquittoProcess | None = None,
                 webhook: bool = True, devices: bool = True, env: dict[str, str] | None = None,
                 mqtt: dict[str, Any] | None = None, lockout: dict[str, Any] | None = None,
                 disk: dict[str, Any] | None = None, api: dict[str, Any] | None = None,
                 operators: dict[str, Any] | None = None, sections: dict[str, dict[str, Any]] | None = None,
                 **station: Any) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self._own_broker = broker is None
        self.broker = broker or MosquittoProcess(workdir=tmp / "mosquitto")
        self.webhook = WebhookReceiver() if webhook else None
        self.config_path = write_config(tmp / "station.toml", tmp,
                                        self.webhook.url if self.webhook else None,
                                        mqtt=mqtt, lockout=lockout, disk=disk, api=api, operators=operators,
                                        sections=sections, **station)
        self.config = load_config(self.config_path)
        self.secrets_path = tmp / "secrets.toml"
        if not self.secrets_path.exists():
            write_new_secrets(self.secrets_path)
        self.secrets = load_secrets(self.secrets_path, env={})
        self.db_path = Path(self.config.station.database)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "station.log"
        self.env = env or {}
        self.with_devices = devices
        self.devices: list[Any] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.base_url, timeout=15.0)
        self.starts = 0

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._own_broker:
            self.broker.start()
        if self.with_devices:
            cfg = self.config.model_copy(update={
                "mqtt": self.config.mqtt.model_copy(update={"port": self.broker.port})})
            self.devices = start_devices(cfg, self.secrets, self.broker.url, self.tmp)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for d in self.devices:
            d.stop()
        if self.webhook is not None:
            self.webhook.stop()
        if self._own_broker:
            self.broker.stop()
        self.http.close()

    def command(self) -> list[str]:
        return [PY, "-m", "station.cli", "run", "--config", str(self.config_path),
                "--secrets", str(self.secrets_path), "--port", str(self.port),
                "--mqtt-port", str(self.broker.port)]

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it (to kill it while it starts)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        self.starts += 1
        return self.proc

    def start(self, wait_devices: bool = True, timeout: float = 30.0) -> ProcStation:
        def healthy() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"station exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return self.http.get("/api/health").status_code == 200
            except httpx.TransportError:
                return False

        for attempt in range(3):
            self.spawn()
            try:
                wait_until(healthy, timeout, 0.05)
                break
            except AssertionError as exc:
                # another process took the free port between free_port() and the bind (the
                # suite runs on two workers): the station said so; try a new port
                if attempt == 2 or "HTTP server could not start" not in str(exc):
                    raise
                self.port = free_port()
                self.base_url = f"http://127.0.0.1:{self.port}"
                self.http.close()
                self.http = httpx.Client(base_url=self.base_url, timeout=15.0)
        if wait_devices and self.with_devices:
            wanted = set(self.config.device_ids)
            wait_until(lambda: wanted <= self.online_devices(), timeout, 0.05)
        return self

    def online_devices(self) -> set[str]:
        res = self.api("get", "/api/operator/state", "operator")
        return {d for d, s in res.json()["reported"].items() if s["online"] and s["reported"]}

    def kill(self) -> int:
        """SIGKILL: no cleanup, no last words; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    # --- talking to it ----------------------------------------------------------------------

    def token(self, role: str, subject: str | None = None) -> str:
        return make_token(self.secrets.token_key, role, subject or f"{role}-1", 3600)

    def api(self, method: str, path: str, role: str | None = None, subject: str | None = None,
            **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if role:
            headers["Authorization"] = "Bearer " + self.token(role, subject)
        return self.http.request(method, path, headers=headers, **kw)

    # --- operator accounts and kiosk screens (#20.1) -------------------------------------------

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`station ...` against this station's config and secrets, beside the running process."""
        argv = [PY, "-m", "station.cli", *args, "--config", str(self.config_path), "--secrets", str(self.secrets_path)]
        return subprocess.run(argv, check=False, capture_output=True, text=True, cwd=ROOT, timeout=60,
                              env={**os.environ, **self.env, **(env or {})})

    def add_operator(self, operator_id: str, role: str, password: str) -> None:
        res = self.cli("operator", "add", operator_id, "--role", role, env={"PS_OPERATOR_PASSWORD": password})
        assert res.returncode == 0, res.stderr

    def login(self, operator_id: str, password: str) -> httpx.Client:
        """A browser-like client: logged in (the session cookie in its jar) and sending this
        station's own Origin on every request, as the console page does."""
        client = httpx.Client(base_url=self.base_url, timeout=15.0, headers={"Origin": self.base_url})
        res = client.post("/api/operator/login", json={"operator_id": operator_id, "password": password})
        assert res.status_code == 200, res.text
        return client

    def verify_log(self) -> subprocess.CompletedProcess[str]:
        """`station log verify` on the database, run in this process (the same code as the
        command, without a Python start-up per check: the crash test checks after every kill)."""
        import contextlib
        import io

        from station.cli import main as cli_main

        out, err = io.StringIO(), io.StringIO()
        args = ["log", "verify", "--db", str(self.db_path)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(args)
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())

    def db(self) -> sqlite3.Connection:
        """A read-only look at the station's database (WAL: safe beside the writer)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = self.db()
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    # --- the room -----------------------------------------------------------------------------

    def controller(self, device: str) -> Any:
        return next(d for d in self.devices if d.device_id == device)

    def shelf(self, slot: str) -> tuple[Any, int, int]:
        addr = SlotAddress.parse(slot)
        shelf = next(s for s in self.config.shelves if s.number == addr.shelf)
        return self.controller(shelf.device), addr.row, addr.col

    def put(self, slot: str, settle: bool = True) -> None:
        ctrl, row, col = self.shelf(slot)
        ctrl.hal.sensor(row, col).put()
        if settle:
            self.settled(slot)

    def take(self, slot: str, settle: bool = True) -> None:
        ctrl, row, col = self.shelf(slot)
        ctrl.hal.sensor(row, col).take()
        if settle:
            self.settled(slot)

    def settled(self, slot: str) -> None:
        """Wait until the shelf has reported the sensor's count (past its debounce), so a
        take and a put in quick succession are two placements, not a flicker."""
        ctrl, row, col = self.shelf(slot)
        sense = ctrl._sense[(row, col)]
        until(lambda: sense.reported == ctrl.hal.sensor(row, col).read(), 5, f"{slot} settled")

    def lit(self) -> dict[str, tuple[str, ...]]:
        """What the shelves' LEDs show now (firmware HAL): slot -> colours."""
        out: dict[str, tuple[str, ...]] = {}
        for shelf in self.config.shelves:
            ctrl = self.controller(shelf.device)
            for (row, col), led in ctrl.hal.lit().items():
                out[f"{shelf.number}-{row}-{col:02d}"] = tuple(c.upper() for c in led.colours)
        return out

    def desired(self) -> dict[str, tuple[str, ...]]:
        """What the database asks the shelves to show (LightSync via /api/operator/state)."""
        state = self.api("get", "/api/operator/state", "operator").json()
        return {s["slot"]: tuple(c.upper() for c in s["light"]["colours"])
                for shelf in state["shelves"] for s in shelf["slots"] if s["light"]}

    def lights_match(self, timeout: float = 15.0) -> None:
        """Wait for the shelves to show what the database wants; fail with the difference."""
        last: list[Any] = []

        def same() -> bool:
            want, have = self.desired(), self.lit()
            last[:] = [want, have]
            return want == have

        try:
            wait_until(same, timeout, 0.1)
        except AssertionError:
            want, have = last
            raise AssertionError(f"shelves never matched the database: wanted {want}, shelves show {have}") from None

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        assert self.webhook is not None
        return [m for m in self.webhook.snapshot() if kind is None or m.get("kind") == kind]


def shelve(ps: ProcStation, parcels: list[tuple[str, str]], courier: str = "c1",
           pin: str = "2468") -> dict[str, dict[str, Any]]:
    """Courier `courier` (added here) shelves `parcels` (waybill, phone) through the API and
    the shelf sensors; returns waybill -> {"slot", "code", "phone"} as the customer got it."""
    res = ps.api("post", "/api/operator/couriers", "operator",
                 json={"courier_id": courier, "carrier": "SF", "name": "Li", "pin": pin})
    assert res.status_code == 201, res.text
    sid = ps.api("post", "/api/courier/sessions", "courier", courier, json={}).json()["session_id"]
    out: dict[str, dict[str, Any]] = {}
    for waybill, phone in parcels:
        res = ps.api("post", f"/api/courier/sessions/{sid}/scans", "courier", courier,
                     json={"waybill": waybill, "phone": phone, "size": "S"})
        assert res.status_code == 200, res.text
        slot = res.json()["slot"]
        before = len(ps.messages("pickup_code"))
        ps.put(slot)
        msg = until(lambda: len(ps.messages("pickup_code")) > before and ps.messages("pickup_code")[-1],  # noqa: B023
                    10, f"code for {waybill}")
        out[waybill] = {"slot": slot, "code": msg["code"], "phone": phone}
    ps.api("post", f"/api/courier/sessions/{sid}/close", "courier", courier)
    return out


def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    try:
        return wait_until(predicate, timeout, 0.05)
    except AssertionError:
        raise AssertionError(f"{what or 'condition'} not met within {timeout} s") from None
