"""#14.7: request bodies are capped at the edge, and a caller's token is checked before the
body is read.

Three parallel 200 MiB bodies with a made-up bearer token pushed `station run` to 1.7 GiB:
FastAPI read every body before the route's token dependency ran. Now a missing, forged or
expired token is refused (401) before a byte of the body is read, and bodies are capped per
route (JSON 64 KiB, image routes at the image gate's 8 MiB) while they stream, with or
without Content-Length (ADR 0083).

The flood test runs the real process and many raw-socket clients at once, each starting a
200 MiB body (chunked or with a declared length) at JSON, image and public routes with no
token, a made-up token or a genuine one. Every one must get 401 or 413 (which one is exact
per client), and the station's resident memory, sampled from /proc/PID/status throughout,
must grow by less than 150 MiB. The clients stop sending once the bound is broken, so on the
old code the test fails quickly instead of exhausting the machine.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from station.api.app import JSON_BODY_LIMIT
from station.api.images import MAX_IMAGE_BYTES
from tests.reliability.harness import ProcStation, until

MiB = 1024 * 1024
HUGE = 200 * MiB
CHUNK = 256 * 1024
RSS_GROWTH_BOUND = 150 * MiB
FORGED = "ps1.operator.op-1.9999999999.AAAAAAAAAAAAAAAAAAAAAAAA"


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Flood:
    """One client: a POST whose body would be `total` bytes, sent until the server answers."""

    path: str
    token: str | None
    chunked: bool
    expect: int
    total: int = HUGE
    status: int | str | None = None
    sent: int = 0
    headers: list[str] = field(default_factory=list)

    def run(self, port: int, stop: threading.Event) -> None:
        try:
            self.status = self._run(port, stop)
        except OSError as exc:
            self.status = f"{type(exc).__name__}"

    def _run(self, port: int, stop: threading.Event) -> int | str:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        try:
            head = [f"POST {self.path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
                    *self.headers]
            if self.token:
                head.append(f"Authorization: Bearer {self.token}")
            head.append("Transfer-Encoding: chunked" if self.chunked else f"Content-Length: {self.total}")
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            piece = b"7" * CHUNK
            frame = b"%x\r\n%s\r\n" % (CHUNK, piece) if self.chunked else piece
            try:
                while self.sent < self.total:
                    if stop.is_set():
                        return "aborted: the memory bound was broken"
                    if select.select([sock], [], [], 0)[0]:
                        break  # the server answered before the body ended
                    sock.sendall(frame)
                    self.sent += CHUNK
                else:
                    if self.chunked:
                        sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # refused and closed while we were still sending: read what it said
            return _status(sock)
        finally:
            sock.close()


def _status(sock: socket.socket) -> int | str:
    data = b""
    while b"\r\n" not in data:
        more = sock.recv(4096)
        if not more:
            return f"closed without an answer ({data!r})"
        data += more
    return int(data.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def ps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcStation]:
    with ProcStation(tmp_path_factory.mktemp("bodies") / "st") as station:
        station.start()
        res = station.api("post", "/api/operator/couriers", "operator",
                          json={"courier_id": "c1", "carrier": "SF", "name": "Li", "pin": "2468"})
        assert res.status_code == 201, res.text
        yield station


def test_many_huge_bodies_at_once_are_refused_and_memory_stays_bounded(ps: ProcStation) -> None:
    assert ps.proc is not None
    pid = ps.proc.pid
    kiosk, operator = ps.token("kiosk"), ps.token("operator")
    floods: list[Flood] = []
    for chunked in (True, False):
        floods += [Flood("/api/operator/couriers", FORGED, chunked, 401) for _ in range(3)]
        floods += [Flood("/api/kiosk/code", None, chunked, 401) for _ in range(2)]
        floods += [Flood("/api/operator/couriers/c1/face", FORGED, chunked, 401)]
        floods += [Flood("/api/kiosk/code", kiosk, chunked, 413) for _ in range(3)]
        floods += [Flood("/api/courier/login", None, chunked, 413) for _ in range(2)]
        floods += [Flood("/api/operator/couriers/c1/face", operator, chunked, 413) for _ in range(2)]
        floods += [Flood("/api/kiosk/qr-frame", kiosk, chunked, 413)]
    # a warm-up of each kind, so the baseline includes the code paths, not just an idle process
    for warm in (Flood("/api/kiosk/code", FORGED, True, 401, total=4 * MiB),
                 Flood("/api/kiosk/code", kiosk, True, 413, total=4 * MiB),
                 Flood("/api/operator/couriers/c1/face", operator, True, 413, total=12 * MiB)):
        warm.run(ps.port, threading.Event())
    baseline = rss(pid)
    peak = baseline
    stop, done = threading.Event(), threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss(pid))
            if peak - baseline > RSS_GROWTH_BOUND:
                stop.set()
            done.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=f.run, args=(ps.port, stop), daemon=True) for f in floods]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    watcher.join(5)

    growth = peak - baseline
    wrong = [(f.path, "chunked" if f.chunked else "length", bool(f.token), f.expect, f.status)
             for f in floods if f.status != f.expect]
    assert growth < RSS_GROWTH_BOUND, f"RSS grew {growth / MiB:.0f} MiB (baseline {baseline / MiB:.0f} MiB)"
    assert not wrong, f"{len(wrong)} of {len(floods)} answered otherwise: {wrong}"
    # what the clients got through before the answer: a JSON route never took more than its cap
    # plus what sat in socket buffers; the body itself was never read for a refused token
    sent = sum(f.sent for f in floods)
    assert sent < len(floods) * HUGE // 4, f"{sent / MiB:.0f} MiB were taken in"
    print(f"\n{len(floods)} clients, peak RSS growth {growth / MiB:.1f} MiB, {sent / MiB:.0f} MiB sent in all")
    # and the station is still here, answering normally
    assert ps.api("get", "/api/health").status_code == 200
    assert ps.api("get", "/api/operator/couriers", "operator").status_code == 200


def test_caps_are_per_route_and_exact(ps: ProcStation) -> None:
    kiosk, operator = ps.token("kiosk"), ps.token("operator")
    big_json = b'{"code": "' + b"1" * (JSON_BODY_LIMIT - 12) + b'"}'
    assert len(big_json) == JSON_BODY_LIMIT
    # at the limit the body is read and judged on its content (422: not a code)
    res = ps.http.post("/api/kiosk/code", content=big_json,
                       headers={"Authorization": f"Bearer {kiosk}", "Content-Type": "application/json"})
    assert res.status_code == 422, res.text
    res = ps.http.post("/api/kiosk/code", content=big_json + b" ",
                       headers={"Authorization": f"Bearer {kiosk}", "Content-Type": "application/json"})
    assert res.status_code == 413 and res.json()["error"] == "body_too_large", res.text
    # an image route takes up to the image gate's limit (and then judges the image: 422)
    res = ps.http.post("/api/operator/couriers/c1/face", content=b"\xff" * MAX_IMAGE_BYTES,
                       headers={"Authorization": f"Bearer {operator}", "Content-Type": "image/jpeg"})
    assert res.status_code == 422, res.text
    res = ps.http.post("/api/operator/couriers/c1/face", content=b"\xff" * (MAX_IMAGE_BYTES + 1),
                       headers={"Authorization": f"Bearer {operator}", "Content-Type": "image/jpeg"})
    assert res.status_code == 413, res.text
    # a forged or expired token is refused before the body: even a malformed small body gets 401
    for token in (FORGED, ps.token("kiosk")[:-2] + "xx"):
        res = ps.http.post("/api/kiosk/code", content=b"{not json",
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert res.status_code == 401 and res.json()["error"] == "invalid_token", res.text
    # a chunked body over the cap, from a genuine caller
    flood = Flood("/api/kiosk/code", kiosk, True, 413, total=2 * MiB)
    flood.run(ps.port, threading.Event())
    assert flood.status == 413 and flood.sent <= 2 * MiB
    until(lambda: ps.api("get", "/api/health").status_code == 200, 5, "the station answers")
