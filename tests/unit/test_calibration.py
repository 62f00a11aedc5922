"""Calibration as a rate: over many seeded replicates with noise between runs (or rounds), the
objective's false verdicts stay within the binomial bound of the nominal 5%, and the CI of a known
effect covers it about 95% of the time, for every design the comparison knows: one run per arm, 3
and 5 repeats (independent runs), and the interleaved study (paired rounds).

Each replicate goes through the inference the objective's verdict comes from
(analysis/inference.py, on the per-cluster TTFT p50 as analysis/comparison.py takes it), and the
verdict rule of compare(): significant (the CI excludes 0) and larger than the 2% minimum effect.
A spot check holds compare() itself to the same answer.

Replicates: 240 per design and question; seeds fixed. Bounds: the binomial 99.9% quantiles around
the nominal rate (5% false verdicts: at most 24 of 240; 95% coverage: at least 216 of 240): a
calibrated method fails one in a thousand seed sets, and these seeds are fixed. A method twice as
liberal as it says (10% false verdicts) fails nearly always.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from support.studies import Noise, paired_study, repeated_runs

from sentinel_exp.analysis.comparison import Arm, Verdict, compare
from sentinel_exp.analysis.inference import Clustered, LogRatio, independent_log_ratio, paired_log_ratio

REPLICATES = 240
NOMINAL = 0.05
FALSE_AT_MOST = 24  # binomial(240, 0.05) 99.9% quantile
COVERED_AT_LEAST = 216  # binomial(240, 0.95) 0.1% quantile
MIN_EFFECT_PCT = 2.0
NOISE = Noise(drift=0.05, block=0.05, jitter_ms=3.0)  # 5% between runs (or rounds), 5% per block


def _p50(values: np.ndarray) -> float:
    return float(np.percentile(values, 50))


def _ttft(arm: Arm, by_round: bool) -> Clustered:
    values, clusters = [], []
    for i, run in enumerate(arm.runs):
        for r in run.records:
            if r.measured and r.ok and r.ttft_ms is not None:
                values.append(r.ttft_ms)
                clusters.append(r.block if by_round else i)
    return Clustered(np.asarray(values, dtype=np.float64), np.asarray(clusters, dtype=np.int64))


def _interval(base: Arm, cand: Arm, design: str) -> LogRatio | None:
    return _infer(_ttft(base, design == "paired"), _ttft(cand, design == "paired"), design)


def _infer(base: Clustered, cand: Clustered, design: str) -> LogRatio | None:
    if design == "paired":
        return paired_log_ratio(base, cand, _p50)
    return independent_log_ratio(base, cand, _p50)


def _shape(design: str) -> tuple[int, int]:
    """(clusters, requests per cluster): 10 rounds of 4, or the runs of 120 requests per arm."""
    if design == "paired":
        return 10, 4
    runs = int(design.split()[0])
    return runs, 120 // runs


def _arms(seed: int, design: str, effect: float) -> tuple[Arm, Arm]:
    """The same study as records (tests/support/studies.py), for compare() itself."""
    rng = np.random.default_rng(seed)
    clusters, size = _shape(design)
    if design == "paired":
        return paired_study(rng, rounds=clusters, per_block=size, effect=effect, noise=NOISE)
    return repeated_runs(rng, runs=clusters, per_run=size, effect=effect, noise=NOISE)


def _values(seed: int, design: str, effect: float) -> tuple[Clustered, Clustered]:
    """The replicate's TTFTs drawn as arrays, as the record factory draws them: a shared drift per
    round (paired) or an offset per run (independent), a hiccup per block, jitter per request."""
    rng = np.random.default_rng(seed)
    clusters, size = _shape(design)
    labels = np.repeat(np.arange(clusters), size)
    shared = np.exp(np.cumsum(rng.normal(0.0, NOISE.drift, clusters)))
    arms = []
    for factor in (1.0, effect):
        own = shared if design == "paired" else np.exp(rng.normal(0.0, NOISE.drift, clusters))
        scale = own * np.exp(rng.normal(0.0, NOISE.block, clusters))
        ttft = (rng.normal(40.0 * factor, NOISE.jitter_ms, clusters * size)) * np.repeat(scale, size)
        arms.append(Clustered(ttft, labels))
    return arms[0], arms[1]


def _called(interval: LogRatio | None) -> bool:
    """compare()'s rule for the objective: the CI excludes 0 and the change passes the minimum effect."""
    if interval is None:
        return False
    low, high = interval.bounds(NOMINAL)
    return (low > 0 or high < 0) and abs(interval.change_pct) > MIN_EFFECT_PCT


DESIGNS = ["paired", "3 repeats", "5 repeats"]


@pytest.mark.parametrize("design", DESIGNS)
def test_identical_arms_get_false_verdicts_at_most_at_the_nominal_rate(design: str) -> None:
    false = sum(_called(_infer(*_values(seed, design, 1.0), design)) for seed in range(REPLICATES))
    print(f"\n{design}: {false}/{REPLICATES} false verdicts (nominal {NOMINAL:.0%}, bound {FALSE_AT_MOST})")
    assert false <= FALSE_AT_MOST


@pytest.mark.parametrize("design", DESIGNS)
def test_the_interval_of_a_known_effect_covers_it_at_the_nominal_rate(design: str) -> None:
    truth = 100 * (1.15 - 1)
    covered = 0
    for seed in range(REPLICATES):
        interval = _infer(*_values(10_000 + seed, design, 1.15), design)
        assert interval is not None
        low, high = interval.bounds(NOMINAL)
        covered += low <= truth <= high
    print(f"\n{design}: the CI covers +15% in {covered}/{REPLICATES} (nominal 95%, bound {COVERED_AT_LEAST})")
    assert covered >= COVERED_AT_LEAST


def test_one_run_per_arm_never_claims_a_verdict() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        base, cand = repeated_runs(rng, runs=1, per_run=100, effect=1.3, noise=NOISE)
        assert _interval(base, cand, "1 run") is None
        row = compare(base, cand).primary
        assert row is not None and row.verdict == Verdict.NO_CI


@pytest.mark.parametrize("design", DESIGNS)
def test_compare_gives_the_objective_the_verdict_the_inference_gives(design: str) -> None:
    for seed in range(8):
        base, cand = _arms(20_000 + seed, design, 1.0 + 0.03 * seed)
        interval = _interval(base, cand, design)
        row = compare(base, cand, min_effect_pct=MIN_EFFECT_PCT).primary
        assert interval is not None and row is not None
        assert row.change_pct == pytest.approx(interval.change_pct)
        assert (row.ci_low, row.ci_high) == pytest.approx(interval.bounds(NOMINAL))
        assert (row.verdict in {Verdict.IMPROVED, Verdict.WORSE}) == _called(interval)


def test_the_bounds_are_the_binomial_quantiles_they_say() -> None:
    from scipy.stats import binom

    assert binom.ppf(0.999, REPLICATES, NOMINAL) == FALSE_AT_MOST
    assert binom.ppf(0.001, REPLICATES, 1 - NOMINAL) == COVERED_AT_LEAST
    assert math.isclose(1 - NOMINAL, 0.95)
