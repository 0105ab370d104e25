"""Fixtures for the notification tests: a store on a settable clock, an outbox, a gateway."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.notify import Outbox
from station.store.db import Store

from .receiver import WebhookReceiver


class FakeClock:
    """Time that moves only when a test says so: backoff is tested without sleeping."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "station.db"


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def store(db_path: Path, clock: FakeClock) -> Iterator[Store]:
    with Store(db_path, clock=clock) as s:
        yield s


@pytest.fixture
def outbox(store: Store, key: bytes, clock: FakeClock) -> Outbox:
    return Outbox(store, key, clock)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver().start()
    yield r
    r.release.set()
    r.stop()
