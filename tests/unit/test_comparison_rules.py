"""Each documented rule of the comparison (docs/statistics.md) at its boundary, on records whose
values are laid out by hand, so that the boundary is exact: the minimum effect, Holm's correction
of the secondary rows, the 95% level, the change against the baseline, the 20 successful requests
a side and the 10% difference in output length. The arms are mostly one interleaved study's
(paired by round), whose interval is a t interval over the rounds' log ratios: the expected
numbers are computed here from the rounds with scipy. Each test fails when its rule changes
(scripts/mutation_survivors.md lists the mutants that prove it)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from sentinel_exp.analysis.comparison import (
    DEFAULT_MIN_EFFECT_PCT,
    Arm,
    Comparison,
    MetricComparison,
    RunResult,
    Verdict,
    compare,
)
from sentinel_exp.names import Api, ErrorClass, Phase
from sentinel_exp.records import RequestRecord


def spread(n: int, half_width: float) -> NDArray[np.float64]:
    """`n` values evenly spaced in [-half_width, half_width], symmetric about 0, so that their
    median is exactly 0 for any n."""
    k = n // 2
    side = half_width * np.arange(1, k + 1) / k if k else np.zeros(0)
    return np.concatenate((-side[::-1], np.zeros(n % 2), side))


def request(
    index: int,
    ttft: float,
    *,
    ttfb: float | None = None,
    tokens: int = 20,
    itl: float = 10.0,
    block: int | None = None,
) -> RequestRecord:
    """A successful measured request: TTFB (default TTFT − 1 ms), TTFT, then `tokens` chunks
    `itl` apart; E2E is the last chunk plus 0.5 ms."""
    chunks = [ttft + itl * k for k in range(tokens)]
    return RequestRecord(
        index=index,
        phase=Phase.MEASURED,
        prompt_index=0,
        api=Api.chat,
        ok=True,
        ttfb_ms=ttft - 1.0 if ttfb is None else ttfb,
        ttft_ms=ttft,
        e2e_ms=chunks[-1] + 0.5,
        chunk_times_ms=chunks,
        eval_count=tokens,
        block=block,
    )


def failed(index: int) -> RequestRecord:
    """A measured request cut short: it counts in the error rate, never in a latency."""
    return RequestRecord(
        index=index,
        phase=Phase.MEASURED,
        prompt_index=0,
        api=Api.chat,
        ok=False,
        ttfb_ms=5.0,
        ttft_ms=6.0,
        chunk_times_ms=[6.0],
        error_class=ErrorClass.STREAM_CUT,
    )


def arm(name: str, ttfts: NDArray[np.float64] | list[float], **kwargs: object) -> Arm:
    """One run of one request per TTFT value, plus a warmup request that must stay out of it all."""
    warmup = RequestRecord(index=-1, phase=Phase.WARMUP, prompt_index=0, api=Api.chat, ok=True, ttft_ms=9e3)
    records = [request(i, float(t), **kwargs) for i, t in enumerate(ttfts)]  # type: ignore[arg-type]
    return Arm(name, [RunResult([warmup, *records])])


def row(result: Comparison, metric: str) -> MetricComparison:
    found = result.row(metric)
    assert found is not None, f"no {metric} row in {[r.metric for r in result.rows]}"
    return found


def study_arm(name: str, rounds: list[NDArray[np.float64]], ttfbs: list[NDArray[np.float64]] | None = None) -> Arm:
    """One run of an interleaved study ("s"): round k's requests have the TTFTs rounds[k] (and the
    TTFBs ttfbs[k], else TTFT - 1 ms)."""
    records = []
    for k, ttfts in enumerate(rounds):
        for j, ttft in enumerate(ttfts):
            ttfb = None if ttfbs is None else float(ttfbs[k][j])
            records.append(request(len(records), float(ttft), ttfb=ttfb, block=k))
    return Arm(name, [RunResult(records, study="s")])


def t_test(log_ratios: NDArray[np.float64]) -> tuple[float, float, float]:
    """The paired t of the rounds' log ratios, written out: mean, standard error, two-sided p."""
    n = log_ratios.size
    mean, se = float(log_ratios.mean()), float(log_ratios.std(ddof=1) / np.sqrt(n))
    return mean, se, float(2 * stats.t.sf(abs(mean) / se, n - 1))


