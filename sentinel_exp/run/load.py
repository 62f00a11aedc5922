"""Load generation: warmup, then a closed loop of N in-flight requests or Poisson arrivals.

A phase stops taking new work when `stop` is set; requests still in flight are cancelled and
come back as Cancelled records, so what finished is never lost and nothing is double-counted.

Pacing lives here alone: a closed-loop client's think time after each request (before the next
becomes due, so never inside a request's timings), and idle pauses after every `idle_every`
requests, when nothing is sent until the requests in flight have ended and `idle_s` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sentinel_exp.config.distributions import Distribution
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
    think_time: Distribution | None = None  # closed loop: a client's wait after each request; None = none
    idle_every: int = 0  # an idle pause after every this many requests; 0 = never
    idle_s: float = 0.0


async def run_phase(plan: PhasePlan, send_one: SendOne, on_record: OnRecord, stop: asyncio.Event) -> float:
    """Run one phase; returns its wall duration in seconds (think times and idle pauses included)."""
    started = time.perf_counter_ns()
    arrivals = random.Random(plan.seed)
    # One stream of think times per client, so a client's waits do not depend on the others' timing.
    thinking = [random.Random(f"{plan.seed}:think:{client}") for client in range(max(1, plan.concurrency))]
    batch = plan.idle_every if plan.idle_every > 0 else plan.requests
    for first in range(0, plan.requests, max(1, batch)):
        if stop.is_set():
            break
        if first:
            await _pause(plan.idle_s, stop)
        indices = range(first, min(first + batch, plan.requests))
        if plan.rate is None:
            await _closed_loop(plan, indices, thinking, send_one, on_record, stop)
        else:
            await _poisson(plan, indices, arrivals, send_one, on_record, stop)
    return (time.perf_counter_ns() - started) / 1e9


async def _pause(seconds: float, stop: asyncio.Event) -> None:
    """Sleep, or return as soon as `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


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


async def _closed_loop(
    plan: PhasePlan,
    indices: range,
    thinking: list[random.Random],
    send_one: SendOne,
    keep: OnRecord,
    stop: asyncio.Event,
) -> None:
    next_index = iter(indices)

    async def worker(rng: random.Random) -> None:
        for sent, index in enumerate(next_index):
            if stop.is_set():
                return
            if sent and plan.think_time is not None:
                await asyncio.sleep(plan.think_time.sample(rng))
            # Due when the client is done thinking: the think time is in no request's timings.
            await send_one(index, time.perf_counter_ns(), keep)

    clients = thinking[: max(1, min(plan.concurrency, len(indices)))]
    await _until_stopped(stop, [asyncio.create_task(worker(rng)) for rng in clients])


async def _poisson(
    plan: PhasePlan, indices: range, rng: random.Random, send_one: SendOne, keep: OnRecord, stop: asyncio.Event
) -> None:
    """Open loop: exponential gaps at `rate`, at most `concurrency` in flight (a client cap:
    an arrival that finds it full waits, and the wait is in its queue_ms, not hidden)."""
    assert plan.rate is not None and plan.rate > 0
    rate = plan.rate
    slots = asyncio.Semaphore(max(1, plan.concurrency))
    tasks: list[asyncio.Task[None]] = []

    async def one(index: int, arrival_ns: int) -> None:
        async with slots:
            await send_one(index, arrival_ns, keep)

    async def arrivals() -> None:
        due = time.perf_counter()
        for index in indices:
            if stop.is_set():
                return
            tasks.append(asyncio.create_task(one(index, time.perf_counter_ns())))
            due += rng.expovariate(rate)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    await _until_stopped(stop, [asyncio.create_task(arrivals())])
    await _until_stopped(stop, tasks)
