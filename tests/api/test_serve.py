"""A stop signal that lands while the HTTP server is still starting is a stop, not a failure.

uvicorn.run turned a Ctrl-C in its first milliseconds into exit status 3 ("startup
failure"): CI saw `shelf-sim demo` stopped by SIGINT exit with 3. The signal is sent here at
spread moments across the server's start, many times, to the real process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support.demo import ROOT

SERVER = """
import signal, sys, time
from fastapi import FastAPI
from station.api.serve import ServeError, serve

app = FastAPI()
# like the demo: SIGTERM unwinds as SystemExit(143) through the caller's `finally`
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
print("serving", flush=True)
try:
    serve(app, "127.0.0.1", int(sys.argv[1]))
except KeyboardInterrupt:
    sys.exit(0)
except ServeError as exc:
    print(exc, flush=True)
    sys.exit(2)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "serving"
    return proc


def _signal_while_starting(sig: int, delay_ms: int) -> tuple[int, str]:
    proc = _start(_free_port())
    try:
        time.sleep(delay_ms / 1000)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()  # a server that ignored the signal must not outlive the test
        proc.wait()
    return proc.returncode, out


@pytest.mark.parametrize("delay_ms", [0, 1, 2, 3, 5, 8, 12, 20, 40, 80])
def test_a_ctrl_c_while_the_server_starts_is_a_clean_stop(delay_ms: int) -> None:
    status, out = _signal_while_starting(signal.SIGINT, delay_ms)
    assert status == 0, (delay_ms, status, out)


@pytest.mark.parametrize("delay_ms", [0, 1, 2, 3, 5, 8, 12, 20, 40, 80])
def test_a_sigterm_while_the_server_starts_reaches_the_callers_handler_once_it_has_stopped(
        delay_ms: int) -> None:
    """The caller's SIGTERM handler raises SystemExit: run inside the event loop (before
    uvicorn's own handlers were in place) it tore the loop down with a traceback and exit 1."""
    status, out = _signal_while_starting(signal.SIGTERM, delay_ms)
    assert status == 128 + signal.SIGTERM, (delay_ms, status, out)
    assert "Traceback" not in out, out


def test_a_server_that_cannot_listen_says_where() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(port)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2, out
    assert f"could not start on 127.0.0.1:{port}" in out
