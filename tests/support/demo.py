"""`make demo` as a child process for tests: its printed URLs, courier id and PIN, and every
process it started (to prove none is left behind)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children of children too)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class DemoProcess:
    """`shelf-sim demo` (or the `make demo` recipe, with `make=True`) in a directory of the
    test's, read until it has printed its URLs."""

    def __init__(self, workdir: Path, *, make: bool = False, people: bool = True) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        if make:
            # the recipe as the README runs it; the venv and system packages are already there
            cmd = ["make", "--no-print-directory", "-o", ".venv/.installed", "-o", "system-deps",
                   "demo", f"DEMO_DIR={workdir}", f"BIN={Path(sys.executable).parent}"]
        else:
            cmd = [sys.executable, "-m", "shelf_sim.cli", "demo", "--dir", str(workdir), "--port", "0"]
            if not people:
                cmd.append("--no-people")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.strip().startswith("broker"):
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 90) -> dict[str, Any]:
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            raise AssertionError("demo did not start:\n" + "\n".join(self.lines[-40:]))
        text = "\n".join(self.lines)
        courier = re.search(r"courier\s+(\S+)/courier\s+id (\S+)\s+PIN (\d+)", text)
        assert courier, text
        kiosk = re.search(r"kiosk\s+(\S+)\s+pairing code (\S+)", text)
        operator = re.search(r"operator\s+(\S+)\s+id (\S+)\s+password (\S+)", text)
        assert kiosk and operator, text
        return {
            "base": courier[1], "courier_id": courier[2], "pin": courier[3],
            "kiosk": kiosk[1], "pairing_code": kiosk[2],
            "operator": operator[1], "operator_id": operator[2], "password": operator[3],
            "room": re.search(r"room\s+(\S+)", text)[1],          # type: ignore[index]
        }

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60, group: bool = False) -> int:
        """Send `sig` to the demo (or, `group`, to its whole process group, as Ctrl-C in a
        terminal does) and wait for it to end."""
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise AssertionError("demo did not stop within its time:\n" + "\n".join(self.lines[-40:])) from None

    def kill_all(self) -> None:
        """Leave nothing behind whatever the test found (the process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(pids: set[int], timeout: float = 15) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {p for p in pids if alive(p)}
        if not left:
            return set()
        time.sleep(0.1)
    return {p for p in pids if alive(p)}
