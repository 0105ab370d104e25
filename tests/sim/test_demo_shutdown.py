"""`make demo` stopped by SIGINT or SIGTERM stops its broker, devices, people and station and
leaves no process behind (issue 17: SIGTERM used to leave its Mosquitto running)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.demo import DemoProcess, descendants, wait_gone


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("make", [False, True], ids=["shelf-sim demo", "make demo"])
def test_the_demo_stops_everything_it_started(tmp_path: Path, sig: int, make: bool) -> None:
    demo = DemoProcess(tmp_path / "demo", make=make)
    try:
        demo.wait_ready()
        started = descendants(demo.proc.pid)
        assert any("mosquitto" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                   for p in started if Path(f"/proc/{p}/cmdline").exists()), "the demo's broker"
        # Ctrl-C reaches the terminal's whole foreground group; `kill` reaches make alone
        status = demo.stop(sig, group=sig == signal.SIGINT)
        left = wait_gone(started)
        assert not left, f"left behind after {signal.Signals(sig).name}: {sorted(left)}"
        # 128 + signal: the demo re-raises what stopped it once it has cleaned up; make
        # passes the signal to its recipe, waits for it, and dies of the same signal
        assert status in ((2, -sig) if make else (0, 128 + sig)), (status, demo.lines[-20:])
        assert "demo stopped" in "\n".join(demo.lines)
    finally:
        demo.kill_all()
