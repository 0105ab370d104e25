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


def test_only_measures_one_section_and_keeps_the_others_rows_with_their_date(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow section (two simulated years) can be measured again without the rest: the
    earlier run's rows stay, dated by the run that measured them."""
    import json
    import types

    from bench import run_all

    earlier = {"quick": False, "date": "2026-11-29 20:57 UTC", "seconds": 267.0, "profiles": {},
               "notes": ["an earlier note", "CPU per parcel: the old wording"],
               "machine": {"cpu": "AMD EPYC", "cpus": 2, "python": "3.11.7", "os": "Linux", "sqlite": "3.40.1",
                           "mosquitto": "mosquitto", "load_average_1min": 1.0},
               "sections": [{"name": "mqtt", "seconds": 1.0, "data": {}, "rows": [
                   {"figure": "MQTT: an earlier figure", "ours": 1.5, "baseline": 1.0, "unit": "ms", "target": None}]},
                   {"name": "canary", "seconds": 1.0, "data": {}, "rows": [
                       {"figure": "canary: the old figure", "ours": 9.0, "baseline": 1.0, "unit": "ms", "target": None}]}]}
    (tmp_path / "benchmarks.json").write_text(json.dumps(earlier))
    canary = types.ModuleType("bench._canary")
    canary.run = lambda quick=False: {"rows": [  # type: ignore[attr-defined]
        {"figure": "canary: a new figure", "ours": 2.0, "baseline": 1.0, "unit": "ms", "target": None}]}
    monkeypatch.setitem(sys.modules, "bench._canary", canary)
    monkeypatch.setattr(run_all, "PLAIN_SECTIONS", (("canary", "_canary"),))
    assert run_all.main(["--out", str(tmp_path), "--only", "canary"]) == 0
    doc = (tmp_path / "benchmarks.md").read_text()
    assert "| MQTT: an earlier figure | 1.50 |" in doc and "| 2 CPU AMD EPYC | 2026-11-29 |" in doc
    assert "canary: a new figure" in doc and "canary: the old figure" not in doc
    assert "Kept from earlier runs" in doc and "an earlier note" in doc
    # a note the run writes again in new words replaces its old wording, not beside it
    assert "the old wording" not in doc and doc.count("\n- CPU per parcel:") == 1
    kept = json.loads((tmp_path / "benchmarks.json").read_text())
    assert [s["name"] for s in kept["sections"]] == ["mqtt", "canary"]
    with pytest.raises(SystemExit):
        run_all.main(["--out", str(tmp_path), "--only", "no-such-section"])
