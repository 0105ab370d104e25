"""/metrics (issue 17): what Prometheus scrapes matches the station's own state, read from a
live station over a real broker and firmware, parsed with prometheus-client's own parser."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import LiveStation, wait_until

PHONE = "13811112222"
METRICS_ON = {"metrics": {"enabled": True, "port": 0}}


def _scrape(ls: LiveStation) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{ls.station.metrics_port}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _one(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_follow_a_parcel_from_shelf_to_pickup(tmp_path: Path) -> None:
    with LiveStation(tmp_path, http=True, sections=METRICS_ON) as ls:
        cfg = ls.config
        places = sum(s.rows * s.columns * s.capacity for s in cfg.shelves)
        before = _scrape(ls)
        assert _one(before, "ps_shelf_places") == places
        assert _one(before, "ps_shelf_places_free") == places
        for device in cfg.device_ids:
            assert _one(before, "ps_device_online", device=device) == 1
        assert _one(before, "ps_door_locked", door=cfg.doors.entry) == 1

        core = ls.core
        core.couriers.add("c1", "SF", "Li", "1234")
        s = core.shelving.open_session("c1")
        r = core.shelving.scan(s["session_id"], "SF1234567890123", PHONE, "S")
        ls.put(r.slot)
        code = ls.wait_code_for(PHONE)
        shelved = wait_until(lambda: (m := _scrape(ls)) and
                             m.get(("ps_parcels", (("direction", "in"), ("state", "shelved")))) == 1 and m)
        assert _one(shelved, "ps_shelf_places_free") == places - 1
        # the courier's lights went out and came back: every command's outcome is a sample
        assert _one(shelved, "ps_command_round_trip_seconds_count", op="lights.set", outcome="acked") >= 1

        res = httpx.post(ls.base_url + "/api/kiosk/code", json={"code": code}, timeout=30,
                         headers={"Authorization": "Bearer " + ls.token("kiosk", "kiosk-1")})
        assert res.status_code == 200, res.text
        inside = _scrape(ls)
        assert _one(inside, "ps_sessions_open", kind="pickup") == 1
        assert _one(inside, "ps_entry_seconds_count", method="code") == 1
        assert _one(inside, "ps_command_round_trip_seconds_count", op="unlock", outcome="acked") >= 1
        assert _one(inside, "ps_disk_free_bytes", what="database") > 0
        assert _one(inside, "ps_database_bytes") > 0
        assert 0 < _one(inside, "ps_event_log_last_seq") <= core.ctx.store.last_seq
        assert ("ps_upstream_lag_events", ()) not in inside  # no [upstream] configured


def test_a_taken_metrics_port_costs_the_metrics_not_the_station(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with LiveStation(tmp_path, sections={"metrics": {"enabled": True, "port": port}}) as ls:
            assert ls.station.metrics_port is None
            assert ls.station.link.is_online(ls.config.doors.entry)


def test_the_sample_grafana_dashboard_asks_only_for_metrics_the_station_exports(tmp_path: Path) -> None:
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    dash = json.loads((root / "examples" / "grafana" / "parcel-station.json").read_text())
    asked = {re.sub(r"_(bucket|count|sum)$", "", m)
             for p in dash["panels"] for t in p["targets"] for m in re.findall(r"\bps_[a-z_]+", t["expr"])}
    with LiveStation(tmp_path, sections=METRICS_ON) as ls:
        text = httpx.get(f"http://127.0.0.1:{ls.station.metrics_port}/metrics", timeout=10).text
    exported = {fam.name for fam in text_string_to_metric_families(text)}
    # lag is exported only with [upstream] configured
    assert asked - exported <= {"ps_upstream_lag_events"}, asked - exported
    assert len(asked) >= 12
