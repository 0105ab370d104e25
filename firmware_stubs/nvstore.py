"""Stub non-volatile store: the last accepted command sequence number and the boot counter.

Real boards keep these in FRAM or a flash page; here a small JSON file replaced atomically
(write temp, fsync, rename, fsync dir) so a kill -9 at any instant leaves either the old or
the new record, never a torn one. `MemoryNvStore` is for simulated devices that need no disk.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class MemoryNvStore:
    """In-memory NV store (simulator); survives a firmware restart only if the same object is
    passed to the new controller, like a real chip survives a reset."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.boot_counter = 0
        self._lock = threading.Lock()

    def set_last_seq(self, seq: int) -> None:
        with self._lock:
            self.last_seq = max(self.last_seq, seq)
            self._save()

    def next_boot(self) -> int:
        with self._lock:
            self.boot_counter += 1
            self._save()
            return self.boot_counter

    def _save(self) -> None:
        """Nothing to persist in memory."""


class FileNvStore(MemoryNvStore):
    """A JSON file `{"last_seq": int, "boot_counter": int}`, replaced atomically."""

    def __init__(self, path: Path | str, durable: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.durable = durable
        try:
            data = json.loads(self.path.read_text("utf-8"))
            self.last_seq = int(data.get("last_seq", 0))
            self.boot_counter = int(data.get("boot_counter", 0))
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (ValueError, TypeError, AttributeError):
            # A corrupt record cannot happen with atomic replace; if it does, refuse to guess
            # a low seq (that would re-open replays): fail loudly.
            raise RuntimeError(f"{self.path}: corrupt NV record; re-provision the device") from None

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        data = json.dumps({"last_seq": self.last_seq, "boot_counter": self.boot_counter})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode())
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self.durable:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
