"""A real small filesystem for the full-disk tests: a tmpfs mounted in the test's own
directory and unmounted after it. Mounting needs root; `make test` runs as root on the CI
machine, so there the tests always run, and a mount that fails as root fails the test."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CAN_MOUNT = os.geteuid() == 0 and shutil.which("mount") is not None
needs_mount = pytest.mark.skipif(not CAN_MOUNT, reason="mounting a small tmpfs needs root")


@contextmanager
def small_tmpfs(directory: Path, size_mb: int) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(directory)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"as root, a {size_mb} MB tmpfs must mount: {done.stderr.strip()}"
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def fill_to_the_last_byte(path: Path) -> None:
    """Unbuffered, because a buffered file that met ENOSPC keeps the remainder and raises it
    again from close(), outside any handler: the full-disk test failed so about one run in
    eight, whenever the free space was not a whole number of chunks."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as fh:
        try:
            while fh.write(chunk):
                pass
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    assert os.statvfs(path).f_bavail == 0, "the filler should leave no whole block free"
