"""A Mosquitto broker run as a child process.

The demo and the tests own their broker (DESIGN §7): a fresh one on a free loopback port that
they can stop and restart to play an outage, never the site broker that may be running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(RuntimeError):
    """The broker binary is missing or did not come up."""


def find_mosquitto() -> str:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise BrokerError(
        "mosquitto not found: install it with `apt-get install mosquitto` (make test does this as root)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise BrokerError(f"nothing is listening on {host}:{port} after {timeout:.0f} s")


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP socket listening on `port` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


@dataclass
class MosquittoProcess:
    """One broker on a loopback port; `stop()` and `start()` again keep the same port.

    `extra_conf` lines are appended verbatim (password_file, acl_file ...). Running as root,
    Mosquitto drops to the `mosquitto` user before reading those files, so they must be
    readable by it; we set `user root` instead when we are root to keep test files private.

    A credentialed broker (a `password_file` line) also gets `use_username_as_clientid true`,
    as examples/mosquitto-acl does (ADR 0080): otherwise one device's password with another
    device's client id takes that device's session over, and the broker publishes the
    victim's last will ("offline") for it.

    Persistence is on, as in production (ADR 0084): retained messages, persistent sessions
    and the QoS 1 messages queued for them are written to `workdir/data/mosquitto.db` at
    every clean stop and every `autosave_interval_s`, and read back at start. What Mosquitto
    promises: a clean stop (SIGTERM) keeps everything; after SIGKILL only what the last save
    held survives, so anything queued since then can be lost at the broker. `save()` forces a
    save (SIGUSR1), `kill()` is the power cut.
    """

    port: int = 0
    host: str = "127.0.0.1"
    workdir: Path | None = None
    extra_conf: list[str] = field(default_factory=list)
    persistence: bool = True
    # the window a SIGKILL can lose; a save rewrites the whole (small) file, a few ms here
    autosave_interval_s: int = 5
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    # a port we chose may be taken by another process between choosing and binding; until the
    # broker has listened once we may move, after that `restart()` keeps the port clients know
    _port_movable: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(self.host)
            self._port_movable = True
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="ps-mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "mosquitto.conf"

    @property
    def data_dir(self) -> Path:
        """The broker's own directory for its persistence file (nothing else lives there)."""
        assert self.workdir is not None
        return self.workdir / "data"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "mosquitto.db"

    def write_conf(self) -> Path:
        persistence = ["persistence false"]
        if _sets(self.extra_conf, "persistence", "persistence_location", "autosave_interval",
                 "autosave_on_changes"):
            persistence = []  # the caller's own persistence lines (Mosquitto refuses duplicates)
        elif self.persistence:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            persistence = ["persistence true", f"persistence_location {self.data_dir}/",
                           f"autosave_interval {int(self.autosave_interval_s)}"]
        lines = [
            f"listener {self.port} {self.host}",
            "set_tcp_nodelay true",  # DESIGN §7: 88 ms -> 0.5 ms round trips
            *persistence,
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_inflight_messages 100",
            "max_queued_messages 10000",
        ]
        if not any(line.startswith("allow_anonymous") for line in self.extra_conf):
            lines.append("allow_anonymous true")
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        if _credentialed(self.extra_conf) and not any(
                line.startswith("use_username_as_clientid") for line in self.extra_conf):
            lines.append("use_username_as_clientid true")
        lines.extend(self.extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n")
        return self.conf_path

    def start(self, timeout: float = 10.0) -> MosquittoProcess:
        if self.running:
            return self
        for _attempt in range(5):
            if self._spawn(timeout):
                self._port_movable = False
                return self
            self.port = free_port(self.host)  # someone took the port we chose: another one
        raise BrokerError(f"mosquitto found every port it was given taken; see {self._log_path}")

    @property
    def _log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "mosquitto.log"

    def _spawn(self, timeout: float) -> bool:
        """Start the broker and wait until it listens; False if its chosen port was taken."""
        binary = find_mosquitto()
        self.write_conf()
        log_start = self._log_path.stat().st_size if self._log_path.exists() else 0
        with open(self._log_path, "ab") as log:
            proc = self._proc = subprocess.Popen(
                [binary, "-c", str(self.conf_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            # a connection alone could reach whoever took the port: the listener must be ours
            if _listens(proc.pid, self.port):
                return True
            time.sleep(0.02)
        self.stop()
        with open(self._log_path, "rb") as log:
            log.seek(log_start)
            said = log.read().decode(errors="replace")
        if self._port_movable and "Address already in use" in said:
            return False
        raise BrokerError(f"mosquitto did not start on port {self.port}; see {self._log_path}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: no last save; whatever was queued since the previous save is gone."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    def save(self, timeout: float = 5.0) -> None:
        """Make the broker write its persistence file now (SIGUSR1) and wait until it has."""
        if not self.persistence or self._proc is None:
            raise BrokerError("no running broker with persistence to save")
        before = self._db_stamp()
        self._proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while self._db_stamp() == before:
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not write {self.db_path} within {timeout:.0f} s")
            time.sleep(0.01)

    def _db_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.db_path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def __enter__(self) -> MosquittoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sets(conf: list[str], *keys: str) -> bool:
    return any(line.split(None, 1)[0] in keys for line in conf if line.strip())


def _credentialed(conf: list[str]) -> bool:
    return any(line.split(None, 1)[0] in ("password_file", "auth_plugin", "plugin")
               for line in conf if line.strip())
