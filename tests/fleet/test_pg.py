"""The throwaway cluster survives a busy machine: a free port taken before PostgreSQL binds
it (seen at load 40: the whole fleet suite errored) is replaced by another."""

from __future__ import annotations

import socket

import psycopg

from fleet.pg import PostgresProcess


def test_a_port_taken_before_binding_is_replaced() -> None:
    pg = PostgresProcess()
    taken = pg.port
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        with pg:
            assert pg.port != taken
            with psycopg.connect(pg.dsn) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pg.workdir is not None and not pg.workdir.exists()
