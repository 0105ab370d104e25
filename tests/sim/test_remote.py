"""`shelf-sim run --station-url`: the simulator brings devices and people to a station that
runs on its own (here: broker + station + HTTP API started by the test, no devices)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import uvicorn

from shelf_sim.cli import main
from station.bootstrap import build_station
from station.config import SenderConfig, load_config, load_secrets, write_new_secrets
from station.mosquitto import MosquittoProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_remote_station_tiny_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text('name = "remote"\nseed = 4\nspeed = 400\ncouriers = 1\nparcels = 4\n'
                        'strangers = 1\narrival_delay_s = [1, 20]\nexit_frame_fraction = 0.0\n')
    secrets_path = write_new_secrets(tmp_path / "secrets.toml")
    secrets = load_secrets(secrets_path, env={})
    sms_port = free_port()
    with MosquittoProcess(workdir=tmp_path / "mosquitto") as broker:
        cfg = load_config(ROOT / "examples" / "station.toml")
        cfg = cfg.model_copy(update={
            "station": cfg.station.model_copy(update={"database": str(tmp_path / "st.db"),
                                                      "snapshots_dir": str(tmp_path / "snaps")}),
            "mqtt": cfg.mqtt.model_copy(update={"port": broker.port}),
            "notify": cfg.notify.model_copy(update={
                "senders": [SenderConfig(kind="webhook", url=f"http://127.0.0.1:{sms_port}/sms")],
                "retry_initial_s": 0.2, "retry_max_s": 1.0}),
        })
        station = build_station(cfg, secrets).start()
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(station.app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.01)
        try:
            # a real station's credentials (ADR 0130): a paired kiosk and an admin's session
            accounts = station.core.accounts
            kiosk = accounts.pair(accounts.create_pairing("k1", actor="test"), client="test")[1]
            accounts.add("op", "admin", "remote test password", actor="test")
            operator = accounts.login("op", "remote test password", client="test").session_id
            status = main(["run", "--config", str(ROOT / "examples" / "station.toml"),
                           "--scenario", str(scenario), "--station-url", f"http://127.0.0.1:{port}",
                           "--broker", broker.url, "--secrets", str(secrets_path),
                           "--kiosk-token", kiosk, "--operator-token", operator,
                           "--sms-port", str(sms_port), "--quiet", "--report", str(tmp_path / "report")])
            assert status == 0
            assert (tmp_path / "report" / "report.json").exists()
        finally:
            server.should_exit = True
            station.stop()
