"""Load generation: warmup, then a closed loop of N in-flight requests or Poisson arrivals.

A phase stops taking new work when `stop` is set; requests still in flight are cancelled and
come back as Cancelled records, so what finished is never lost and nothing is double-counted.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from sentinel_exp.records import RequestRecord

OnRecord = Callable[[RequestRecord], None]
# Sends request `index` and hands its record to the callback, also when cancelled.
SendOne = Callable[[int, OnRecord], Awaitable[None]]


@dataclass(frozen=True)
class PhasePlan:
    requests: int
    concurrency: int = 1
    rate: float | None = None  # requests per second; None = closed loop
    seed: int = 0


@dataclass
class PhaseResult:
    records: list[RequestRecord]
    started_ns: int
    ended_ns: int
    stopped: bool

    @property
    def duration_s(self) -> float:
        return (self.ended_ns - self.started_ns) / 1e9


async def run_phase(plan: PhasePlan, send_one: SendOne, on_record: OnRecord, stop: asyncio.Event) -> PhaseResult:
    records: list[RequestRecord] = []

    def keep(record: RequestRecord) -> None:
        records.append(record)
        on_record(record)

    started = time.perf_counter_ns()
    if plan.rate is None:
        await _closed_loop(plan, send_one, keep, stop)
    else:
        await _poisson(plan, send_one, keep, stop)
    return PhaseResult(records, started, time.perf_counter_ns(), stop.is_set())


async def _until_stopped(stop: asyncio.Event, work: list[asyncio.Task[None]]) -> None:
    """Wait for the work, or cancel what is in flight as soon as `stop` is set. A bug inside
    a task is re-raised here rather than lost as an unretrieved task exception."""
    stopper = asyncio.create_task(stop.wait())
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
            await send_one(index, keep)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(plan.concurrency, plan.requests)))]
    await _until_stopped(stop, workers)


async def _poisson(plan: PhasePlan, send_one: SendOne, keep: OnRecord, stop: asyncio.Event) -> None:
    """Open loop: exponential gaps at `rate`, at most `concurrency` in flight (a client cap,
    so arrivals that find it full wait, and that wait shows up in queue time)."""
    assert plan.rate is not None and plan.rate > 0
    rng = random.Random(plan.seed)
    slots = asyncio.Semaphore(max(1, plan.concurrency))
    tasks: list[asyncio.Task[None]] = []

    async def one(index: int) -> None:
        async with slots:
            await send_one(index, keep)

    async def arrivals() -> None:
        due = time.perf_counter()
        for index in range(plan.requests):
            if stop.is_set():
                return
            tasks.append(asyncio.create_task(one(index)))
            due += rng.expovariate(plan.rate)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    await _until_stopped(stop, [asyncio.create_task(arrivals())])
    await _until_stopped(stop, tasks)
