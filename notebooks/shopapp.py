"""The small shop application of chapter 8, which its workers import."""

import trio

import jobkit

queue = jobkit.Queue()


@queue.task()
async def send_report(day: str) -> str:
    await trio.sleep(0.05)
    return f"report for {day} sent"


@queue.task(retry=jobkit.RetryPolicy(2, jobkit.Backoff.constant(0.2)))
async def call_webhook(url: str) -> None:
    raise ConnectionError(f"{url} refused the connection")


@queue.task()
async def purge_sessions(days: int) -> int:
    return 17  # sessions removed
