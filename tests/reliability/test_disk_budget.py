"""The disk budget under `station run` on a real small disk (#16.3, #14.13): below the
reserve a courier's scan is refused with 507 and a sentence before anything is reserved or
lit, the operator sees a `disk.critical` alarm, a customer's pickup goes on, and shelving
resumes by itself once space is freed. Runs as root (a 24 MiB tmpfs), skipped otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.reliability.harness import ProcStation, shelve, until
from tests.support.tmpfs import needs_mount, small_tmpfs

PHONE_A, PHONE_B = "13800002222", "13800003333"


@needs_mount
def test_below_the_reserve_station_run_refuses_shelving_clearly_and_pickups_go_on(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", 24) as disk:
        with ProcStation(tmp_path / "st", database=str(disk / "station.db"), snapshots_dir=str(disk / "snapshots"),
                         disk={"alarm_free_mb": 12, "refuse_free_mb": 6, "check_interval_s": 1.0}) as ps:
            ps.start()
            parcels = shelve(ps, [("SF0000000000001", PHONE_A)])
            sid = ps.api("post", "/api/courier/sessions", "courier", "c1", json={}).json()["session_id"]
            filler = disk / "filler"
            with open(filler, "wb") as fh:
                fh.write(b"\0" * (shutil.disk_usage(disk).free - 4 * 1024 * 1024))  # 4 MiB left
            lit_before = ps.query("SELECT COUNT(*) AS n FROM pending_placements")[0]["n"]
            res = ps.api("post", f"/api/courier/sessions/{sid}/scans", "courier", "c1",
                         json={"waybill": "SF0000000000002", "phone": PHONE_B, "size": "S"})
            assert res.status_code == 507, res.text
            body = res.json()
            assert body["error"] == "storage_full" and "nearly full" in body["message"] \
                and "pickups go on" in body["message"], body
            assert ps.query("SELECT COUNT(*) AS n FROM pending_placements")[0]["n"] == lit_before
            until(lambda: ps.query("SELECT 1 FROM alarms WHERE kind = 'disk.critical'"), 15,
                  "the operator is alarmed")
            # the customer still gets in (and out) with their code
            code = parcels["SF0000000000001"]["code"]
            res = ps.api("post", "/api/kiosk/code", "kiosk", json={"code": code})
            assert res.status_code == 200, res.text
            filler.unlink()
            res = until(lambda: (r := ps.api("post", f"/api/courier/sessions/{sid}/scans", "courier", "c1",
                                              json={"waybill": "SF0000000000003", "phone": PHONE_B,
                                                    "size": "S"})).status_code == 200 and r, 10,
                        "shelving resumes once there is space")
            verify = ps.verify_log()
            assert verify.returncode == 0, verify.stdout + verify.stderr
