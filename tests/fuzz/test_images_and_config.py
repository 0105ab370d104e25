"""Hostile images to every image route, hostile config and secrets files to the CLI.

Images: empty, garbage, truncated JPEG/PNG, bit-flipped, a decompression bomb (a small PNG
that declares 20000 x 20000 pixels), 9 MB over the limit, GIF/PDF/SVG, a PNG sent as
text/plain, JSON where an image belongs. Each must be refused with a 4xx JSON error (or, for
a well-formed picture with nothing in it, a 4xx "nothing read"), never a 500, and the
station answers /api/health afterwards.

Config files: binary garbage, truncated TOML, 20 MB, a directory, a PNG, JSON, wrong value
types, unknown keys, a missing file, and a subset of them for the secrets file and for `station log
verify --db` (a database that is not one). Each must end with exit code 2, one clear line on
stderr (opening with `error:`, a few lines at most) and no traceback.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from tests.reliability.harness import EXAMPLE, PY, ROOT, ProcStation, shelve


def _png(w: int = 64, h: int = 48, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), 200 if mode == "L" else (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(w: int = 64, h: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((w, h), 40).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000), 0).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _flipped(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(8):
        out[rng.randrange(20, len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def hostile_images() -> list[tuple[str, bytes, str]]:
    png, jpeg = _png(), _jpeg()
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    return [
        ("empty", b"", "image/png"),
        ("garbage", random.Random(1).randbytes(5000), "image/jpeg"),
        ("truncated jpeg", jpeg[: len(jpeg) // 2], "image/jpeg"),
        ("truncated png", png[: len(png) // 2], "image/png"),
        ("header only", png[:33], "image/png"),
        ("bit-flipped jpeg", _flipped(jpeg, 2), "image/jpeg"),
        ("bit-flipped png", _flipped(png, 3), "image/png"),
        ("bomb", _bomb(), "image/png"),
        ("over the limit", b"\xff\xd8\xff" + b"\0" * (9 * 1024 * 1024), "image/jpeg"),
        ("gif", gif.getvalue(), "image/gif"),
        ("pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "image/jpeg"),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "image/svg+xml"),
        ("png as text", png, "text/plain"),
        ("json", json.dumps({"frames": ["not base64!"]}).encode(), "application/json"),
        ("tiny png", _png(1, 1, "L"), "image/png"),
        ("blank picture", _png(320, 240), "image/png"),
    ]


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcStation]:
    with ProcStation(tmp_path_factory.mktemp("images")) as ps:
        ps.start()
        shelve(ps, [("SF0000000000001", "13900000001")])
        yield ps


def test_hostile_images_are_refused_cleanly_on_every_image_route(station: ProcStation) -> None:
    ps = station
    sid = ps.api("post", "/api/courier/sessions", "courier", "c1", json={}).json()["session_id"]
    routes = [
        (f"/api/courier/sessions/{sid}/scan-frame", "courier", "c1"),
        ("/api/kiosk/qr-frame", "kiosk", "kiosk-1"),
        ("/api/kiosk/courier/face", "kiosk", "kiosk-1"),
        ("/api/exit/frame", "kiosk", "exit-1"),
        ("/api/operator/couriers/c1/face", "operator", "op-1"),
    ]
    problems = []
    for path, role, subject in routes:
        for name, body, ctype in hostile_images():
            res = ps.api("post", path, role, subject, content=body, headers={"content-type": ctype})
            ok = 400 <= res.status_code < 500 or (
                res.status_code == 503 and res.json().get("error") == "camera_unavailable")
            try:
                error = res.json().get("error")
            except ValueError:
                error = None
            if not ok or not error:
                problems.append(f"{path} <- {name} ({ctype}): {res.status_code} {res.text[:200]}")
            if "Traceback" in res.text or 'File "' in res.text:
                problems.append(f"{path} <- {name}: a traceback in the answer")
        assert ps.running and ps.http.get("/api/health").status_code == 200, f"after {path}"
    assert not problems, "\n".join(problems)
    assert ps.controller("door-entry").hal.locked and ps.controller("door-exit").hal.locked
    assert ps.verify_log().returncode == 0


# --- config and secrets files ---------------------------------------------------------------


def _cases(tmp: Path) -> list[tuple[str, Path]]:
    good = EXAMPLE.read_text()
    files: dict[str, bytes | None] = {
        "garbage": random.Random(4).randbytes(4096),
        "truncated": good[: len(good) // 2].encode(),
        "cut mid-string": good[: good.index("Riverside") + 3].encode(),
        "huge": good.encode() + b"\n# padding\n" + (b"x = 1\n" * 10 + b"#" * 1000 + b"\n") * 20000,
        "png": _png(),
        "json": json.dumps({"station": {"id": "st-1"}}).encode(),
        "wrong types": good.replace("port = 1883", 'port = "eighteen"').replace("rows = 5", "rows = -5").encode(),
        "unknown key": good.replace("[mqtt]", "[mqtt]\nhostname = \"x\"").encode(),
        "utf-16": good.encode("utf-16"),
        "empty": b"",
        "directory": None,
        "missing": None,
    }
    out = []
    for name, data in files.items():
        path = tmp / f"{name.replace(' ', '-')}.toml"
        if name == "directory":
            path.mkdir()
        elif data is not None:
            path.write_bytes(data)
        out.append((name, path))
    return out


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "station.cli", *argv], check=False, capture_output=True, text=True, cwd=ROOT,
                          timeout=60, stdin=subprocess.DEVNULL)


def _clear_refusal(res: subprocess.CompletedProcess[str], what: str) -> str | None:
    """Exit 2, no traceback, stderr opening with "error:" and naming the file, short."""
    text = res.stdout + res.stderr
    if res.returncode != 2 or "Traceback" in text or 'File "' in text:
        return f"{what}: exit {res.returncode}\n{text[-1500:]}"
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    if not lines or not lines[0].lower().startswith("error") or len(lines) > 12:
        return f"{what}: not a short clear error: {res.stderr[-800:]!r}"
    return None


def _all(jobs: list[tuple[str, list[str]]]) -> list[str]:
    """Run the CLI for each job, two at a time (each is a fresh interpreter)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: (job[0], _run(job[1])), jobs))
    return [p for what, res in results if (p := _clear_refusal(res, what))]


