"""Load generation: warmup, then a closed loop of N in-flight requests or Poisson arrivals.

A phase stops taking new work when `stop` is set; requests still in flight are cancelled and
come back as Cancelled records, so what finished is never lost and nothing is double-counted.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sentinel_exp.records import RequestRecord

OnRecord = Callable[[RequestRecord], None]
# Sends request `index`, which arrived at `arrival_ns` (perf_counter_ns), and hands its record to
# the callback, also when cancelled. Queueing before the send counts from the arrival.
SendOne = Callable[[int, int, OnRecord], Awaitable[None]]


@dataclass(frozen=True)
class PhasePlan:
    requests: int
    concurrency: int = 1
    rate: float | None = None  # requests per second; None = closed loop
    seed: int = 0


async def run_phase(plan: PhasePlan, send_one: SendOne, on_record: OnRecord, stop: asyncio.Event) -> float:
    """Run one phase; returns its wall duration in seconds."""
    started = time.perf_counter_ns()
    if plan.rate is None:
        await _closed_loop(plan, send_one, on_record, stop)
    else:
        await _poisson(plan, send_one, on_record, stop)
    return (time.perf_counter_ns() - started) / 1e9


async def _until_stopped(stop: asyncio.Event, work: list[asyncio.Task[None]]) -> None:
    """Wait for the work, or cancel what is in flight as soon as `stop` is set. A bug inside
    a task is re-raised here rather than lost as an unretrieved task exception."""
    stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
    pending = set(work)
    try:
        while pending:
            done, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            pending.discard(stopper)
            if stopper in done:
                break
    finally:
        stopper.cancel()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for task in work:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _closed_loop(plan: PhasePlan, send_one: SendOne, keep: OnRecord, stop: asyncio.Event) -> None:
    next_index = iter(range(plan.requests))

    async def worker() -> None:
        for index in next_index:
            if stop.is_set():
                return
            await send_one(index, time.perf_counter_ns(), keep)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(plan.concurrency, plan.requests)))]
    await _until_stopped(stop, workers)


async def _poisson(plan: PhasePlan, send_one: SendOne, keep: OnRecord, stop: asyncio.Event) -> None:
    """Open loop: exponential gaps at `rate`, at most `concurrency` in flight (a client cap:
    an arrival that finds it full waits, and the wait is in its queue_ms, not hidden)."""
    assert plan.rate is not None and plan.rate > 0
    rate = plan.rate
    rng = random.Random(plan.seed)
    slots = asyncio.Semaphore(max(1, plan.concurrency))
    tasks: list[asyncio.Task[None]] = []

    async def one(index: int, arrival_ns: int) -> None:
        async with slots:
            await send_one(index, arrival_ns, keep)

    async def arrivals() -> None:
        due = time.perf_counter()
        for index in range(plan.requests):
            if stop.is_set():
                return
            tasks.append(asyncio.create_task(one(index, time.perf_counter_ns())))
            due += rng.expovariate(rate)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    await _until_stopped(stop, [asyncio.create_task(arrivals())])
    await _until_stopped(stop, tasks)
