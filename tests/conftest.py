"""Shared fixtures: a real Mosquitto per session (and per test where a test stops it),
fresh secrets and the example configuration pointed at temporary files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from station.config import Secrets, StationConfig, load_config, load_secrets, write_new_secrets
from station.mosquitto import MosquittoProcess

# the browser fixtures for every package (one Playwright driver per run)
pytest_plugins = ("tests.support.browser",)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "examples" / "station.toml"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoProcess]:
    """One broker for the session; tests that must not share it use `own_broker`."""
    with MosquittoProcess(workdir=tmp_path_factory.mktemp("mosquitto")) as proc:
        yield proc


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A broker this test alone uses, free to stop and restart."""
    with MosquittoProcess(workdir=tmp_path / "mosquitto") as proc:
        yield proc


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    return write_new_secrets(tmp_path / "secrets.toml")


@pytest.fixture
def secrets(secrets_file: Path) -> Secrets:
    return load_secrets(secrets_file, env={})


def example_config(tmp_path: Path, **station_overrides: object) -> StationConfig:
    """The example config with its files moved under tmp_path (and any [station] overrides)."""
    base = load_config(EXAMPLE_CONFIG)
    station = base.station.model_copy(
        update={
            "database": str(tmp_path / "station.db"),
            "snapshots_dir": str(tmp_path / "snapshots"),
            **station_overrides,
        }
    )
    # no metrics port: a port the kernel hands the metrics server could be the one a test
    # has just picked for the station's HTTP API (tests/test_metrics.py turns them on); the
    # tests' helpers still mint stateless operator/kiosk tokens (off in production, ADR 0130)
    return base.model_copy(update={"station": station,
                                   "metrics": base.metrics.model_copy(update={"enabled": False}),
                                   "api": base.api.model_copy(update={"service_tokens": True})})


@pytest.fixture
def config(tmp_path: Path) -> StationConfig:
    return example_config(tmp_path)
