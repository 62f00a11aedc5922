"""Poisson arrivals (workload.rate), tested as a distribution: over thousands of seeded arrivals the
gaps between them are exponential with mean 1/rate. The phase runs for real on a clock of its own
that advances exactly as long as the load generator sleeps, so what is tested is the schedule the
generator keeps, not how punctually this machine wakes up."""

from __future__ import annotations

import asyncio
import types

import numpy as np
import pytest
from scipy import stats

from sentinel_exp.records import RequestRecord
from sentinel_exp.run import load
from sentinel_exp.run.load import PhasePlan, run_phase

ARRIVALS = 2000
RATE = 50.0  # requests per second: a mean gap of 20 ms


class Clock:
    """perf_counter and a sleep that moves it forward, in place of the real ones in load.py."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def perf_counter_ns(self) -> int:
        return round(self.now * 1e9)

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await _yield(0)


_yield = asyncio.sleep  # the real one, with 0: lets the other tasks run


def arrivals(monkeypatch: pytest.MonkeyPatch, seed: int, requests: int = ARRIVALS) -> np.ndarray:
    clock = Clock()
    monkeypatch.setattr(load, "time", clock)
    monkeypatch.setattr(load, "asyncio", types.SimpleNamespace(**{**vars(asyncio), "sleep": lambda s: clock.sleep(s)}))
    seen: list[int] = []

    async def send_one(index: int, arrival_ns: int, keep: object) -> None:
        seen.append(arrival_ns)

    plan = PhasePlan(requests=requests, concurrency=requests, rate=RATE, seed=seed)

    def keep(record: RequestRecord) -> None:
        return None

    asyncio.run(run_phase(plan, send_one, keep, asyncio.Event()))
    return np.diff(np.asarray(seen, dtype=np.float64)) / 1e9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poisson_gaps_are_exponential_with_the_configured_rate(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    gaps = arrivals(monkeypatch, seed)
    assert gaps.size == ARRIVALS - 1
    # Mean gap 1/rate: its standard error over 1999 gaps is 2.2%, so ±7% is over 3 of them.
    assert gaps.mean() == pytest.approx(1 / RATE, rel=0.07)
    # An exponential's coefficient of variation is 1 (fixed gaps: 0; uniform ones: 0.58).
    assert gaps.std(ddof=1) / gaps.mean() == pytest.approx(1.0, abs=0.07)
    # And its shape: Kolmogorov–Smirnov against Exp(1/rate), at the 1% level.
    assert stats.kstest(gaps, "expon", args=(0, 1 / RATE)).pvalue > 0.01


def test_the_seed_fixes_the_arrivals(monkeypatch: pytest.MonkeyPatch) -> None:
    first, again, other = (arrivals(monkeypatch, seed, requests=50) for seed in (7, 7, 8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
