"""No phone number, PIN, pickup code or face template in clear anywhere the station writes.

One workload through `station run` (a child process, logging at DEBUG, its stdout and
stderr captured): couriers with PINs (right and wrong), a face enrolment from a real
photograph, parcels for several phones, entries by code and by one-time code, a one-time
code asked for a phone with nothing waiting, refusals with error messages, an SMS gateway
outage, the exit. Then every byte the station left behind is searched: the database file
and its WAL (copied while the station runs), the station's output, `station log export`
(JSONL and CSV), `station log tail`, a replayed database, the operator's HTTP export and
every HTTP response body the workload received (error messages included).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from station.vision.templates import TemplateCipher, TemplateError
from tests.reliability.harness import PY, ROOT, ProcStation, until

PIN = "90817263"
OTHER_PIN = "55512340"
PHONES = ["13900000007", "15811112222", "18633334444"]
NOBODY = "13712345678"  # asks for a one-time code with nothing waiting
FACE = ROOT / "tests" / "data" / "cache" / "faces" / "obama-1.png"


def _workload(ps: ProcStation, responses: list[str]) -> dict[str, list[str]]:
    def call(method: str, path: str, role: str | None = None, subject: str | None = None, **kw):  # type: ignore[no-untyped-def]
        res = ps.api(method, path, role, subject, **kw)
        responses.append(f"{method} {path} {res.status_code} {res.text}")
        return res

    assert call("post", "/api/operator/couriers", "operator",
                json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": PIN}).status_code == 201
    assert call("post", "/api/operator/couriers", "operator",
                json={"courier_id": "c2", "carrier": "SF", "name": "Wu", "pin": OTHER_PIN}).status_code == 201
    assert call("post", "/api/courier/login", json={"courier_id": "c1", "pin": PIN}).status_code == 200
    assert call("post", "/api/courier/login", json={"courier_id": "c2", "pin": PIN}).status_code == 401
    assert call("post", "/api/kiosk/courier/pin", "kiosk", "kiosk-1",
                json={"courier_id": "c2", "pin": OTHER_PIN}).status_code == 200
    enrolled = call("post", "/api/operator/couriers/c1/face", "operator", content=FACE.read_bytes(),
                    headers={"content-type": "image/png"})
    assert enrolled.status_code == 200, enrolled.text

    sid = call("post", "/api/courier/sessions", "courier", "c1", json={}).json()["session_id"]
    # refusals whose messages must not echo what was typed
    call("post", f"/api/courier/sessions/{sid}/scans", "courier", "c1",
         json={"waybill": "SF0000000000009", "phone": PHONES[0][:-1], "size": "S"})
    call("post", f"/api/courier/sessions/{sid}/scans", "courier", "c1",
         json={"waybill": "SF0000000000009", "phone": PHONES[0] + "9", "size": "S"})
    call("post", f"/api/courier/sessions/{sid}/scans", "courier", "c1",
         json={"waybill": "NOT-A-WAYBILL", "phone": PHONES[1], "size": "S"})
    for n, phone in enumerate(PHONES + PHONES[:1], start=1):
        res = call("post", f"/api/courier/sessions/{sid}/scans", "courier", "c1",
                   json={"waybill": f"SF{n:013d}", "phone": f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}",
                         "size": "S"})
        assert res.status_code == 200, res.text
        ps.put(res.json()["slot"])
    # the SMS gateway is down for a while: the dispatcher retries and logs it
    assert ps.webhook is not None
    ps.webhook.up = False
    res = call("post", "/api/kiosk/otp/request", "kiosk", "kiosk-1", json={"phone": PHONES[1]})
    assert res.status_code == 200
    call("post", "/api/kiosk/otp/request", "kiosk", "kiosk-1", json={"phone": NOBODY})
    until(lambda: "webhook" in ps.log_tail(100_000) or ps.query(
        "SELECT 1 FROM outbox WHERE attempts > 0"), 10, "a failed delivery")
    ps.webhook.up = True
    until(lambda: len(ps.messages("pickup_code")) >= 4 and ps.messages("otp"), 15, "messages delivered")
    codes = [m["code"] for m in ps.messages("pickup_code")]
    qrs = [m["qr"] for m in ps.messages("pickup_code")]
    otp = ps.messages("otp")[0]["code"]

    call("post", "/api/kiosk/code", "kiosk", "kiosk-1", json={"code": codes[0][:-1] + "x"})
    wrong = codes[0][:-1] + str((int(codes[0][-1]) + 1) % 10)
    assert call("post", "/api/kiosk/code", "kiosk", "kiosk-1", json={"code": wrong}).status_code == 401
    assert call("post", "/api/kiosk/code", "kiosk", "kiosk-1", json={"code": codes[0]}).status_code == 200
    assert call("post", "/api/kiosk/otp/verify", "kiosk", "kiosk-2",
                json={"phone": PHONES[1], "otp": otp}).status_code == 200
    call("post", "/api/kiosk/qr", "kiosk", "kiosk-1", json={"payload": qrs[2]})
    call("post", "/api/exit/waybills", "kiosk", "exit-1", json={"waybills": ["SF0000000000001"]})
    call("get", "/api/operator/events", "operator", params={"phone": PHONES[0]})
    call("get", "/api/operator/parcels", "operator")
    call("get", "/api/operator/state", "operator")
    call("get", "/api/operator/couriers", "operator")
    return {"codes": codes, "qrs": qrs}


def _needles(ps: ProcStation, issued: dict[str, list[str]], template: np.ndarray) -> dict[str, bytes]:
    needles: dict[str, bytes] = {}
    for phone in PHONES + [NOBODY]:
        needles[f"phone {phone}"] = phone.encode()
        needles[f"phone {phone} (+86)"] = f"86{phone}".encode()
    needles["PIN c1"] = PIN.encode()
    needles["PIN c2"] = OTHER_PIN.encode()
    for code in issued["codes"]:
        needles[f"code {code}"] = code.encode()
    for qr in issued["qrs"]:
        needles[f"qr {qr}"] = qr.split(":")[-1].encode()  # its tag
    row = np.asarray(template, dtype="<f4").reshape(-1)
    needles["template float32"] = row[:8].tobytes()
    needles["template float64"] = row[:4].astype("<f8").tobytes()
    needles["template text"] = repr(float(row[0])).encode()
    needles["template text f32"] = f"{float(row[0]):.7f}".encode()
    return needles


def test_no_personal_data_in_clear_in_any_file_log_export_or_message(tmp_path: Path) -> None:
    responses: list[str] = []
    with ProcStation(tmp_path / "st", env={"PS_LOG_LEVEL": "DEBUG"}) as ps:
        ps.start()
        issued = _workload(ps, responses)

        # templates on disk: ciphertext that only the station's key (and the courier id) opens
        cipher = TemplateCipher(ps.secrets.encryption_key)
        blobs = ps.query("SELECT courier_id, blob FROM face_templates")
        assert blobs and all(r["courier_id"] == "c1" for r in blobs)
        template = cipher.decrypt(blobs[0]["blob"], "c1")
        assert template.shape[-1] == 128 and 0.5 < float(np.linalg.norm(template[0])) < 2.0
        for wrong in (lambda b: cipher.decrypt(b, "c2"),
                      lambda b: TemplateCipher(bytes(32)).decrypt(b, "c1")):
            try:
                wrong(blobs[0]["blob"])
            except TemplateError:
                pass
            else:
                raise AssertionError("a template opened with the wrong key or courier id")
        # removing the courier removes their templates
        assert ps.api("delete", "/api/operator/couriers/c1", "operator").status_code == 200
        assert not ps.query("SELECT 1 FROM face_templates WHERE courier_id = 'c1'")

        out = tmp_path / "out"
        out.mkdir()
        for name in ("station.db", "station.db-wal"):  # the WAL as it is while running
            src = ps.db_path.parent / name
            if src.exists():
                shutil.copy(src, out / f"live-{name}")
        db = str(ps.db_path)
        cli = [PY, "-m", "station.cli", "log"]
        runs = [
            cli + ["export", "--db", db, "--format", "jsonl", "--out", str(out / "export.jsonl")],
            cli + ["export", "--db", db, "--format", "csv", "--out", str(out / "export.csv")],
            cli + ["tail", "--db", db, "-n", "100000"],
            cli + ["replay", "--db", db, "--out", str(out / "replayed.db")],
            cli + ["verify", "--db", db],
        ]
        for argv in runs:
            res = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
            assert res.returncode == 0, res.stderr
            (out / f"cli-{argv[4]}-{len(list(out.iterdir()))}.txt").write_text(res.stdout + res.stderr)
        http_export = ps.api("get", "/api/operator/events/export", "operator")
        assert http_export.status_code == 200
        (out / "http-export.jsonl").write_bytes(http_export.content)
        (out / "responses.txt").write_text("\n".join(responses))
        needles = _needles(ps, issued, template)
    # stopped: the WAL is checkpointed into the file; the station's output is complete
    assert "DEBUG" in ps.log_path.read_text() or "INFO" in ps.log_path.read_text()

    secret_files = {ps.secrets_path, ps.config_path}
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p not in secret_files]
    assert any(p.name == "station.log" for p in files) and any(p.name.endswith(".jsonl") for p in files)
    leaks = []
    for path in files:
        data = path.read_bytes()
        for what, needle in needles.items():
            if needle in data:
                at = data.index(needle)
                leaks.append(f"{what} in {path.relative_to(tmp_path)}: ...{data[max(0, at - 60):at + 60]!r}...")
    assert not leaks, "\n".join(leaks)
    # the masked forms are what operators see
    assert b"139****0007" in (tmp_path / "out" / "export.jsonl").read_bytes()
