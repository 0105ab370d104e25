"""A real PostgreSQL for the fleet tests: one throwaway cluster per session (initdb + pg_ctl
on a free loopback port), a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import psycopg
import pytest

from fleet.pg import PostgresProcess

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[PostgresProcess]:
    with PostgresProcess() as proc:
        yield proc


def new_database(pg: PostgresProcess) -> str:
    return pg.fresh_database(f"t{next(_numbers)}")


@pytest.fixture
def fleet_dsn(pg: PostgresProcess) -> str:
    return new_database(pg)


@pytest.fixture
def db(fleet_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        yield conn
