"""Worker hosts on one database, a network between them that can fail, a chart.

Chapter 9 of the book ("Outgrowing one machine") measures where SQLite
stops and shows what PostgreSQL changes. These helpers hold its plumbing:

- :class:`NetCut` is a TCP proxy, run in threads of its own, that stands
  for the network between one worker host and the database server:
  :meth:`NetCut.cut` stops it forwarding (connections hang, as behind a
  dead switch), :meth:`NetCut.heal` lets the held bytes through again;
- :class:`Run` records one run of a handler: which host, which job and
  attempt, from when to when, and whether it returned or was stopped;
  :func:`overlaps` finds the runs of one job that overlapped in time, and
  :func:`plot_runs` draws them, one row per job, coloured by host.

Nothing here needs psycopg or matplotlib until it is called.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["NetCut", "Run", "overlaps", "plot_runs"]


class NetCut:
    """A TCP proxy to ``host:port`` on 127.0.0.1 whose forwarding can be cut.

    While cut, bytes are read and held, not dropped, and nothing is closed:
    established connections hang and new ones are accepted but not passed
    on, which is what a host behind a failed link sees (no reset, no
    refusal, silence). :meth:`heal` forwards what was held. Each connection
    is carried by two daemon threads, one per direction; :meth:`close` ends
    them all. Use it as a context manager.

    Example::

        >>> from jobkit.examples.hosts import NetCut
        >>> with NetCut("127.0.0.1", 9) as net:
        ...     net.cut()
        ...     net.url("postgresql://me@db.internal:5432/app") == (
        ...         f"postgresql://me@127.0.0.1:{net.port}/app")
        True
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        """The port the proxy listens on, on 127.0.0.1."""
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """Return ``url`` (a ``postgresql://`` URL) pointed at this proxy instead."""
        parts = urllib.parse.urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        netloc = f"{user}127.0.0.1:{self.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> None:
        """Stop forwarding, both ways: connections hang, nothing is closed."""
        self._flowing.clear()

    def heal(self) -> None:
        """Forward again, starting with the bytes held while cut."""
        self._flowing.set()

    def close(self) -> None:
        """Close the listener and every connection (the threads then end)."""
        self._closed = True
        self._flowing.set()
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
        for sock in (self._listener, *sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> NetCut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()  # a new connection hangs while cut
        try:
            server = socket.create_connection(self._target)
        except OSError:
            client.close()
            return
        self._keep(server)
        for src, dst in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@attrs.frozen
class Run:
    """One run of a handler: on which host, which job and attempt, and when.

    ``start`` and ``end`` are in the experiment's seconds; ``stopped`` says
    the handler did not return (it was cancelled: a lost lease, a fence, a
    shutdown).

    Example::

        >>> from jobkit.examples.hosts import Run
        >>> Run("host A", 1, 1, 0.5, 2.5).end - Run("host A", 1, 1, 0.5, 2.5).start
        2.0
    """

    host: str
    job_id: int
    attempt: int
    start: float
    end: float
    stopped: bool = False


def overlaps(runs: Iterable[Run]) -> list[tuple[Run, Run]]:
    """Return the pairs of runs of one job, on different hosts, that overlap in time.

    Example::

        >>> from jobkit.examples.hosts import Run, overlaps
        >>> a, b = Run("A", 1, 1, 0.0, 5.0), Run("B", 1, 2, 3.0, 6.0)
        >>> overlaps([a, b, Run("B", 2, 1, 0.0, 9.0)]) == [(a, b)]
        True
    """
    runs = sorted(runs, key=lambda r: (r.job_id, r.start))
    return [
        (a, b)
        for i, a in enumerate(runs)
        for b in runs[i + 1 :]
        if a.job_id == b.job_id and a.host != b.host and b.start < a.end
    ]


_HOST_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown")


def plot_runs(
    runs: Sequence[Run],
    ax: Axes | None = None,
    *,
    cut: tuple[float, float] | None = None,
    marks: Sequence[tuple[int, float, str]] = (),
) -> Axes:
    """Draw who ran what when: one row per job, a bar per run, coloured by host.

    Runs of the same job share its row, one lane each, so runs that
    overlapped in time show one above the other. A run that was stopped
    rather than returned is hatched. ``cut`` shades
    the span during which a host was cut off; ``marks`` are ``(job_id, at,
    label)`` instants drawn as ticks on a job's row (a lease expiring, say).

    Example::

        >>> import matplotlib; matplotlib.use("Agg")
        >>> from jobkit.examples.hosts import Run, plot_runs
        >>> ax = plot_runs([Run("A", 1, 1, 0, 2), Run("B", 2, 1, 0, 1, True)])
        >>> [t.get_text() for t in ax.get_yticklabels()]
        ['job 1', 'job 2']
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.5))
    hosts = sorted({r.host for r in runs})
    colors = dict(zip(hosts, _HOST_COLORS * len(hosts), strict=False))
    jobs = sorted({r.job_id for r in runs})
    row = {job: i for i, job in enumerate(jobs)}
    if cut is not None:
        ax.axvspan(*cut, color="tab:red", alpha=0.08, label="a host cut off")
    # Runs of one job share its row in lanes, so that overlapping runs show.
    lanes: dict[int, list[Run]] = {}
    for r in sorted(runs, key=lambda r: r.start):
        lanes.setdefault(r.job_id, []).append(r)
    for job_id, mine in lanes.items():
        height = 0.7 / len(mine)
        for i, r in enumerate(mine):
            y = row[job_id] - 0.35 + (i + 0.5) * height
            ax.barh(
                y,
                max(r.end - r.start, 0.05),
                left=r.start,
                height=height * 0.9,
                color=colors[r.host],
                edgecolor="black",
                linewidth=0.5,
                hatch="//" if r.stopped else None,
            )
            label = f"#{r.attempt}"
            box = {"facecolor": "white", "edgecolor": "none", "pad": 0.5}
            ax.text(r.start + 0.05, y, label, fontsize=7, va="center", bbox=box)
    for job_id, at, text in marks:
        ax.plot(at, row[job_id] - 0.45, marker="v", color="black", markersize=7)
        ax.annotate(text, (at, row[job_id] - 0.6), fontsize=8, ha="center")
    ax.set_yticks(range(len(jobs)), [f"job {j}" for j in jobs])
    ax.set_ylim(len(jobs) - 0.4, -1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("time (s)")
    handles, _ = ax.get_legend_handles_labels()  # the shaded span, if any
    handles += [Patch(facecolor=colors[h], edgecolor="black", label=h) for h in hosts]
    if any(r.stopped for r in runs):
        handles.append(
            Patch(facecolor="white", edgecolor="black", hatch="//", label="stopped")
        )
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    return ax