ROUNDS = 10
# Each round's ratio candidate / baseline is exp(mean + WOBBLE[k]): the rounds disagree a little,
# as a real study's do. WOBBLE has mean 0 and standard deviation 1.
WOBBLE = np.array([1.2, -0.8, 0.3, -1.5, 0.9, -0.2, 1.6, -1.1, 0.4, -0.8])
WOBBLE = (WOBBLE - WOBBLE.mean()) / WOBBLE.std(ddof=1)


def scaled_rounds(base: NDArray[np.float64], mean: float, spread: float) -> list[NDArray[np.float64]]:
    """The same baseline values in every round, and the candidate's: times exp(mean + spread * WOBBLE[k])."""
    return [base * np.exp(mean + spread * w) for w in WOBBLE]


# --- the minimum effect ---------------------------------------------------------------------------


def test_a_one_percent_change_is_significant_but_below_the_default_minimum_effect() -> None:
    # 10 rounds of 201 requests (2010 a side), TTFT 100 ± 5 ms against 1% less, the rounds within
    # ±0.1% of that: significant, yet smaller than the default minimum effect of 2%.
    base = 100.0 + spread(201, 5.0)
    baseline = study_arm("base", [base] * ROUNDS)
    candidate = study_arm("cand", scaled_rounds(base, np.log(0.99), 0.0005))

    default = compare(baseline, candidate)
    ttft = row(default, "ttft_ms_p50")
    assert DEFAULT_MIN_EFFECT_PCT == 2.0 and "min effect 2%" in default.method
    assert ttft.primary and ttft.n_baseline == 2010 and ttft.change_pct == pytest.approx(-1.0, abs=1e-9)
    assert ttft.ci_low is not None and ttft.ci_high is not None and -1.1 < ttft.ci_low < ttft.ci_high < -0.9
    # Not improved: the whole CI lies within the minimum effect, so the objective is "equivalent".
    assert ttft.verdict == Verdict.EQUIVALENT
    # TTFB (TTFT − 1 ms) moved by about 1.01%: a secondary row, significant after Holm, still too small.
    ttfb = row(default, "ttfb_ms_p50")
    assert ttfb.p_adjusted is not None and ttfb.p_adjusted < 0.01 and ttfb.verdict == Verdict.NO_CHANGE

    gate_off = compare(baseline, candidate, min_effect_pct=0.0)
    assert row(gate_off, "ttft_ms_p50").verdict == Verdict.IMPROVED
    assert row(gate_off, "ttfb_ms_p50").verdict == Verdict.IMPROVED
    assert "min effect 0%" in gate_off.method


def test_a_change_counts_only_when_larger_than_the_minimum_effect() -> None:
    # -5% (pooled p50s within ±0.05% of it), its CI far from 0: improved under a minimum effect of
    # 4.9%, not under 5.1%.
    base = 100.0 + spread(21, 2.0)
    baseline, candidate = study_arm("base", [base] * ROUNDS), study_arm("cand", scaled_rounds(base, np.log(0.95), 1e-4))
    assert row(compare(baseline, candidate, min_effect_pct=4.9), "ttft_ms_p50").verdict == Verdict.IMPROVED
    assert row(compare(baseline, candidate, min_effect_pct=5.1), "ttft_ms_p50").verdict != Verdict.IMPROVED
    # A slower candidate (+5.26%) is held to the same gate.
    assert row(compare(candidate, baseline, min_effect_pct=5.1), "ttft_ms_p50").verdict == Verdict.WORSE
    assert row(compare(candidate, baseline, min_effect_pct=5.4), "ttft_ms_p50").verdict != Verdict.WORSE


