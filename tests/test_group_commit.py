"""Group commit: enqueues that arrive together share one transaction.

The unit tests drive :class:`GroupCommit` with a recording ``write``; the
SQLite tests trace the statements a real store runs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio
import trio.testing

from jobkit import NewJob, SQLiteStore
from jobkit.store import StoreBusy
from jobkit.store._group import GroupCommit


class Recorder:
    """A ``write`` that records each batch; "bad" items refuse the whole batch."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_with = fail_with
        self.gate: trio.Event | None = None

    async def write(self, items: list[str]) -> list[str]:
        await trio.lowlevel.checkpoint()
        if self.gate is not None:
            await self.gate.wait()
        self.batches.append(items)
        if self.fail_with is not None:
            raise self.fail_with
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]


async def submit_all(
    group: GroupCommit[str, str], calls: list[list[str]]
) -> list[object]:
    results: list[object] = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            results[i] = await group.submit(calls[i])
        except Exception as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i in range(len(calls)):
            nursery.start_soon(one, i)
    return results


async def test_calls_made_together_share_one_write_and_get_their_own_results() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.write)
    results = await submit_all(group, [["a"], ["b", "c"], ["d"]])
    # Tasks started together run in an order trio chooses.
    [batch] = recorder.batches
    assert sorted(batch) == ["a", "b", "c", "d"]
    assert batch.index("b") + 1 == batch.index("c")
    assert results == [["A"], ["B", "C"], ["D"]]


async def test_calls_one_after_another_write_alone() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.write)
    assert await group.submit(["a"]) == ["A"]
    assert await group.submit(["b"]) == ["B"]
    assert recorder.batches == [["a"], ["b"]]


async def test_a_refused_item_fails_only_its_own_call() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.write)
    results = await submit_all(group, [["a"], ["bad"], ["c"]])
    assert results[0] == ["A"] and results[2] == ["C"]
    assert isinstance(results[1], ValueError)
    # The group, then each call alone.
    group_batch, *alone = recorder.batches
    assert sorted(group_batch) == ["a", "bad", "c"]
    assert alone == [[item] for item in group_batch]


async def test_an_unavailable_store_fails_every_call_after_one_write() -> None:
    recorder = Recorder(fail_with=StoreBusy("locked"))
    group = GroupCommit(recorder.write)
    results = await submit_all(group, [["a"], ["b"]])
    assert all(isinstance(r, StoreBusy) for r in results)
    assert [sorted(batch) for batch in recorder.batches] == [["a", "b"]]


async def cancel_before_write() -> tuple[list[object], list[str]]:
    recorder = Recorder()
    group = GroupCommit(recorder.write)
    outcome: list[object] = []

    async def doomed() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            outcome.append(await group.submit(["b"]))
        if scope.cancelled_caught:
            outcome.append("cancelled")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.submit, ["a"])
        nursery.start_soon(doomed)
        nursery.start_soon(group.submit, ["c"])
    return outcome, sorted(item for batch in recorder.batches for item in batch)


async def test_a_cancelled_caller_either_wrote_nothing_or_returns_its_result() -> None:
    # Whether the cancellation reaches the caller before or after its
    # group's leader takes the items depends on the order trio runs them
    # in; both keep the promise.
    for _ in range(20):
        outcome, written = await cancel_before_write()
        if outcome == ["cancelled"]:
            assert written == ["a", "c"]
        else:
            assert outcome == [["B"]] and written == ["a", "b", "c"]


async def test_the_others_are_written_when_the_leader_is_cancelled() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.write)
    results: list[object] = []

    async def lead(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await group.submit(["a"])
        results.append(("leader", scope.cancelled_caught))

    async def follow() -> None:
        results.append(("follower", await group.submit(["b"])))

    async with trio.open_nursery() as nursery:
        scope = await nursery.start(lead)
        nursery.start_soon(follow)
        scope.cancel()
    assert ("leader", True) in results and ("follower", ["B"]) in results
    assert recorder.batches == [["b"]]


async def cancel_during_write() -> tuple[list[object], list[list[str]]]:
    recorder = Recorder()
    recorder.gate = trio.Event()
    group = GroupCommit(recorder.write)
    got: list[object] = []

    async def b(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            got.append(await group.submit(["b"]))
            await trio.lowlevel.checkpoint()  # a late cancellation lands here
        got.append(scope.cancelled_caught)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(group.submit, ["a"])
        scope = await nursery.start(b)
        await trio.testing.wait_all_tasks_blocked()
        assert recorder.batches == []  # the write waits at the gate
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        recorder.gate.set()
    return got, [sorted(batch) for batch in recorder.batches]


async def test_a_caller_cancelled_during_the_write() -> None:
    # "b" is cancelled while its group's write waits at the gate. As a
    # follower it waits for that write and returns its result; as the
    # leader, it is the write that is cancelled: nothing is committed and
    # "a" is written by a group of its own.
    for _ in range(20):
        got, batches = await cancel_during_write()
        if got == [True]:
            assert batches == [["a"]]
        else:
            assert got == [["B"], True] and batches == [["a", "b"]]


# -- the SQLite store --------------------------------------------------------------


def trace(store: SQLiteStore) -> list[str]:
    statements: list[str] = []
    conn: sqlite3.Connection = store._conn
    conn.set_trace_callback(statements.append)
    return statements


async def test_concurrent_enqueues_commit_once(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "jobs.db") as store:
        statements = trace(store)
        ids: dict[int, list[int]] = {}

        async def enqueue(i: int) -> None:
            ids[i] = await store.enqueue(
                [NewJob(task="t", payload={"i": i}, unique_key=f"k{i % 5}")],
                now=float(i),
            )

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(enqueue, i)
        assert statements.count("COMMIT") == 1
        # Unique keys hold across the calls of one group: the first of each
        # key is stored, the others get its id.
        jobs = {job.id: job for job in await store.list(limit=100)}
        assert len(jobs) == 5
        for i, [job_id] in ids.items():
            job = jobs[job_id]
            assert job.unique_key == f"k{i % 5}"
            assert job.payload["i"] % 5 == i % 5
            assert job.created_at == float(job.payload["i"])


async def test_one_enqueue_alone_is_one_statement(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "jobs.db") as store:
        statements = trace(store)
        assert await store.enqueue([NewJob(task="t")], now=0.0) == [1]
        # The trigger's statements follow; no BEGIN or COMMIT of its own.
        assert statements[0].startswith("INSERT INTO jobs")
        assert not [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")]


async def test_a_row_sqlite_refuses_fails_only_its_own_call(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "jobs.db") as store:
        # A length limit small enough for one payload to break it.
        store._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 500)
        results: dict[int, object] = {}

        async def enqueue(i: int) -> None:
            text = "x" * (1000 if i == 1 else 10)
            try:
                results[i] = await store.enqueue(
                    [NewJob(task="t", payload={"text": text})], now=0.0
                )
            except sqlite3.DataError as exc:
                results[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(enqueue, i)
        assert isinstance(results[1], sqlite3.DataError)
        stored = await store.list(limit=10)
        assert [job.payload["text"] for job in stored] == ["x" * 10] * 2
        assert sorted(results[0] + results[2]) == [job.id for job in stored]  # type: ignore[operator]
