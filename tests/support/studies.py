"""Request records of made-up studies, drawn with numpy, for the comparison's tests: the noise of
a shared machine (a drift that every arm of a round shares, a hiccup that hits one arm's block,
jitter between requests) on top of known latencies, so that what the truth is stays known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sentinel_exp.analysis.comparison import Arm, RunResult
from sentinel_exp.names import Api, Phase
from sentinel_exp.records import RequestRecord


@dataclass(frozen=True)
class Noise:
    """Multiplicative noise of a shared machine: `drift` (sd of a random walk per round, shared by
    every arm measured in that round, or per run between runs), `block` (sd of one arm's block, or
    one run), `jitter_ms` (between requests)."""

    drift: float = 0.10
    block: float = 0.05
    jitter_ms: float = 3.0


QUIET = Noise(drift=0.0, block=0.0, jitter_ms=3.0)


def requests(
    rng: np.random.Generator,
    n: int,
    *,
    ttft: float = 40.0,
    jitter: float = 3.0,
    scale: float = 1.0,
    tokens: tuple[int, int] = (20, 41),
    itl: float = 10.0,
    failed: int = 0,
    block: int | None = None,
    first: int = 0,
) -> list[RequestRecord]:
    """`n` successful measured requests (TTFT ~ N(ttft, jitter) x scale, tokens uniform in
    [tokens), gaps ~ N(itl, 1) x scale), then `failed` failed ones with absurd latencies that must
    never become samples; `block` is the round they were measured in."""
    ttfts = (rng.normal(ttft, jitter, n)) * scale
    counts = rng.integers(tokens[0], tokens[1], n)
    out = []
    for i in range(n):
        gaps = np.abs(rng.normal(itl, 1.0, counts[i] - 1)) * scale
        chunks = ttfts[i] + np.concatenate(([0.0], np.cumsum(gaps)))
        out.append(
            RequestRecord(
                index=first + i,
                phase=Phase.MEASURED,
                prompt_index=(first + i) % 10,
                api=Api.chat,
                ok=True,
                ttfb_ms=float(ttfts[i] - 1.0),
                ttft_ms=float(ttfts[i]),
                e2e_ms=float(chunks[-1] + 0.5),
                chunk_times_ms=chunks.tolist(),
                eval_count=int(counts[i]),
                block=block,
            )
        )
    for i in range(failed):
        out.append(
            RequestRecord(
                index=first + n + i,
                phase=Phase.MEASURED,
                prompt_index=0,
                api=Api.chat,
                ok=False,
                ttfb_ms=5000.0,
                ttft_ms=5000.0,
                e2e_ms=9000.0,
                chunk_times_ms=[5000.0, 9000.0],
                error_class="StreamCut",
                block=block,
            )
        )
    return out


def warmup_requests(n: int = 2) -> list[RequestRecord]:
    """Slow warmup requests: any statistic that counted them would show it."""
    return [
        RequestRecord(
            index=i,
            phase=Phase.WARMUP,
            prompt_index=0,
            api=Api.chat,
            ok=True,
            ttfb_ms=900.0,
            ttft_ms=900.0,
            e2e_ms=1200.0,
            chunk_times_ms=[900.0, 1200.0],
            eval_count=2,
        )
        for i in range(n)
    ]


def paired_study(
    rng: np.random.Generator,
    *,
    rounds: int = 10,
    per_block: int = 4,
    effect: float = 1.0,
    noise: Noise = Noise(),
    ttft: float = 40.0,
    candidate_itl: float = 10.0,
    study: str = "s1",
) -> tuple[Arm, Arm]:
    """Two arms measured in the same rounds of one interleaved study: both see each round's drift,
    each its own block hiccups; the candidate's latencies are `effect` times the baseline's."""
    drift = np.exp(np.cumsum(rng.normal(0.0, noise.drift, rounds)))
    arms = []
    for name, factor, itl in (("base", 1.0, 10.0), ("cand", effect, candidate_itl)):
        records = warmup_requests()
        for r in range(rounds):
            scale = drift[r] * float(np.exp(rng.normal(0.0, noise.block)))
            records += requests(
                rng,
                per_block,
                ttft=ttft * factor,
                jitter=noise.jitter_ms,
                scale=scale,
                itl=itl,
                block=r,
                first=r * per_block,
            )
        arms.append(Arm(name, [RunResult(records, study=study)]))
    return arms[0], arms[1]


def repeated_runs(
    rng: np.random.Generator,
    *,
    runs: int = 3,
    per_run: int = 40,
    effect: float = 1.0,
    noise: Noise = Noise(),
    metrics: list[dict[str, float]] | None = None,
) -> tuple[Arm, Arm]:
    """Two arms of independent runs (a sequential sweep's repeats): every run its own offset."""
    arms = []
    for name, factor in (("base", 1.0), ("cand", effect)):
        results = []
        for i in range(runs):
            scale = float(np.exp(rng.normal(0.0, noise.drift) + rng.normal(0.0, noise.block)))
            records = requests(rng, per_run, ttft=40.0 * factor, jitter=noise.jitter_ms, scale=scale)
            results.append(RunResult(records, metrics=(metrics[i] if metrics else {})))
        arms.append(Arm(name, results))
    return arms[0], arms[1]


def single_runs(rng: np.random.Generator, n: int = 50, effect: float = 1.0) -> tuple[Arm, Arm]:
    """One run per arm, measured on its own: nothing tells the noise between runs."""
    return (
        Arm("base", [RunResult(requests(rng, n))]),
        Arm("cand", [RunResult(requests(rng, n, ttft=40.0 * effect))]),
    )
