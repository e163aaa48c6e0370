"""Worker hosts sharing one PostgreSQL database: kill -9, a partition, a purge.

Three worker processes each reach the server through their own
fault-injecting proxy (``helpers/netproxy.py``), a stand-in for a host's
network. Every handler writes when it starts and ends; the tests check the
promises a queue shared by many machines makes: nothing is lost, nothing is
left RUNNING, a job runs again only if a run of it died, and no job ever runs
in two places at once, even on a host cut off from the database.

Every wait is on something observable (a state in the database, a line in a
log, a process exit), bounded by a deadline; leases are 2 s.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.pghosts import Cluster, Run, overlaps, partition_experiment, wait_until
from helpers.stores import postgres_url

pytestmark = pytest.mark.slow

LEASE = 2.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path, postgres_url()) as c:
        yield c


def runs_by_job(runs: list[Run]) -> dict[int, list[Run]]:
    by_job: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_job[run.job_id].append(run)
    return by_job


def test_kill_9_chaos_loses_nothing(cluster: Cluster) -> None:
    """Workers killed and restarted while 2,000 jobs run: all succeed, none overlap."""
    cluster.timeout = 5.0
    hosts = list(cluster.proxies)
    for host in hosts:
        cluster.start(host, concurrency=8, lease=LEASE)
    ids = cluster.enqueue(2000, seconds=0.05)
    rng = random.Random(13)
    for threshold in (300, 700, 1100, 1500):
        wait_until(
            lambda t=threshold: cluster.count("succeeded") >= t,
            f"{threshold} jobs to succeed",
        )
        host = rng.choice(hosts)
        pid = cluster.workers[host].pid

        def busy_or_done(pid: int = pid) -> bool:
            busy = any(r.pid == pid and r.how == "open" for r in cluster.runs())
            return busy or cluster.count("succeeded") == len(ids)

        # On a slow machine the last jobs may all be done by now.
        wait_until(busy_or_done, f"{host} to be running a job")
        if cluster.count("succeeded") == len(ids):
            break
        cluster.kill(host)
        cluster.start(host, concurrency=8, lease=LEASE)
    wait_until(
        lambda: cluster.count("succeeded") == len(ids), "every job to succeed", 60
    )
    cluster.stop_all()

    states = cluster.states()
    assert sorted(states) == ids
    assert {state for state, _ in states.values()} == {"succeeded"}
    runs = cluster.runs()
    assert overlaps(runs) == []
    assert not [r for r in runs if r.how in ("open", "stop")]
    killed_runs = [r for r in runs if r.how == "killed"]
    assert killed_runs, "no kill landed while a job ran"
    for job_id, job_runs in runs_by_job(runs).items():
        # One run to its end, after which nothing ran it. Any run before it
        # was in a process killed before the job was settled: cut short, or
        # finished with its outcome not yet written.
        assert job_runs[-1].how == "end", job_runs
        assert all(r.pid in cluster.killed for r in job_runs[:-1]), job_runs
        assert states[job_id][1] >= len(job_runs)
    assert set(runs_by_job(runs)) == set(ids)


def test_partitioned_host_fences_itself(cluster: Cluster) -> None:
    """A host cut off mid-job stops its handlers before its leases end."""
    data = partition_experiment(cluster, lease=LEASE)
    states = cluster.states()
    assert {state for state, _ in states.values()} == {"succeeded"}
    runs = cluster.runs()
    assert overlaps(runs) == []
    by_job = runs_by_job(runs)
    t0 = cluster.t0
    partition, heal = data["partition"], data["heal"]
    assert len(data["in_flight"]) == 4
    for job_id in data["in_flight"]:
        cut_off, *later = by_job[job_id]
        assert (cut_off.host, cut_off.how) == ("host0", "stop"), by_job[job_id]
        # Its lease was renewed at the latest when the link was cut, so it
        # ran out by partition + lease: the handler stopped before that.
        assert cut_off.end is not None
        assert cut_off.end - t0 < partition + LEASE, (cut_off.end - t0, partition)
        assert [(r.host != "host0", r.how) for r in later] == [(True, "end")]
    # While cut off, host0 started nothing; once healed, it ran the last jobs.
    host0_after = [r for r in runs if r.host == "host0" and r.start - t0 > partition]
    assert all(r.start - t0 > heal for r in host0_after)
    assert [r.how for r in host0_after] == ["end"] * 4
    assert "could not be renewed" in cluster.stderr(cluster.workers["host0"])


def test_server_ending_every_backend_mid_load(cluster: Cluster) -> None:
    """Every worker connection ended twice by the server: all reconnect and finish."""
    cluster.timeout = 5.0
    for host in cluster.proxies:
        cluster.start(host, concurrency=8, lease=LEASE)
    ids = cluster.enqueue(1500, seconds=0.01)
    terminated = []
    for threshold in (400, 900):
        wait_until(
            lambda t=threshold: cluster.count("succeeded") >= t,
            f"{threshold} jobs to succeed",
        )
        terminated.append(cluster.terminate_backends())
    assert all(n >= 3 for n in terminated), terminated
    wait_until(
        lambda: cluster.count("succeeded") == len(ids), "every job to succeed", 60
    )
    assert all(proc.poll() is None for proc in cluster.workers.values())
    assert cluster.backends() >= 3  # each host connected again
    cluster.stop_all()

    states = cluster.states()
    assert states == dict.fromkeys(ids, ("succeeded", 1))
    runs = cluster.runs()
    assert Counter(r.job_id for r in runs) == dict.fromkeys(ids, 1)
    assert {r.how for r in runs} == {"end"}
