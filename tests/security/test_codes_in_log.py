"""#14.4: `station run` never writes a usable pickup code or one-time code to its log.

The default sender is `console`, one log line per message. A code copied from that log
opened the door. Against the real process with the example's console sender: shelve a
parcel, ask for a one-time code, then take every string in the log that could be a code
(every run of 8 digits, for the parcel's slot; every run of 6 digits) and test it against
the station's own digests. None may match. A configuration that asks the console to show
codes is refused by `station run` (exit 2, naming the key); the demo's own configuration
still shows them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import subprocess
from pathlib import Path

import pytest

from station.config import SenderConfig, dump_config_toml, load_config
from station.demo import demo_notify
from station.domain.codes import PickupCode, code_digest
from station.domain.layout import SlotAddress
from station.notify import ConsoleSender, Notification, StationInfo
from tests.reliability.harness import EXAMPLE, PY, ROOT, ProcStation, until

PHONE = "13900000042"


def _sent(ps: ProcStation, kind: str) -> int:
    return ps.query("SELECT COUNT(*) n FROM events WHERE type = 'notify.sent'"
                    " AND json_extract(data, '$.kind') = ?", (kind,))[0]["n"]


def test_station_run_logs_no_usable_pickup_code_or_one_time_code(tmp_path: Path) -> None:
    with ProcStation(tmp_path / "st", webhook=False, env={"PS_LOG_LEVEL": "DEBUG"}) as ps:
        assert [s.kind for s in ps.config.notify.senders] == ["console"]
        ps.start()
        assert ps.api("post", "/api/operator/couriers", "operator",
                      json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": "2468"}).status_code == 201
        sid = ps.api("post", "/api/courier/sessions", "courier", "c1", json={}).json()["session_id"]
        res = ps.api("post", f"/api/courier/sessions/{sid}/scans", "courier", "c1",
                     json={"waybill": "SF0000000000042", "phone": PHONE, "size": "S"})
        assert res.status_code == 200, res.text
        slot = res.json()["slot"]
        ps.put(slot)
        until(lambda: _sent(ps, "pickup_code") == 1, 15, "the pickup code went out on the console")
        assert ps.api("post", "/api/kiosk/otp/request", "kiosk", "kiosk-1",
                      json={"phone": PHONE}).status_code == 200
        until(lambda: _sent(ps, "otp") == 1, 15, "the one-time code went out on the console")
        parcel_digests = {r["code_digest"] for r in ps.query("SELECT code_digest FROM parcels")}
        otps = [(r["id"], r["digest"]) for r in ps.query("SELECT id, digest FROM otps")]
        assert len(parcel_digests) == 1 and len(otps) == 1
    log = ps.log_path.read_text(errors="replace")
    assert "pickup_code to 139****0042" in log and "otp to 139****0042" in log, log[-2000:]

    key = ps.secrets.hash_key
    address = SlotAddress.parse(slot)
    eight = set(re.findall(r"(?<!\d)(\d{8})(?!\d)", log))
    six = set(re.findall(r"(?<!\d)(\d{6})(?!\d)", log))
    usable_codes = [c for c in eight if code_digest(PickupCode(address, c), key) in parcel_digests]
    usable_otps = [o for o in six for otp_id, digest in otps
                   if hmac.compare_digest(digest, hmac.new(key, f"otp/{otp_id}/{o}".encode(),
                                                           hashlib.sha256).hexdigest())]
    assert not usable_codes, f"the pickup code is in the log: {usable_codes}"
    assert not usable_otps, f"the one-time code is in the log: {usable_otps}"


def test_station_run_refuses_a_config_that_shows_codes(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE)
    shows = cfg.model_copy(update={"notify": cfg.notify.model_copy(update={
        "senders": [SenderConfig(kind="console", show_codes=True)]})})
    path = tmp_path / "station.toml"
    path.write_text(dump_config_toml(shows))
    res = subprocess.run([PY, "-m", "station.cli", "run", "--config", str(path),
                          "--secrets", str(tmp_path / "no-secrets.toml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "notify.senders[0].show_codes" in res.stderr and "make demo" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_show_codes_is_a_console_setting_only() -> None:
    with pytest.raises(ValueError, match="show_codes"):
        SenderConfig(kind="webhook", url="http://127.0.0.1:9/sms", show_codes=True)


def test_the_demo_still_shows_codes_and_the_default_console_does_not(caplog: pytest.LogCaptureFixture) -> None:
    demo = demo_notify(load_config(EXAMPLE).notify)
    assert [s.show_codes for s in demo.senders if s.kind == "console"] == [True]
    station = StationInfo(name="Riverside", address="")
    pickup = Notification.parse({"kind": "pickup_code", "phone": PHONE, "code": "1-1-01-12345678",
                                 "qr": "PS1:st-demo:1-1-01-12345678:0011223344556677",
                                 "station_name": "Riverside", "deadline_iso": "2026-12-08T00:00:00Z"})
    otp = Notification.parse({"kind": "otp", "phone": PHONE, "otp": "654321", "ttl_s": 300})
    caplog.set_level(logging.INFO, logger="station.notify")
    ConsoleSender(station).send("row1", pickup)
    ConsoleSender(station).send("row2", otp)
    quiet = " ".join(r.getMessage() for r in caplog.records)
    assert "12345678" not in quiet and "654321" not in quiet and "(withheld)" in quiet
    caplog.clear()
    ConsoleSender(station, show_codes=demo.senders[0].show_codes).send("row1", pickup)
    ConsoleSender(station, show_codes=True).send("row2", otp)
    shown = " ".join(r.getMessage() for r in caplog.records)
    assert "1-1-01-12345678" in shown and "654321" in shown
