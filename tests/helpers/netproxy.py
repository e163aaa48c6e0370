"""A fault-injecting TCP proxy: a stand-in for the network between a host and a server.

It runs in its own process, so that the test process, the proxy and the
processes whose traffic it carries fail independently. The test starts it
with :class:`NetProxy` and steers it over the process's stdin/stdout, one
command a line, each answered with ``ok`` and the proxy's counters as JSON:

``partition``
    Stop forwarding, both ways. Established connections stay open and
    hang: no reset, no FIN, bytes already sent are held, not dropped. New
    connections are accepted and hang too (no connection to the server is
    opened for them). This is what a cut cable or a dead switch looks like
    from a host: the peer's kernel is gone, not refusing.
``heal`` (or ``forward``)
    Forward again: held bytes flow on, waiting connections reach the server.
``reset``
    Close every connection at once with a TCP reset, on both sides; the mode
    stays as it was.
``stats``
    Only answer with the counters.

When its stdin closes (the test process ended, however it ended) the proxy
exits, so no test leaves one behind.

Run directly: ``python netproxy.py HOST PORT``; it prints
``listening <port>`` once it accepts connections on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
from typing import Any

import attrs
import trio


@attrs.define(eq=False)
class _Connection:
    client: trio.SocketStream
    scope: trio.CancelScope
    upstream: trio.SocketStream | None = None


@attrs.define(eq=False)
class _Proxy:
    host: str
    port: int
    partitioned: bool = False
    healed: trio.Event = attrs.Factory(trio.Event)
    connections: set[_Connection] = attrs.Factory(set)
    emptied: trio.Event = attrs.Factory(trio.Event)
    accepted: int = 0
    opened: int = 0
    resets: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def stats(self) -> dict[str, Any]:
        return {
            "mode": "partition" if self.partitioned else "forward",
            "open": len(self.connections),
            "accepted": self.accepted,
            "opened": self.opened,
            "resets": self.resets,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }

    def partition(self) -> None:
        if not self.partitioned:
            self.partitioned = True
            self.healed = trio.Event()

    def heal(self) -> None:
        self.partitioned = False
        self.healed.set()

    async def reset(self) -> None:
        for conn in self.connections:
            conn.scope.cancel()
        self.resets += 1
        if self.connections:
            self.emptied = trio.Event()
            await self.emptied.wait()

    async def gate(self) -> None:
        if self.partitioned:
            await self.healed.wait()

    async def handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        with trio.CancelScope() as scope:
            conn = _Connection(client, scope)
            self.connections.add(conn)
            try:
                await self.gate()
                conn.upstream = await trio.open_tcp_stream(self.host, self.port)
                self.opened += 1
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.pump, client, conn.upstream, True, scope)
                    nursery.start_soon(self.pump, conn.upstream, client, False, scope)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self.connections.discard(conn)
                if not self.connections:
                    self.emptied.set()
                # However it ended, both sides end with a reset: a proxy that
                # lingered on a half-open connection would hide the failure.
                for stream in (client, conn.upstream):
                    if stream is not None:
                        _abort(stream)

    async def pump(
        self,
        src: trio.SocketStream,
        dst: trio.SocketStream,
        up: bool,
        scope: trio.CancelScope,
    ) -> None:
        try:
            while True:
                await self.gate()
                data = await src.receive_some(65536)
                if not data:
                    break
                # Bytes read just before a partition are held until it heals:
                # nothing crosses a cut link.
                await self.gate()
                # Counted before the send returns: by the time the far end has
                # read them, a ``stats`` answer includes them.
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await dst.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        # One side closed or broke: the proxy closes both.
        scope.cancel()

    async def control(self, stream: trio.abc.Stream) -> None:
        buffer = b""
        while True:
            data = await stream.receive_some(4096)
            if not data:
                return  # the test process is gone
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = line.decode().strip()
                if command == "partition":
                    self.partition()
                elif command in ("heal", "forward"):
                    self.heal()
                elif command == "reset":
                    # Answered once the connections are closed, so a test that
                    # asks next sees them gone.
                    await self.reset()
                elif command != "stats":
                    error = f"error unknown command {command!r}\n"
                    await stream.send_all(error.encode())
                    continue
                await stream.send_all(f"ok {json.dumps(self.stats())}\n".encode())


def _abort(stream: trio.SocketStream) -> None:
    # SO_LINGER with a zero timeout: close() sends RST, not FIN.
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
    stream.socket.close()


async def serve(host: str, port: int) -> None:
    """Proxy 127.0.0.1:<ephemeral> to ``host:port``, steered over stdin/stdout."""
    proxy = _Proxy(host, port)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    control = trio.StapledStream(
        trio.lowlevel.FdStream(os.dup(sys.stdout.fileno())),
        trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())),
    )
    listen_port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, proxy.handle, listeners)
        await control.send_all(f"listening {listen_port}\n".encode())
        await proxy.control(control)
        nursery.cancel_scope.cancel()


class NetProxy:
    """A proxy process to ``host:port``, steered from the test.

    Example (not run here: it needs a server)::

        proxy = NetProxy("127.0.0.1", 5432)
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        proxy.partition(); ...; proxy.heal()
        proxy.close()
    """

    def __init__(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        self.target = (host, port)
        self._timeout = timeout
        self._proc = subprocess.Popen(
            [sys.executable, __file__, host, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Unbuffered: a line read is all there is, so select() tells truly
            # whether an answer is waiting.
            bufsize=0,
        )
        first = self._readline()
        if not first.startswith("listening "):
            self.close()
            raise RuntimeError(f"the proxy did not start: {first!r}")
        self.port = int(first.split()[1])

    def __enter__(self) -> NetProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _readline(self) -> str:
        assert self._proc.stdout is not None
        # The proxy answers each command at once; a silent proxy is a bug
        # that must fail the test, not hang it.
        fd = self._proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], self._timeout)
        if not ready:
            raise TimeoutError(f"the proxy did not answer in {self._timeout}s")
        return self._proc.stdout.readline().decode()

    def command(self, command: str) -> dict[str, Any]:
        """Send one command; return the counters the proxy answers with."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{command}\n".encode())
        self._proc.stdin.flush()
        answer = self._readline()
        if not answer.startswith("ok "):
            raise RuntimeError(f"the proxy refused {command!r}: {answer!r}")
        stats: dict[str, Any] = json.loads(answer[3:])
        return stats

    def partition(self) -> dict[str, Any]:
        """Stop forwarding; connections, old and new, hang."""
        return self.command("partition")

    def heal(self) -> dict[str, Any]:
        """Forward again."""
        return self.command("heal")

    def reset(self) -> dict[str, Any]:
        """Reset every open connection."""
        return self.command("reset")

    def stats(self) -> dict[str, Any]:
        """The proxy's counters: mode, open, accepted, opened, resets, bytes."""
        return self.command("stats")

    def close(self) -> None:
        """Stop the proxy: closing its stdin is enough, and it is waited for."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


if __name__ == "__main__":
    trio.run(serve, sys.argv[1], int(sys.argv[2]))