def test_hostile_config_files_end_with_exit_2_and_a_clear_message(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    subprocess.run([PY, "-m", "station.cli", "init-secrets", str(secrets)], check=True, cwd=ROOT,
                   capture_output=True)
    jobs = [(f"run --config <{name}>", ["run", "--config", str(path), "--secrets", str(secrets), "--port", "1"])
            for name, path in _cases(tmp_path)]
    problems = _all(jobs)
    assert not problems, "\n\n".join(problems)


SOME = {"garbage", "truncated", "png", "utf-16", "empty", "directory", "missing"}


def test_hostile_secrets_files_and_databases_end_with_exit_2_and_a_clear_message(tmp_path: Path) -> None:
    cases = [(n, p) for n, p in _cases(tmp_path) if n in SOME]
    short = tmp_path / "short-keys.toml"
    short.write_text('device_master_key = "00"\nhash_key = "00"\nencryption_key = "00"\ntoken_key = "00"\n')
    jobs = [(f"run --secrets <{name}>", ["run", "--config", str(EXAMPLE), "--secrets", str(path), "--port", "1"])
            for name, path in cases + [("short keys", short)]]
    jobs += [(f"log verify --db <{name}>", ["log", "verify", "--db", str(path)])
             for name, path in cases if name != "missing"]
    jobs += [(f"log verify --config <{name}>", ["log", "verify", "--config", str(path)])
             for name, path in cases]
    problems = _all(jobs)
    assert not problems, "\n\n".join(problems)
