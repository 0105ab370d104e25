"""`make test` runs every benchmark briefly, so none can rot unnoticed (issue 18): a section
that raises makes `bench.run_all` exit 1, and that fails this test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_every_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bench.run_all", "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=880, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + "\n" + done.stderr[-4000:]
    doc = (tmp_path / "benchmarks.md").read_text()
    assert "Benchmarks that did not run" not in doc
    assert "| entry: code typed" in doc


def test_a_raising_benchmark_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness itself: a section that raises is listed as not run, writes no row, and the
    exit status is 1."""
    import types

    from bench import run_all

    canary = types.ModuleType("bench._canary")

    def run(quick: bool = False) -> dict[str, object]:
        raise RuntimeError("canary benchmark broke")

    canary.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench._canary", canary)
    monkeypatch.setattr(run_all, "PLAIN_SECTIONS", (("canary", "_canary"),))
    skip = [a for s in ("mqtt", "shelving", "entry", "eventlog", "faces", "codes", "growth")
            for a in ("--skip", s)]
    assert run_all.main(["--quick", "--out", str(tmp_path), *skip]) == 1
    doc = (tmp_path / "benchmarks.md").read_text()
    assert "`canary`: RuntimeError: canary benchmark broke" in doc
