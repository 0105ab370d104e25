"""A broker on a port chosen for it moves when another process takes that port first.

Parallel test workers each pick a free port and bind it a moment later; between the two,
another worker can take it. The suite failed once on exactly that ("Address already in use").
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from station.mosquitto import BrokerError, MosquittoProcess


def _listening_on(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_chosen_port_taken_before_the_broker_binds_it_is_given_up_for_another(tmp_path: Path) -> None:
    broker = MosquittoProcess(workdir=tmp_path)
    taken = broker.port
    thief = _listening_on(taken)  # answers connections: waiting for the port alone would be fooled
    try:
        broker.start()
        try:
            assert broker.port != taken
            with socket.create_connection(("127.0.0.1", broker.port), timeout=1):
                pass
            broker.restart()
            assert broker.port != taken  # once listening, a restart keeps the port clients know
        finally:
            broker.stop()
    finally:
        thief.close()


def test_a_port_the_caller_gave_is_never_changed(tmp_path: Path) -> None:
    thief = _listening_on(0)
    port = thief.getsockname()[1]
    broker = MosquittoProcess(port=port, workdir=tmp_path)
    try:
        with pytest.raises(BrokerError, match=f"did not start on port {port}"):
            broker.start(timeout=5)
        assert broker.port == port and not broker.running
    finally:
        broker.stop()  # a broker that did start must not outlive the test
        thief.close()