# --- Holm–Bonferroni on the secondary rows --------------------------------------------------------


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out here apart from the code under test: the k-th
    smallest of m p-values times (m − k + 1), kept monotone, capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted.tolist()


def assert_holm_row_by_row(result: Comparison) -> None:
    secondary = [r for r in result.rows if not r.primary and r.p_value is not None]
    expected = holm([r.p_value for r in secondary if r.p_value is not None])
    for r, adjusted in zip(secondary, expected, strict=True):
        assert r.p_adjusted == pytest.approx(adjusted, rel=1e-12), r.metric
    for r in result.rows:
        if r.primary:
            assert r.p_adjusted == r.p_value
        elif r.p_value is None:
            assert r.p_adjusted is None


# Round k's log ratio of the candidate's TTFB p95: 0.04 + 0.04518 * WOBBLE[k], a t of 2.8 over
# 9 degrees of freedom, p = 0.0207.
P95_SHIFT, P95_SPREAD = 0.04, 0.04 * np.sqrt(ROUNDS) / 2.8


def ttfb_study() -> tuple[Arm, Arm, NDArray[np.float64]]:
    """TTFT 100 ± 5 ms in both arms, in every round; TTFB 50 ± 15 ms, the candidate's slowest fifth
    scaled per round, which moves TTFB p95 (and no other row) by that round's ratio."""
    ttft, ttfb = 100.0 + spread(101, 5.0), 50.0 + spread(101, 15.0)
    logs = P95_SHIFT + P95_SPREAD * WOBBLE
    slower = []
    for log_ratio in logs:
        values = ttfb.copy()
        values[80:] *= np.exp(log_ratio)
        slower.append(values)
    baseline = study_arm("base", [ttft] * ROUNDS, [ttfb] * ROUNDS)
    return baseline, study_arm("cand", [ttft] * ROUNDS, slower), logs


def test_holm_keeps_a_secondary_row_at_p_002_from_counting() -> None:
    baseline, candidate, logs = ttfb_study()
    result = compare(baseline, candidate)
    p95 = row(result, "ttfb_ms_p95")
    mean, _, p = t_test(logs)
    assert not p95.primary and p95.change_pct == pytest.approx(100 * np.expm1(mean))
    assert p95.change_pct is not None and p95.change_pct > DEFAULT_MIN_EFFECT_PCT
    assert p95.p_value == pytest.approx(p, rel=1e-9) and 0.019 < p95.p_value < 0.022
    # Every other row is the same in both arms (p = 1): nine rows tested besides the objective, so
    # Holm multiplies the smallest p by 9.
    tested = [r for r in result.rows if r.p_value is not None and not r.primary]
    assert len(tested) == 9 and [r.metric for r in tested if r.p_value is not None and r.p_value < 1] == ["ttfb_ms_p95"]
    assert p95.p_adjusted == pytest.approx(9 * p95.p_value) and p95.p_adjusted > 0.05
    assert p95.verdict == Verdict.NO_CHANGE
    assert_holm_row_by_row(result)
    # The same difference as the objective, the one row that is not corrected, counts.
    decisive = compare(baseline, candidate, objective="ttfb_ms_p95")
    assert decisive.rows[0].metric == "ttfb_ms_p95" and decisive.rows[0].verdict == Verdict.WORSE


def test_p_adjusted_is_holms_value_row_by_row() -> None:
    # Many rows moved by different amounts, so the step-down and its running maximum both matter.
    rng = np.random.default_rng(20)

    def runs(ttft: float, itl: float, tokens: tuple[int, int]) -> list[RunResult]:
        return [
            RunResult(
                [
                    request(i, float(t), ttfb=float(t) - float(rng.uniform(0.5, 4.0)), tokens=int(k), itl=itl)
                    for i, (t, k) in enumerate(
                        zip(rng.normal(ttft, 8, 40), rng.integers(tokens[0], tokens[1], 40), strict=True)
                    )
                ]
            )
            for _ in range(4)
        ]

    result = compare(Arm("base", runs(100, 10.0, (29, 31))), Arm("cand", runs(104, 10.3, (28, 33))))
    p_values = sorted(r.p_value for r in result.rows if not r.primary and r.p_value is not None)
    assert len(set(p_values)) >= 4 and p_values[0] < 0.05
    assert_holm_row_by_row(result)


