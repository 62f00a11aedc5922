"""Admission order of the bundled servers' scheduler, driven directly with the simulated engine.

Real asyncio sleeps set the scene. Tests marked `timing` also bound how long something took: the
bounds sit well below the hold that would be waited out if the order were wrong, with room for a
busy machine's late wake-ups."""

from __future__ import annotations

import asyncio
import time

import pytest

from sentinel_exp.serve.engines.simulated import SimulatedEngine
from sentinel_exp.serve.scheduler import ModelScheduler
from sentinel_exp.serve.sim_settings import SimSettings

X = {"num_ctx": 2048}
Y = {"num_ctx": 4096}  # another runner option: a reload


@pytest.mark.timing
def test_waiters_for_the_reloaded_model_go_in_arrival_order() -> None:
    # A(X) generates; D(Y) and E(Y) wait to reload; G(Y) arrives during the wait. When D has
    # loaded Y, E (earlier) must not wait behind G's whole generation.
    async def scenario() -> dict[str, float]:
        scheduler = ModelScheduler(SimulatedEngine(SimSettings(load_ms=50)), parallel=0)
        admitted: dict[str, float] = {}
        t0 = time.perf_counter()

        async def request(name: str, options: dict, delay_s: float, hold_s: float) -> None:
            await asyncio.sleep(delay_s)
            async with scheduler.admit("smollm2:135m", options, None):
                admitted[name] = time.perf_counter() - t0
                await asyncio.sleep(hold_s)

        await request("warm", X, 0, 0)
        t0 = time.perf_counter()
        await asyncio.gather(
            request("A", X, 0, 0.15),
            request("D", Y, 0.02, 0.01),
            request("E", Y, 0.04, 0.01),
            request("G", Y, 0.06, 0.3),
        )
        await scheduler.shutdown()
        return admitted

    admitted = asyncio.run(scenario())
    # Y is loaded at ~0.15 + 0.05 s; D, E and G are all admitted then, G's 0.3 s hold included.
    assert admitted["D"] >= 0.19
    # E behind G's whole hold would be 0.3 s later.
    assert admitted["E"] - admitted["D"] < 0.2 and admitted["G"] - admitted["D"] < 0.2, admitted


def test_a_newcomer_does_not_overtake_a_waiting_reload() -> None:
    # R(Y) waits for A(X) to finish. N(Z) asks the moment A's generation ends, in the same step
    # of the event loop, before R has woken up: R still reloads first.
    Z = {"num_ctx": 1024}

    async def scenario() -> list[str]:
        scheduler = ModelScheduler(SimulatedEngine(SimSettings(load_ms=30)), parallel=0)
        order: list[str] = []

        async def a_then_n() -> None:
            async with scheduler.admit("smollm2:135m", X, None):
                order.append("A")
                await asyncio.sleep(0.1)
            async with scheduler.admit("smollm2:135m", Z, None):  # no await in between
                order.append("N")

        async def r() -> None:
            await asyncio.sleep(0.02)
            async with scheduler.admit("smollm2:135m", Y, None):
                order.append("R")
                await asyncio.sleep(0.05)

        await asyncio.gather(a_then_n(), r())
        await scheduler.shutdown()
        return order

    assert asyncio.run(scenario()) == ["A", "R", "N"]


@pytest.mark.timing
def test_keep_alive_zero_answers_at_once_and_unloads_when_the_model_is_free() -> None:
    async def scenario() -> tuple[float, bool, bool]:
        scheduler = ModelScheduler(SimulatedEngine(SimSettings(load_ms=10)), parallel=1)

        async def generate() -> None:
            async with scheduler.admit("smollm2:135m", X, None):
                await asyncio.sleep(0.2)

        busy = [asyncio.create_task(generate()) for _ in range(3)]  # one generating, two queued
        await asyncio.sleep(0.05)
        t = time.perf_counter()
        await scheduler.unload_now("smollm2:135m")
        answered_s = time.perf_counter() - t
        still_loaded = scheduler.resident is not None
        await asyncio.gather(*busy)
        return answered_s, still_loaded, scheduler.resident is None

    answered_s, still_loaded, unloaded = asyncio.run(scenario())
    assert answered_s < 0.15 and still_loaded and unloaded  # waiting would take 0.2 s and more


@pytest.mark.timing
def test_a_load_only_request_does_not_wait_for_a_generation_slot() -> None:
    async def scenario() -> float:
        scheduler = ModelScheduler(SimulatedEngine(SimSettings(load_ms=10)), parallel=1)

        async def generate() -> None:
            async with scheduler.admit("smollm2:135m", X, None):
                await asyncio.sleep(0.3)

        busy = asyncio.create_task(generate())
        await asyncio.sleep(0.05)
        t = time.perf_counter()
        await scheduler.load_only("smollm2:135m", X, -1)
        waited = time.perf_counter() - t
        await busy
        await scheduler.shutdown()
        return waited

    assert asyncio.run(scenario()) < 0.15  # waiting for the slot would take 0.25 s
