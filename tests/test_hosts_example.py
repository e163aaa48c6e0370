"""The cut-able link of the book's partition experiment (jobkit.examples.hosts)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from jobkit.examples.hosts import NetCut, Run, overlaps


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that sends back what it receives."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _silent(sock: socket.socket, seconds: float = 0.3) -> bool:
    sock.settimeout(seconds)
    try:
        sock.recv(1024)
    except TimeoutError:
        return True
    return False


def test_a_cut_holds_bytes_and_a_heal_delivers_them(echo_port: int) -> None:
    """While cut, nothing comes back and nothing is closed; healed, it all arrives."""
    with (
        NetCut("127.0.0.1", echo_port) as net,
        socket.create_connection(("127.0.0.1", net.port)) as client,
    ):
        client.sendall(b"before")
        assert client.recv(1024) == b"before"
        net.cut()
        client.sendall(b"during")
        assert _silent(client)
        net.heal()
        client.settimeout(5)
        assert client.recv(1024) == b"during"


def test_a_new_connection_hangs_while_cut(echo_port: int) -> None:
    """A connection opened during a cut is accepted, then reaches the server on heal."""
    with NetCut("127.0.0.1", echo_port) as net:
        net.cut()
        with socket.create_connection(("127.0.0.1", net.port)) as client:
            client.sendall(b"hello")
            assert _silent(client)
            net.heal()
            client.settimeout(5)
            assert client.recv(1024) == b"hello"


def test_close_ends_the_connections(echo_port: int) -> None:
    """Closing the proxy closes the connections it carried."""
    net = NetCut("127.0.0.1", echo_port)
    with socket.create_connection(("127.0.0.1", net.port)) as client:
        client.sendall(b"x")
        assert client.recv(1024) == b"x"
        net.close()
        client.settimeout(5)
        assert client.recv(1024) == b""


def test_url_points_at_the_proxy() -> None:
    """A PostgreSQL URL keeps its user, database and query; host and port change."""
    with NetCut("127.0.0.1", 9) as net:
        url = net.url("postgresql://app@db.internal:6543/jobs?schema=queue")
    assert url == f"postgresql://app@127.0.0.1:{net.port}/jobs?schema=queue"


def test_overlaps_only_pairs_runs_of_one_job_on_two_hosts() -> None:
    """Back-to-back runs and same-host runs do not overlap; a concurrent rerun does."""
    c1, a2 = Run("C", 1, 1, 0.0, 6.0), Run("A", 1, 2, 3.0, 9.0)
    after = Run("B", 2, 2, 1.0, 2.0)
    before = Run("A", 2, 1, 0.0, 1.0)
    same_host = Run("C", 3, 2, 0.5, 2.0)
    runs = [c1, a2, before, after, Run("C", 3, 1, 0.0, 1.0), same_host]
    assert overlaps(runs) == [(c1, a2)]