# --- the 95% level --------------------------------------------------------------------------------


def test_the_interval_is_the_95_percent_t_interval_over_the_rounds() -> None:
    # Round k's ratio of TTFT p50: exp(0.05 + 0.03 * WOBBLE[k]). The 95% interval is
    # mean ± t(0.975, 9) standard errors of the rounds' log ratios, back on the % scale.
    base = 100.0 + spread(41, 10.0)
    logs = 0.05 + 0.03 * WOBBLE
    ttft = row(
        compare(study_arm("base", [base] * ROUNDS), study_arm("cand", [base * np.exp(x) for x in logs])), "ttft_ms_p50"
    )
    mean, se, p = t_test(logs)
    half = stats.t.ppf(0.975, ROUNDS - 1) * se
    assert (ttft.ci_low, ttft.ci_high) == pytest.approx((100 * np.expm1(mean - half), 100 * np.expm1(mean + half)))
    assert ttft.p_value == pytest.approx(p) and ttft.verdict == Verdict.WORSE


def test_a_change_significant_only_at_a_lower_level_is_not_counted() -> None:
    # +6% with a t of 1.7 over 9 df (p ≈ 0.12): its 95% interval holds 0, so no significant
    # change, though an 80% one would not.
    base = 100.0 + spread(41, 10.0)
    logs = np.log(1.06) + np.log(1.06) * np.sqrt(ROUNDS) / 1.7 * WOBBLE
    ttft = row(
        compare(study_arm("base", [base] * ROUNDS), study_arm("cand", [base * np.exp(x) for x in logs])), "ttft_ms_p50"
    )
    assert ttft.change_pct == pytest.approx(6.0)
    assert ttft.p_value is not None and 0.05 < ttft.p_value < 0.2
    assert ttft.ci_low is not None and ttft.ci_high is not None and ttft.ci_low < 0 < ttft.ci_high
    assert ttft.verdict == Verdict.NO_CHANGE


# --- the change, against the baseline -------------------------------------------------------------


def test_the_change_is_relative_to_the_baseline_exactly_as_the_records_give_it() -> None:
    # The candidate's every TTFT is 1.2 times the baseline's, in every round: +20% at every
    # percentile, not the -16.7% of the baseline against the candidate.
    base_ttft = 100.0 + spread(41, 10.0)
    base, cand = study_arm("base", [base_ttft] * 3), study_arm("cand", [1.2 * base_ttft] * 3)
    result = compare(base, cand)
    for metric, q in (("ttft_ms_p50", 50), ("ttft_ms_p95", 95)):
        r = row(result, metric)
        assert r.baseline == pytest.approx(float(np.percentile(base_ttft, q)), rel=1e-12)
        assert r.candidate == pytest.approx(float(np.percentile(1.2 * base_ttft, q)), rel=1e-12)
        assert r.change_pct == pytest.approx(20.0, rel=1e-9)
        assert r.verdict == Verdict.WORSE
    assert row(result, "ttft_ms_p50").baseline == 100.0
    # E2E is TTFT + 190.5 ms here: its change follows the records, 20 / 290.5, not a ratio of TTFTs.
    e2e = row(result, "e2e_ms_p50")
    assert (e2e.baseline, e2e.candidate) == pytest.approx((290.5, 310.5))
    assert e2e.change_pct == pytest.approx(100 * 20 / 290.5)
    # Backwards, the same records are -16.67%, against the other baseline.
    back = row(compare(cand, base), "ttft_ms_p50")
    assert back.change_pct == pytest.approx(100 * (100 - 120) / 120) and back.verdict == Verdict.IMPROVED
    # One run per arm (no verdict): the change is of the pooled values, against the baseline too.
    single = row(compare(arm("base", base_ttft), arm("cand", 1.2 * base_ttft)), "ttft_ms_p50")
    assert single.change_pct == pytest.approx(20.0) and single.verdict == Verdict.NO_CI


