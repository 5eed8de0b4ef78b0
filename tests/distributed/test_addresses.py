"""What a Ray address is checked for before Ray is asked (fast: no cluster is started): nothing
listening, something that is not a Ray head, a head that wants a token."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from subnetsearch.distributed import ClusterError, check_reachable, requires_token


def test_an_address_where_nothing_listens_is_refused_within_seconds() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ClusterError, match=f"no Ray cluster answers at 127.0.0.1:{port}.*ray start --head"):
        check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("address", ["nohost", "127.0.0.1:x", "ray://:1"])
def test_a_malformed_address_is_refused(address) -> None:
    with pytest.raises(ClusterError, match="bad Ray address"):
        check_reachable(address)


def test_a_server_that_is_not_a_ray_head_is_named_so() -> None:
    """A server that accepts and answers something other than gRPC (Redis on 6379, a web server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(64)
            connection.sendall(b"-ERR unknown command\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(ClusterError, match="it is not a Ray head"):
            check_reachable(f"127.0.0.1:{server.getsockname()[1]}", timeout=2)
        assert not requires_token("ray://127.0.0.1:1")  # a Ray Client address is not asked
    finally:
        server.close()
        thread.join(timeout=5)
