"""#14.5: the upstream link has its own credentials, TLS and client id, and is off unless
configured. Against a real Mosquitto that requires a password over TLS."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from station.config import ConfigError, load_secrets, parse_config, write_new_secrets
from station.mosquitto import MosquittoProcess
from station.store.db import Store
from station.store.eventlog import Event
from station.upstream import UpstreamForwarder, default_topic
from tests.conftest import EXAMPLE_CONFIG

from .tlsca import issue, make_ca

STATION = "st-sec"


def _config(**upstream: Any) -> Any:
    import tomllib

    data = tomllib.loads(EXAMPLE_CONFIG.read_text())
    data["upstream"] = upstream
    return parse_config(data)


def test_upstream_is_off_unless_configured() -> None:
    cfg = _config()
    assert cfg.upstream.enabled is False


@pytest.mark.parametrize("upstream, fault", [
    ({"enabled": True, "username": "st"}, "host is required"),
    ({"enabled": True, "host": "fleet.example", "tls": True}, "own credentials"),
    ({"enabled": True, "host": "127.0.0.1", "port": 1883, "username": "st", "tls": False}, "device broker"),
    ({"enabled": True, "host": "fleet.example", "username": "st", "cert_file": "c.pem"}, "go together"),
    ({"enabled": True, "host": "fleet.example", "username": "st", "tls": False, "ca_file": "ca.pem"},
     "tls = true"),
    ({"enabled": True, "host": "fleet.example", "username": "st", "password": "x"}, "unknown key"),
])
def test_an_unusable_upstream_section_is_refused_with_a_clear_error(upstream: dict, fault: str) -> None:
    with pytest.raises(ConfigError, match=fault):
        _config(**upstream)


def test_the_password_comes_from_the_secrets_not_the_config(tmp_path: Path) -> None:
    path = write_new_secrets(tmp_path / "secrets.toml")
    assert load_secrets(path, env={}).upstream_password is None
    got = load_secrets(path, env={"PS_SECRET_UPSTREAM_PASSWORD": "s3cret"})
    assert got.upstream_password == "s3cret"
    with path.open("a") as fh:
        fh.write('upstream_password = "from-file"\n')
    assert load_secrets(path, env={}).upstream_password == "from-file"
    cfg = _config(enabled=True, host="127.0.0.1", port=8883, username="st-sec")
    store = Store(tmp_path / "x.db").open()
    try:
        with pytest.raises(ValueError, match="upstream_password"):
            UpstreamForwarder.from_config(store, cfg, load_secrets(path, env={}).model_copy(
                update={"upstream_password": None}))
    finally:
        store.close()


@pytest.fixture
def secure_broker(tmp_path: Path) -> Any:
    """Mosquitto with a password file and a TLS-only listener signed by a throwaway CA."""
    ca = make_ca(tmp_path)
    cert, key = issue(tmp_path, ca, "fleet-broker")
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), STATION, "right-password"], check=True,
                   capture_output=True)
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "fleet", "fleet-password"], check=True,
                   capture_output=True)
    conf = ["allow_anonymous false", f"password_file {pw}", f"cafile {ca[0]}", f"certfile {cert}",
            f"keyfile {key}", "require_certificate false", "tls_version tlsv1.2"]
    with MosquittoProcess(workdir=tmp_path / "broker", extra_conf=conf) as broker:
        yield broker, ca


def _fleet_reader(broker: MosquittoProcess, ca_file: Path) -> tuple[mqtt.Client, list[dict]]:
    got: list[dict] = []
    ready = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-reader")
    c.username_pw_set("fleet", "fleet-password")
    c.tls_set(ca_certs=str(ca_file))
    c.on_connect = lambda cl, *a: cl.subscribe(default_topic(STATION), qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = lambda cl, u, m: got.append(json.loads(m.payload))
    c.connect(broker.host, broker.port)
    c.loop_start()
    assert ready.wait(10)
    return c, got


def _station(tmp: Path, broker: MosquittoProcess, ca_file: Path | None, password: str,
             **up: Any) -> tuple[Store, UpstreamForwarder]:
    cfg = _config(enabled=True, host=broker.host, port=broker.port, username=STATION,
                  client_id="st-sec-up", **({"ca_file": str(ca_file)} if ca_file else {}), **up)
    secrets = load_secrets(write_new_secrets(tmp / f"secrets-{time.monotonic_ns()}.toml"),
                           env={"PS_SECRET_UPSTREAM_PASSWORD": password})
    cfg = cfg.model_copy(update={"station": cfg.station.model_copy(update={"id": STATION})})
    store = Store(tmp / f"st-{time.monotonic_ns()}.db").open()
    return store, UpstreamForwarder.from_config(store, cfg, secrets, reconnect_min_s=0.05,
                                                reconnect_max_s=0.2, poll_s=0.1)


def test_forwarding_over_tls_with_the_stations_own_credentials(tmp_path: Path, secure_broker: Any) -> None:
    broker, ca = secure_broker
    reader, got = _fleet_reader(broker, ca[0])
    store, fwd = _station(tmp_path, broker, ca[0], "right-password")
    fwd.start()
    try:
        for i in range(20):
            store.append(Event("test.tick", "room", data={"n": i}))
        assert fwd.wait_forwarded(store.last_seq, 20), fwd.last_error
        deadline = time.monotonic() + 10
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [m["seq"] for m in got] == list(range(1, 21))
        assert fwd.client_id == "st-sec-up"
    finally:
        fwd.stop()
        reader.loop_stop()
        store.close()


@pytest.mark.parametrize("case", ["wrong password", "untrusted server", "plaintext"])
def test_without_the_right_credentials_or_tls_nothing_is_sent(tmp_path: Path, secure_broker: Any,
                                                              case: str) -> None:
    broker, ca = secure_broker
    other_ca = make_ca(tmp_path, "another ca")
    kwargs: dict[str, Any] = {}
    password, ca_file = "right-password", ca[0]
    if case == "wrong password":
        password = "guess"
    elif case == "untrusted server":
        ca_file = other_ca[0]
    else:
        ca_file, kwargs = None, {"tls": False}
    reader, got = _fleet_reader(broker, ca[0])
    store, fwd = _station(tmp_path, broker, ca_file, password, **kwargs)
    fwd.start()
    try:
        store.append(Event("test.tick", "room", data={"n": 1}))
        assert not fwd.wait_forwarded(1, 1.5)
        assert fwd.cursor == 0 and not fwd.connected and fwd.last_error.startswith("connect")
        assert got == []
    finally:
        fwd.stop()
        reader.loop_stop()
        store.close()


def test_the_tls_context_verifies_the_server_name(tmp_path: Path) -> None:
    cfg = _config(enabled=True, host="fleet.example", username="st")
    store = Store(tmp_path / "x.db").open()
    try:
        fwd = UpstreamForwarder.from_config(store, cfg, load_secrets(
            write_new_secrets(tmp_path / "s.toml"), env={"PS_SECRET_UPSTREAM_PASSWORD": "p"}))
        ctx = fwd._tls_context
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    finally:
        store.close()