# --- 20 successful requests a side ----------------------------------------------------------------


def counted_arm(name: str, ok: int, failures: int = 0) -> Arm:
    """`ok` successful requests and `failures` failed ones, over the two rounds of one study."""
    records = [request(i, 100.0 + 10 * (i % 5), block=i % 2) for i in range(ok)]
    return Arm(name, [RunResult(records + [failed(ok + i) for i in range(failures)], study="s")])


@pytest.mark.parametrize("side", ["baseline", "candidate"])
def test_nineteen_successful_requests_are_too_few_and_twenty_are_enough(side: str) -> None:
    def result(ok: int) -> Comparison:
        # Failed requests add to neither count: 19 successful plus 5 failed are still 19.
        few = counted_arm("few", ok, failures=5)
        other = counted_arm("other", 40)
        return compare(few, other) if side == "baseline" else compare(other, few)

    nineteen, twenty = result(19), result(20)
    for metric in ("ttft_ms_p50", "ttfb_ms_p95", "e2e_ms_p50", "itl_ms_p50", "output_tokens_p50"):
        short = row(nineteen, metric)
        assert short.verdict == Verdict.TOO_FEW, metric
        assert short.ci_low is None and short.p_value is None and short.p_adjusted is None
        assert getattr(short, f"n_{side}") == 19
        enough = row(twenty, metric)
        assert enough.verdict != Verdict.TOO_FEW and enough.ci_low is not None and enough.p_value is not None
        assert getattr(enough, f"n_{side}") == 20


def test_the_error_rate_needs_twenty_finished_requests_a_side() -> None:
    # Finished = successful + failed: 15 + 4 is 19, too few; 16 + 4 is 20.
    other = counted_arm("other", 40, failures=1)
    nineteen = row(compare(counted_arm("few", 15, failures=4), other), "error_rate")
    assert nineteen.verdict == Verdict.TOO_FEW and nineteen.n_baseline == 19 and nineteen.ci_low is None
    twenty = row(compare(counted_arm("few", 16, failures=4), other), "error_rate")
    assert twenty.verdict != Verdict.TOO_FEW and twenty.n_baseline == 20 and twenty.ci_low is not None


# --- 10% difference in output length --------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate_tokens", "per_token"),
    [(109, False), (110, False), (111, True), (91, False), (90, False), (89, True)],
)
def test_e2e_is_compared_per_token_only_beyond_a_10_percent_difference_in_length(
    candidate_tokens: int, per_token: bool
) -> None:
    # Median output tokens 100 against 89..111: E2E per output token only when they differ by more
    # than 10% of the baseline's.
    offsets = spread(31, 5.0)
    base = arm("base", 100.0 + offsets, tokens=100, itl=1.0)
    cand = arm("cand", 100.0 + offsets, tokens=candidate_tokens, itl=1.0)
    result = compare(base, cand, objective="e2e_ms_p50")
    metrics = {r.metric for r in result.rows}
    notes = [n for n in result.notes if "median output tokens per request differ" in n]
    assert row(result, "output_tokens_p50").change_pct == pytest.approx(candidate_tokens - 100.0)
    if per_token:
        assert {"e2e_ms_per_token_p50", "e2e_ms_per_token_p95"} <= metrics and "e2e_ms_p50" not in metrics
        assert result.objective == "e2e_ms_per_token_p50" and len(notes) == 1
        assert f"{candidate_tokens - 100:+d}%" in notes[0]
    else:
        assert {"e2e_ms_p50", "e2e_ms_p95"} <= metrics and "e2e_ms_per_token_p50" not in metrics
        assert result.objective == "e2e_ms_p50" and not notes
