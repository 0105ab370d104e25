"""A throwaway PostgreSQL cluster run as a child process (tests, benches, `fleet demo`).

Like `station.mosquitto.MosquittoProcess`: initdb + pg_ctl in a temporary directory on a free
loopback port, never the server that may be running on the machine. PostgreSQL refuses to
run as root, so when we are root the cluster belongs to a system user (`postgres`, created
by Debian's package) and every binary runs as that user; the data directory lives under
/tmp (not under pytest's root-only tmp_path) so that user can reach it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from station.mosquitto import free_port, wait_for_port

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
                     "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/14/bin")
SERVICE_USER = "postgres"


class PostgresError(RuntimeError):
    """The PostgreSQL binaries are missing or the cluster did not come up."""


def find_pg_bin() -> Path:
    env = os.environ.get("PS_PG_BIN")
    candidates = ([env] if env else []) + list(PG_BIN_CANDIDATES)
    for c in candidates:
        if c and (Path(c) / "initdb").exists():
            return Path(c)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise PostgresError("PostgreSQL not found: install it with `make system-deps` "
                        "(apt-get install postgresql) or set PS_PG_BIN")


@dataclass
class PostgresProcess:
    """One cluster on a loopback port, trust authentication for the loopback only.

    `stop()` and `start()` keep the same port and data, so a test can play an outage."""

    port: int = 0
    host: str = "127.0.0.1"
    user: str = "fleet"
    dbname: str = "fleet"
    workdir: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    _owner: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._auto_port = not self.port
        if not self.port:
            self.port = free_port(self.host)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="ps-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(SERVICE_USER)
            except KeyError:
                raise PostgresError(f"running as root needs the `{SERVICE_USER}` system user "
                                    "(apt-get install postgresql creates it)") from None
            self._owner = SERVICE_USER
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.workdir, 0o700)

    @property
    def datadir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "data"

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), user=self._owner, capture_output=True, text=True,
                              check=check, timeout=timeout, stdin=subprocess.DEVNULL,
                              cwd=str(self.workdir))

    def init(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        bin_ = find_pg_bin()
        try:
            self._run(str(bin_ / "initdb"), "-D", str(self.datadir), "-U", self.user,
                      "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        except subprocess.CalledProcessError as exc:
            raise PostgresError(f"initdb failed: {exc.stderr.strip()[-500:]}") from None
        conf = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.workdir}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "shared_buffers": "128MB",
            "max_connections": "60",
            "logging_collector": "off",
            **self.settings,
        }
        with open(self.datadir / "postgresql.conf", "a") as fh:
            fh.write("\n# ps test cluster\n")
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")

    def start(self, timeout: float = 180.0) -> PostgresProcess:
        self.init()
        if self.running:
            return self
        bin_ = find_pg_bin()
        log = self.workdir / "postgres.log"  # type: ignore[operator]
        for attempt in range(4):
            try:
                self._run(str(bin_ / "pg_ctl"), "-D", str(self.datadir), "-l", str(log), "-w",
                          "-t", str(int(timeout)), "start", timeout=timeout + 10)
                break
            except subprocess.CalledProcessError as exc:
                taken = "could not bind" in log.read_text(errors="replace")[-2000:]
                if taken and self._auto_port and attempt < 3:
                    # the free port was taken between choosing and binding (a busy machine):
                    # take another one; a later `port` line overrides the earlier
                    self.port = free_port(self.host)
                    with open(self.datadir / "postgresql.conf", "a") as fh:
                        fh.write(f"port = {self.port}\n")
                    continue
                raise PostgresError(f"PostgreSQL did not start on port {self.port}: "
                                    f"{exc.stdout.strip()[-300:]} (see {log})") from None
        wait_for_port(self.host, self.port, timeout)
        self._ensure_db()
        return self

    def _ensure_db(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(f"host={self.host} port={self.port} user={self.user} "
                                     "dbname=postgres", autocommit=True) as conn:
                    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                    (self.dbname,)).fetchone() is None:
                        conn.execute(f'CREATE DATABASE "{self.dbname}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def fresh_database(self, name: str) -> str:
        """Drop and create database `name` with the fleet's schema: one clean database per
        test or benchmark section on the one cluster. Returns its DSN."""
        import psycopg

        from .schema import create_schema

        with psycopg.connect(f"host={self.host} port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        dsn = f"host={self.host} port={self.port} user={self.user} dbname={name}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_schema(conn)
        return dsn

    @property
    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def stop(self, mode: str = "fast") -> None:
        """`fast` shuts down cleanly; `immediate` is the nearest to a crash pg_ctl offers."""
        if not self.running:
            return
        self._run(str(find_pg_bin() / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w",
                  "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresProcess:
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc: object) -> None:
        self.destroy()
