"""Several worker hosts on one PostgreSQL database, simulated on one machine.

Each host is a ``pg_worker_app.py`` process that reaches the server through
its own :class:`~netproxy.NetProxy`, a stand-in for the host's network: the
test cuts, heals or resets one host's link, kills its process, and reads
what every handler did from the execution logs (wall-clock times, all
processes on one machine, so one clock).

Run as a script, it performs the partition experiment and writes what the
book's chart needs as JSON::

    python tests/helpers/pghosts.py partition.json [URL]
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))
from netproxy import NetProxy

APP = Path(__file__).parent / "pg_worker_app.py"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


class Run(NamedTuple):
    """One attempt's handler as a host ran it, from its ``start`` to its end."""

    job_id: int
    attempt: int
    host: str
    pid: int
    start: float
    end: float | None
    how: str
    """``end`` (returned), ``stop`` (cancelled), ``killed`` (kill -9), ``open``."""


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is true and return it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return value


def with_port(url: str, port: int, **params: str) -> str:
    """``url`` pointed at 127.0.0.1:``port``, with query ``params`` added."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    user = f"{netloc[0]}@" if len(netloc) == 2 else ""
    query = urllib.parse.parse_qsl(parts.query)
    query = [(k, v) for k, v in query if k not in ("host", "port")]
    query += params.items()
    return urllib.parse.urlunsplit(
        parts._replace(
            netloc=f"{user}127.0.0.1:{port}", query=urllib.parse.urlencode(query)
        )
    )


def server_address(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


class Cluster:
    """A fresh schema, three hosts' proxies, their worker processes and logs."""

    def __init__(self, root: Path, url: str, hosts: int = 3, timeout: float = 1.0):
        self.root = root
        self.url = url
        self.schema = f"hosts_{uuid.uuid4().hex[:16]}"
        # Worker connections carry the schema in their application name (the
        # store names them so; the URL asks for it too), so that the test can
        # end them, and only them: other tests may share the database.
        self.app_name = f"jobkit_{self.schema}"
        self._ours = f"%{self.schema}%"
        self.timeout = timeout
        self.logs = root / "executions"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.proxies: dict[str, NetProxy] = {}
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.hosts: dict[int, str] = {}  # pid -> host
        self._ready: dict[int, Path] = {}  # pid -> its ready file
        self.killed: dict[int, float] = {}  # pid -> wall time of its kill -9
        self.t0 = time.time()
        host, port = server_address(url)
        for i in range(hosts):
            self.proxies[f"host{i}"] = NetProxy(host, port)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes -------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        generation = sum(1 for n, _ in self.procs if n.startswith(name))
        tag = f"{name}.{generation}"
        with (
            (self.root / f"{tag}.out").open("wb") as out,
            (self.root / f"{tag}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(
                [sys.executable, str(APP), *args], stdout=out, stderr=err
            )
        self.procs.append((tag, proc))
        return proc

    def enqueue(
        self, count: int, seconds: float, then: float | None = None
    ) -> list[int]:
        """Enqueue ``count`` jobs directly (not through a proxy); return their ids.

        Each runs ``seconds`` on its first attempt, ``then`` on later ones.
        """
        more = [] if then is None else ["--then", str(then)]
        proc = self._spawn(
            "producer",
            "enqueue",
            self.url,
            self.schema,
            "--count",
            str(count),
            "--seconds",
            str(seconds),
            *more,
        )
        assert proc.wait(timeout=60) == 0, self.stderr(proc)
        tag = next(t for t, p in self.procs if p is proc)
        return [int(i) for i in (self.root / f"{tag}.out").read_text().split()]

    def start(
        self, host: str, *, concurrency: int = 4, lease: float = 2.0, wait: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start (or restart) ``host``'s worker, connected through its proxy."""
        ready = self.root / f"{host}.{len(self.procs)}.ready"
        url = with_port(
            self.url, self.proxies[host].port, application_name=self.app_name
        )
        proc = self._spawn(
            host,
            "work",
            url,
            self.schema,
            "--log-dir",
            str(self.logs),
            "--concurrency",
            str(concurrency),
            "--lease",
            str(lease),
            "--timeout",
            str(self.timeout),
            "--poll-interval",
            "0.1",
            "--ready-file",
            str(ready),
        )
        self.workers[host] = proc
        self.hosts[proc.pid] = host
        self._ready[proc.pid] = ready
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait until the worker ``proc`` runs (its ready file exists)."""
        ready = self._ready[proc.pid]
        wait_until(
            lambda: ready.exists() or proc.poll() is not None,
            f"{self.hosts[proc.pid]}'s worker to start",
        )
        assert proc.poll() is None, self.stderr(proc)

    def kill(self, host: str) -> int:
        """kill -9 ``host``'s worker; return its pid."""
        proc = self.workers[host]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.killed[proc.pid] = time.time()
        return proc.pid

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM every live worker; each must exit 0."""
        live = [p for p in self.workers.values() if p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        for proc in live:
            assert proc.wait(timeout=timeout) == 0, self.stderr(proc)

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        tag = next(t for t, p in self.procs if p is proc)
        return (self.root / f"{tag}.err").read_text()

    # -- what the database and the logs say --------------------------------------

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def states(self) -> dict[int, tuple[str, int]]:
        """Each job's (state, attempts), read directly from the server."""
        query = sql.SQL("SELECT id, state, attempts FROM {}.jobs").format(
            sql.Identifier(self.schema)
        )
        with self.connect() as conn:
            return {i: (s, a) for i, s, a in conn.execute(query)}

    def count(self, state: str) -> int:
        return sum(1 for s, _ in self.states().values() if s == state)

    def terminate_backends(self) -> int:
        """End every server process serving a worker; return how many."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND application_name LIKE %s",
                [self._ours],
            ).fetchall()
        return len(rows)

    def backends(self) -> int:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                [self._ours],
            ).fetchone()
        assert row is not None
        return int(row[0])

    def lines(self) -> list[tuple[str, int, int, int, float]]:
        found = []
        for path in self.logs.glob("exec-*.log"):
            for line in path.read_text().splitlines():
                kind, job_id, attempt, pid, at = line.split()
                found.append((kind, int(job_id), int(attempt), int(pid), float(at)))
        return found

    def runs(self) -> list[Run]:
        """Every handler run, its end being its ``end``/``stop`` line or its kill."""
        ends = {(j, a, p): (k, at) for k, j, a, p, at in self.lines() if k != "start"}
        runs = []
        for kind, job_id, attempt, pid, at in self.lines():
            if kind != "start":
                continue
            how, end = ends.get((job_id, attempt, pid), ("open", None))
            if how == "open" and pid in self.killed:
                how, end = "killed", self.killed[pid]
            runs.append(Run(job_id, attempt, self.hosts[pid], pid, at, end, how))
        return sorted(runs, key=lambda r: (r.start, r.job_id))

    def close(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for proxy in self.proxies.values():
            proxy.close()
        try:
            with self.connect() as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        sql.Identifier(self.schema)
                    )
                )
        except psycopg.Error:
            pass


def overlaps(runs: Iterable[Run]) -> list[tuple[Run, Run]]:
    """Pairs of runs of one job that were under way at the same time."""
    by_job: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_job[run.job_id].append(run)
    found = []
    for job_runs in by_job.values():
        job_runs.sort(key=lambda r: r.start)
        for a, b in itertools.pairwise(job_runs):
            if a.end is None or b.start < a.end:
                found.append((a, b))
    return found


def partition_experiment(
    cluster: Cluster,
    *,
    jobs: int = 4,
    seconds: float = 30.0,
    then: float = 1.0,
    lease: float = 2.0,
) -> dict[str, Any]:
    """Cut host0 off while it runs jobs; heal it once the others ran everything.

    host0 starts first and takes ``jobs`` jobs whose first attempt runs
    ``seconds``, far longer than the lease (a later attempt runs ``then``);
    then host1 and host2 start with slots to spare, and host0's link is
    cut. Once every job has
    succeeded the link heals, host1 and host2 stop, and ``jobs`` short jobs
    show that host0 works again.

    Returns what happened, times in seconds from the start: ``runs`` (job,
    attempt, host, start, end, how it ended), the ``partition`` and ``heal``
    instants, ``lease``, and ``in_flight``: the jobs host0 was running when
    its link was cut.
    """
    t0 = cluster.t0
    cluster.start("host0", concurrency=jobs, lease=lease)
    ids = cluster.enqueue(jobs, seconds, then)
    cut = cluster.workers["host0"].pid

    def running_on_host0() -> set[int]:
        return {r.job_id for r in cluster.runs() if r.pid == cut and r.how == "open"}

    wait_until(lambda: len(running_on_host0()) == jobs, "host0 to run every job")
    others = [
        cluster.start(host, concurrency=jobs, lease=lease, wait=False)
        for host in ("host1", "host2")
    ]
    for proc in others:
        cluster.wait_ready(proc)
    cluster.proxies["host0"].partition()
    partition = time.time()
    in_flight = running_on_host0()
    wait_until(
        lambda: cluster.count("succeeded") == len(ids),
        "the other hosts to run every job",
        timeout=60,
    )
    cluster.proxies["host0"].heal()
    heal = time.time()
    for host in ("host1", "host2"):
        cluster.workers[host].send_signal(signal.SIGTERM)
        assert cluster.workers[host].wait(timeout=30) == 0
    ids += cluster.enqueue(jobs, 0.1)
    wait_until(
        lambda: cluster.count("succeeded") == len(ids),
        "host0 to work again after the heal",
        timeout=60,
    )
    cluster.stop_all()
    return {
        "lease": lease,
        "partition": partition - t0,
        "heal": heal - t0,
        "in_flight": sorted(in_flight),
        "jobs": ids,
        "runs": [
            {
                **r._asdict(),
                "start": r.start - t0,
                "end": None if r.end is None else r.end - t0,
            }
            for r in cluster.runs()
        ],
    }


if __name__ == "__main__":
    out = sys.argv[1]
    url = (
        sys.argv[2]
        if len(sys.argv) > 2
        else os.environ.get("JOBKIT_TEST_POSTGRES_URL", DEFAULT_URL)
    )
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp), url) as cluster:
        data = partition_experiment(cluster)
    Path(out).write_text(json.dumps(data, indent=1))
    print(f"wrote {out}: {len(data['runs'])} runs")
