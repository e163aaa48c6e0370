"""The fault-injecting proxy the multi-host tests put between workers and PostgreSQL.

Its target here is a small echo server in a thread, so these tests need no
database. What a partition must look like is checked from both ends: the
client's connection neither closes nor delivers, and the server sees nothing.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tests.helpers.netproxy import NetProxy

pytestmark = pytest.mark.slow

# How long "nothing arrives" is watched for. A negative can only be checked
# over some span; it is short, and the positive half of each test (the bytes
# arrive after heal) proves they were held rather than lost.
QUIET = 0.3


class EchoServer:
    """Echoes every byte back; counts the connections it accepted."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.received = 0
        self.closed = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.closed.set()
                    return
                if data == b"RST":
                    # As a server whose process was killed: a reset, not a FIN.
                    conn.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    return
                with self._lock:
                    self.received += len(data)
                conn.sendall(data)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.listener.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[NetProxy]:
    with NetProxy("127.0.0.1", echo.port) as p:
        yield p


def connect(proxy: NetProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    return sock


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed"
        got += chunk
    return got


def wait_open(proxy: NetProxy, n: int) -> None:
    """Wait until the proxy has accepted ``n`` connections (the kernel does first)."""
    deadline = time.monotonic() + 5
    while proxy.stats()["open"] != n:
        assert time.monotonic() < deadline, "the proxy did not accept the connection"
        time.sleep(0.005)


def nothing_arrives(sock: socket.socket) -> None:
    sock.settimeout(QUIET)
    with pytest.raises(TimeoutError):
        sock.recv(1)  # neither data, nor EOF, nor a reset: it hangs
    sock.settimeout(5)


def test_forwards_both_ways(proxy: NetProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        payload = bytes(range(256)) * 1000
        assert round_trip(sock, payload) == payload
    stats = proxy.stats()
    assert stats["mode"] == "forward"
    assert stats["bytes_up"] == stats["bytes_down"] == len(payload)
    assert echo.received == len(payload)


def test_partition_holds_open_connections_until_heal(
    proxy: NetProxy, echo: EchoServer
) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"before") == b"before"
        assert proxy.partition()["mode"] == "partition"
        sock.sendall(b"during")
        nothing_arrives(sock)
        assert echo.received == len(b"before")  # the server saw nothing either
        assert proxy.heal()["mode"] == "forward"
        got = b""
        while len(got) < len(b"during"):
            got += sock.recv(64)
        assert got == b"during"  # held, not dropped


def test_partition_accepts_new_connections_that_hang(
    proxy: NetProxy, echo: EchoServer
) -> None:
    proxy.partition()
    with connect(proxy) as sock:  # the connect itself succeeds
        sock.sendall(b"hello")
        nothing_arrives(sock)
        stats = proxy.stats()
        assert (stats["accepted"], stats["opened"], stats["open"]) == (1, 0, 1)
        assert echo.accepted == 0
        proxy.heal()
        got = b""
        while len(got) < 5:
            got += sock.recv(64)
        assert got == b"hello"
    assert proxy.stats()["opened"] == 1


def test_reset_closes_every_connection_with_a_reset(
    proxy: NetProxy, echo: EchoServer
) -> None:
    socks = [connect(proxy) for _ in range(3)]
    try:
        for sock in socks:
            assert round_trip(sock, b"x") == b"x"
        stats = proxy.reset()
        assert (stats["open"], stats["resets"]) == (0, 1)
        for sock in socks:
            with pytest.raises(ConnectionResetError):
                sock.recv(1)
        assert echo.closed.wait(5)  # the server's side is closed too
    finally:
        for sock in socks:
            sock.close()
    # The proxy itself carries on.
    with connect(proxy) as sock:
        assert round_trip(sock, b"again") == b"again"


def test_a_server_reset_reaches_the_client_and_the_proxy_carries_on(
    proxy: NetProxy,
) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"RST")
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    assert proxy.stats()["open"] == 0
    with connect(proxy) as sock:
        assert round_trip(sock, b"still here") == b"still here"


def test_reset_during_a_partition_keeps_the_partition(
    proxy: NetProxy, echo: EchoServer
) -> None:
    proxy.partition()
    with connect(proxy) as sock:
        sock.sendall(b"x")
        wait_open(proxy, 1)
        assert proxy.reset()["mode"] == "partition"
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    with connect(proxy) as sock:
        sock.sendall(b"y")
        nothing_arrives(sock)


def test_an_unknown_command_is_refused(proxy: NetProxy) -> None:
    with pytest.raises(RuntimeError, match="unknown command 'flood'"):
        proxy.command("flood")
    assert proxy.stats()["mode"] == "forward"


def test_the_proxy_exits_when_its_control_channel_closes(echo: EchoServer) -> None:
    proxy = NetProxy("127.0.0.1", echo.port)
    port = proxy.port
    proxy.close()
    assert proxy._proc.returncode == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
