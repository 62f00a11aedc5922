"""Each documented rule of the comparison (docs/statistics.md) at its boundary, on records whose
values are laid out by hand, so that the boundary is exact: the minimum effect, Holm's correction
of the secondary rows, the 95% level, the change against the baseline, the 20 successful requests
a side and the 10% difference in output length. The arms are mostly one interleaved study's
(paired by round), whose interval is a t interval over the rounds' log ratios: the expected
numbers are computed here from the rounds with scipy. Each test fails when its rule changes
(scripts/mutation_survivors.md lists the mutants that prove it). After them, the same for the rest
of the module (scripts/mutation.sh): the verdict at its exact edges, the error rate's p-value, what
each design clusters on, and the per-request quantities at theirs."""

from __future__ import annotations

from dataclasses import replace

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
    # No p either, nor a Holm-adjusted one.
    assert nineteen.p_value is None and nineteen.p_adjusted is None
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


# --- the verdict at its exact edges ----------------------------------------------------------------


def test_a_change_exactly_as_large_as_the_minimum_effect_does_not_count() -> None:
    # Every round's TTFT p50 is 100 ms against 75 ms: the rounds agree exactly (a zero-width CI at
    # -25%, p = 0), and the pooled values are 100 and 75. "Larger than" the minimum effect: -25%
    # counts under 24.9%, not under 25%.
    baseline = study_arm("base", [100.0 + spread(21, 10.0)] * 3)
    candidate = study_arm("cand", [75.0 + spread(21, 5.0)] * 3)
    below = row(compare(baseline, candidate, min_effect_pct=24.9), "ttft_ms_p50")
    assert (below.baseline, below.candidate) == (100.0, 75.0) and below.p_value == 0.0
    assert below.change_pct == pytest.approx(-25.0) and below.ci_low == below.ci_high == below.change_pct
    assert below.verdict == Verdict.IMPROVED
    assert row(compare(baseline, candidate, min_effect_pct=25.0), "ttft_ms_p50").verdict != Verdict.IMPROVED


def test_an_interval_of_exactly_zero_is_no_change_even_where_the_pooled_values_differ() -> None:
    # Round 0: baseline 50..150 ms, candidate 100 ms every request; round 1: the same times 3. Each
    # round's p50 is the same in both arms, so the CI is [0, 0], while the pooled p50s are 150
    # against 200 (the pooled values are the arms' own, not what the verdict reads).
    spread_ms = spread(21, 50.0)
    baseline = study_arm("base", [100.0 + spread_ms, 300.0 + 3 * spread_ms])
    candidate = study_arm("cand", [np.full(21, 100.0), np.full(21, 300.0)])
    ttft = row(compare(baseline, candidate), "ttft_ms_p50")
    assert (ttft.baseline, ttft.candidate) == (150.0, 200.0)
    assert ttft.change_pct == 0.0 and (ttft.ci_low, ttft.ci_high) == (0.0, 0.0) and ttft.p_value == 1.0
    assert ttft.verdict == Verdict.EQUIVALENT


def test_the_minimum_effect_reads_the_change_shown_not_the_pooled_values() -> None:
    # Each round's candidate p50 is exactly 1% above the baseline's (a zero-width CI at +1%), while
    # the pooled p50s are 150 against 202 (+35%): the verdict weighs the +1% it shows, which is
    # within the 2% minimum effect.
    spread_ms = spread(21, 50.0)
    baseline = study_arm("base", [100.0 + spread_ms, 300.0 + 3 * spread_ms])
    candidate = study_arm("cand", [np.full(21, 101.0), np.full(21, 303.0)])
    ttft = row(compare(baseline, candidate), "ttft_ms_p50")
    assert (ttft.baseline, ttft.candidate) == (150.0, 202.0)
    assert ttft.change_pct == pytest.approx(1.0) and ttft.ci_low == pytest.approx(1.0) and ttft.p_value == 0.0
    assert ttft.verdict == Verdict.EQUIVALENT
    assert row(compare(baseline, candidate, min_effect_pct=0.5), "ttft_ms_p50").verdict == Verdict.WORSE


def test_a_secondary_row_counts_only_when_its_holm_p_is_below_alpha_not_equal_to_it() -> None:
    # TTFB p95 +4% at Holm p ≈ 0.19 (ttfb_study): significant at a level just above that p, not at it.
    baseline, candidate, _ = ttfb_study()
    p_adjusted = row(compare(baseline, candidate), "ttfb_ms_p95").p_adjusted
    assert p_adjusted is not None and 0.1 < p_adjusted < 0.3
    at = row(compare(baseline, candidate, alpha=p_adjusted), "ttfb_ms_p95")
    assert at.p_adjusted == p_adjusted and at.verdict == Verdict.NO_CHANGE
    above = row(compare(baseline, candidate, alpha=float(np.nextafter(p_adjusted, 1.0))), "ttfb_ms_p95")
    assert above.verdict == Verdict.WORSE


def equivalence_study(log_change: float) -> tuple[Arm, Arm]:
    """The rounds' log ratios log_change + 0.03 * WOBBLE: a 95% CI about 2.1% either side of it."""
    base = 100.0 + spread(41, 10.0)
    logs = log_change + 0.03 * WOBBLE
    return study_arm("base", [base] * ROUNDS), study_arm("cand", [base * np.exp(x) for x in logs])


def test_equivalence_needs_both_ends_of_the_interval_within_the_minimum_effect_edges_included() -> None:
    # About -0.5% with a CI of about [-2.6, +1.6]: its lower end is beyond -2%, so no equivalence
    # at the default; with the minimum effect set to exactly -ci_low, the CI touches the edge and
    # lies within it.
    baseline, candidate = equivalence_study(np.log(0.995))
    lower = row(compare(baseline, candidate), "ttft_ms_p50")
    assert lower.ci_low is not None and lower.ci_high is not None
    assert -3.5 < lower.ci_low < -2.0 < 0.0 < lower.ci_high < 2.0
    assert lower.verdict == Verdict.NO_CHANGE
    assert row(compare(baseline, candidate, min_effect_pct=-lower.ci_low), "ttft_ms_p50").verdict == Verdict.EQUIVALENT
    narrower = float(np.nextafter(-lower.ci_low, 0.0))
    assert row(compare(baseline, candidate, min_effect_pct=narrower), "ttft_ms_p50").verdict == Verdict.NO_CHANGE
    # The mirror image, about +0.5%: the upper end decides.
    baseline, candidate = equivalence_study(np.log(1.005))
    upper = row(compare(baseline, candidate), "ttft_ms_p50")
    assert upper.ci_low is not None and upper.ci_high is not None
    assert -2.0 < upper.ci_low < 0.0 < 2.0 < upper.ci_high < 3.5
    assert upper.verdict == Verdict.NO_CHANGE
    assert row(compare(baseline, candidate, min_effect_pct=upper.ci_high), "ttft_ms_p50").verdict == Verdict.EQUIVALENT


# --- the error rate's p-value ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed_baseline", "failed_candidate", "n"),
    [(2, 12, 100), (12, 2, 100), (0, 1, 100), (3, 1, 100), (0, 2, 400), (2, 0, 400)],
)
def test_the_error_rates_p_value_is_the_level_at_which_its_interval_touches_zero(
    failed_baseline: int, failed_candidate: int, n: int
) -> None:
    # Up 10 pp, down 10 pp, up exactly 1 pp (p ≈ 0.37), down 2 pp, up and down 0.5 pp: compared
    # again at alpha = p, the interval's end nearest 0 is 0.
    baseline = counted_arm("base", n - failed_baseline, failures=failed_baseline)
    candidate = counted_arm("cand", n - failed_candidate, failures=failed_candidate)
    rate = row(compare(baseline, candidate), "error_rate")
    change = 100.0 * (failed_candidate - failed_baseline) / n
    assert rate.change_pct == pytest.approx(change) and rate.p_value is not None and 0 < rate.p_value < 1
    again = row(compare(baseline, candidate, alpha=rate.p_value), "error_rate")
    assert again.ci_low is not None and again.ci_high is not None
    touching = again.ci_low if change > 0 else again.ci_high
    assert touching == pytest.approx(0.0, abs=1e-6)
    # A secondary row: Holm's p decides.
    assert rate.p_adjusted is not None
    significant = rate.p_adjusted < 0.05
    expected = (Verdict.WORSE if change > 0 else Verdict.IMPROVED) if significant else Verdict.NO_CHANGE
    assert rate.verdict == expected


def test_equal_error_rates_have_p_1() -> None:
    rate = row(compare(counted_arm("base", 95, failures=5), counted_arm("cand", 95, failures=5)), "error_rate")
    assert rate.change_pct == 0.0 and rate.p_value == 1.0 and rate.p_adjusted == 1.0
    assert rate.ci_low is not None and rate.ci_high is not None and rate.ci_low < 0 < rate.ci_high
    assert rate.verdict == Verdict.NO_CHANGE


def test_a_proportions_wilson_interval_stays_within_0_and_1() -> None:
    from sentinel_exp.analysis.comparison import _normal_quantile, _wilson

    z = _normal_quantile(0.975)
    assert z == pytest.approx(stats.norm.ppf(0.975), rel=1e-12)
    for n in range(1, 200):
        for failures in (0, 1, n // 2, n - 1, n):
            low, high = _wilson(failures, n, z)
            assert 0.0 <= low <= high <= 1.0, (failures, n)
            assert low <= failures / n + 1e-15 and high >= failures / n - 1e-15, (failures, n)


def test_only_finished_measured_requests_count_in_the_error_rate() -> None:
    # A failed warmup request and a cancelled measured one are in neither count.
    cancelled = RequestRecord(
        index=99, phase=Phase.MEASURED, prompt_index=0, api=Api.chat, error_class=ErrorClass.CANCELLED
    )
    failed_warmup = RequestRecord(
        index=-2, phase=Phase.WARMUP, prompt_index=0, api=Api.chat, error_class=ErrorClass.STREAM_CUT
    )
    plain = counted_arm("base", 36, failures=4)
    extra = Arm("base", [RunResult([failed_warmup, *plain.runs[0].records, cancelled], study="s")])
    rate = row(compare(extra, counted_arm("cand", 40)), "error_rate")
    assert (rate.n_baseline, rate.n_candidate) == (40, 40) and rate.baseline == 10.0 and rate.candidate == 0.0


# --- what each design clusters on -------------------------------------------------------------------


def runs_arm(name: str, scales: list[float], *, study: str | None = None) -> Arm:
    """One run per scale: 21 requests, TTFT scale * (100 ± 10 ms), spread over rounds 0..2."""
    runs = []
    for scale in scales:
        records = [request(i, scale * t, block=i % 3) for i, t in enumerate(100.0 + spread(21, 10.0))]
        runs.append(RunResult(records, study=study))
    return Arm(name, runs)


def test_independent_runs_are_clustered_by_run_even_when_their_records_carry_rounds() -> None:
    # Three runs an arm, each with rounds of its own: Welch's t over the runs' log p50s, as scipy has it.
    base_scales, cand_scales = [1.0, 1.04, 0.97], [1.10, 1.16, 1.12]
    result = compare(runs_arm("base", base_scales), runs_arm("cand", cand_scales))
    assert result.design.value == "independent runs" and result.clusters == 3
    ttft = row(result, "ttft_ms_p50")
    log_b, log_c = np.log(100.0 * np.array(base_scales)), np.log(100.0 * np.array(cand_scales))
    welch = stats.ttest_ind(log_c, log_b, equal_var=False)
    assert ttft.change_pct == pytest.approx(100 * np.expm1(log_c.mean() - log_b.mean()), rel=1e-12)
    assert ttft.p_value == pytest.approx(welch.pvalue, rel=1e-9)


@pytest.mark.parametrize(
    ("baseline_runs", "candidate_runs", "design", "clusters"),
    [(2, 2, "independent runs", 2), (2, 3, "independent runs", 2), (3, 2, "independent runs", 2),
     (1, 2, "one run per arm", 1), (2, 1, "one run per arm", 1), (1, 1, "paired rounds", 3)],
)  # fmt: skip
def test_two_runs_a_side_are_independent_one_against_two_is_one_run_per_arm_and_one_each_is_paired(
    baseline_runs: int, candidate_runs: int, design: str, clusters: int
) -> None:
    # Every run of one study, with rounds 0..2 in common: paired only when each arm is one run; one
    # run against two is neither paired nor independent.
    result = compare(
        runs_arm("base", [1.0, 1.05, 0.95][:baseline_runs], study="s"),
        runs_arm("cand", [1.0, 1.05, 0.95][:candidate_runs], study="s"),
    )
    assert (result.design.value, result.clusters) == (design, clusters)
    if design == "independent runs":
        assert "only 2 runs per arm: the intervals are wide; more give a sharper verdict" in result.notes
    elif design == "paired rounds":
        assert result.notes == ("only 3 rounds: the intervals are wide; more give a sharper verdict",)
    else:
        assert result.notes == (
            "one run per arm: the noise between runs is unknown, so no row gets a significance verdict; "
            "measure the arms in one interleaved study (a sweep's default) or repeat each run",
        )


def test_five_rounds_are_enough_to_say_nothing_about_few_rounds() -> None:
    base = 100.0 + spread(21, 10.0)
    for rounds, notes in ((4, ("only 4 rounds: the intervals are wide; more give a sharper verdict",)), (5, ())):
        result = compare(study_arm("base", [base] * rounds), study_arm("cand", [1.1 * base] * rounds))
        assert result.design.value == "paired rounds" and result.clusters == rounds and result.notes == notes


def test_a_runs_rounds_are_those_of_its_measured_requests() -> None:
    records = [
        RequestRecord(index=-1, phase=Phase.WARMUP, prompt_index=0, api=Api.chat, ok=True, block=7),
        request(0, 100.0, block=0),
        request(1, 100.0, block=1),
        request(2, 100.0),
    ]
    assert RunResult(records, study="s").rounds() == {0, 1}


def test_a_row_with_too_few_requests_shows_the_change_of_the_pooled_values() -> None:
    # 19 candidate requests in two rounds, p50 110 and 130 ms against 100 and 100: the rounds'
    # geometric mean would be +19.6%; the pooled p50s are 100 and 120, +20%.
    baseline = study_arm("base", [100.0 + spread(21, 10.0)] * 2)
    candidate = study_arm("cand", [110.0 + spread(10, 10.0), 130.0 + spread(9, 10.0)])
    ttft = row(compare(baseline, candidate), "ttft_ms_p50")
    assert ttft.verdict == Verdict.TOO_FEW and ttft.n_candidate == 19
    assert (ttft.baseline, ttft.candidate, ttft.change_pct) == (100.0, 120.0, 20.0)
    assert ttft.mde_pct is None


# --- the per-request quantities ----------------------------------------------------------------------


def odd_requests(first: int, scale: float = 1.0) -> list[RequestRecord]:
    """Successful requests at the edges: one token; no token at all (no TTFT, nothing to divide by);
    three tokens at once (a TPOT of 0)."""

    def odd(index: int, ttft: float | None, e2e: float, chunks: list[float], tokens: int) -> RequestRecord:
        return RequestRecord(
            index=index,
            phase=Phase.MEASURED,
            prompt_index=0,
            api=Api.chat,
            ok=True,
            ttfb_ms=scale * 59.0,
            ttft_ms=None if ttft is None else scale * ttft,
            e2e_ms=scale * e2e,
            chunk_times_ms=[scale * c for c in chunks],
            eval_count=tokens,
        )

    return [
        odd(first, 60.0, 60.5, [60.0], 1),
        odd(first + 1, None, 61.0, [], 0),
        odd(first + 2, 62.0, 62.0, [62.0] * 3, 3),
    ]


def quantities_arm(name: str, scale: float) -> Arm:
    """Two rounds of 25 requests with 8 to 14 tokens and a TPOT under 1 ms, and the odd ones; the
    candidate is the baseline with every time `scale` times longer."""
    records: list[RequestRecord] = []
    for block in (0, 1):
        for i in range(25):
            k = len(records)
            records.append(
                request(k, scale * (100.0 + i), tokens=8 + i % 7, itl=scale * (0.5 + 0.1 * (i % 5)), block=block)
            )
        records += [replace(r, block=block) for r in odd_requests(len(records), scale)]
    return Arm(name, [RunResult(records, study="s")])


def test_the_per_token_quantities_are_as_documented_at_their_edges() -> None:
    # E2E per output token: e2e / tokens where there is a token; decode rate: 1000 / TPOT where
    # TPOT (e2e - ttft) / (tokens - 1) is above 0.
    baseline, candidate = quantities_arm("base", 1.0), quantities_arm("cand", 1.2)
    ok = [r for r in baseline.runs[0].records if r.ok]
    tokens = [r.eval_count if r.eval_count is not None else len(r.chunk_times_ms) for r in ok]
    per_token = [r.e2e_ms / k for r, k in zip(ok, tokens, strict=True) if r.e2e_ms is not None and k > 0]
    tpot = [
        (r.e2e_ms - r.ttft_ms) / (k - 1)
        for r, k in zip(ok, tokens, strict=True)
        if r.e2e_ms is not None and r.ttft_ms is not None and k >= 2
    ]
    rates = [1000.0 / t for t in tpot if t > 0]
    assert len(ok) == 56 and len(per_token) == 54 and len(tpot) == 52 and len(rates) == 50

    result = compare(baseline, candidate, objective="e2e_ms_per_token_p90")
    objective = result.rows[0]
    assert (objective.metric, objective.label, objective.unit) == (
        "e2e_ms_per_token_p90",
        "E2E per output token p90",
        "ms/token",
    )
    assert objective.primary and objective.direction is not None and objective.direction.value == "minimize"
    assert objective.baseline == pytest.approx(float(np.percentile(per_token, 90)), rel=1e-12)
    assert objective.n_baseline == 54 and objective.change_pct is not None and 19 < objective.change_pct < 21
    assert objective.verdict == Verdict.WORSE
    decode = row(result, "output_tokens_per_s")
    assert decode.baseline == pytest.approx(float(np.percentile(rates, 50)), rel=1e-12) and decode.n_baseline == 50
    assert decode.direction is not None and decode.direction.value == "maximize" and decode.verdict == Verdict.WORSE
    assert row(result, "ttft_ms_p50").n_baseline == 54  # the request without a token has no TTFT
    assert row(result, "output_tokens_p50").direction is None


def test_the_e2e_switch_divides_by_the_baselines_length_from_one_token_up() -> None:
    # A median of 1 token against 2 is +100%: per token. A median of 0 tokens has no ratio: as is.
    one = arm("one", 100.0 + spread(21, 5.0), tokens=1)
    two = arm("two", 100.0 + spread(21, 5.0), tokens=2)
    result = compare(one, two)
    assert "e2e_ms_per_token_p50" in {r.metric for r in result.rows}
    assert any(n.startswith("median output tokens per request differ by +100% (1 vs 2)") for n in result.notes)
    empty = RequestRecord(index=0, phase=Phase.MEASURED, prompt_index=0, api=Api.chat, ok=True, ttfb_ms=5.0, e2e_ms=9.0)
    none = Arm("none", [RunResult([replace(empty, index=i) for i in range(21)])])
    as_is = compare(none, two)
    assert "e2e_ms_p50" in {r.metric for r in as_is.rows} and row(as_is, "output_tokens_p50").baseline == 0.0
    assert not any("median output tokens" in n for n in as_is.notes)


def test_a_quantity_one_arm_lacks_has_no_row_and_the_next_rows_stay() -> None:
    # The baseline's requests carry no TTFB (an older record): no TTFB row, every other row.
    no_ttfb = Arm(
        "base", [RunResult([replace(r, ttfb_ms=None) for r in arm("b", 100.0 + spread(21, 5.0)).runs[0].records])]
    )
    result = compare(no_ttfb, arm("cand", 100.0 + spread(21, 5.0)))
    metrics = [r.metric for r in result.rows]
    assert metrics == [
        "ttft_ms_p50",
        "ttft_ms_p95",
        "e2e_ms_p50",
        "e2e_ms_p95",
        "itl_ms_p50",
        "output_tokens_per_s",
        "output_tokens_p50",
        "error_rate",
    ]


def test_an_arm_without_a_finished_request_has_no_rows_and_no_error_rate() -> None:
    cancelled = [
        RequestRecord(index=i, phase=Phase.MEASURED, prompt_index=0, api=Api.chat, error_class=ErrorClass.CANCELLED)
        for i in range(5)
    ]
    result = compare(arm("base", 100.0 + spread(21, 5.0)), Arm("cand", [RunResult(cancelled)]))
    assert result.rows == ()
    assert "objective ttft_ms_p50 is not among the compared metrics: every row is secondary" in result.notes
    # Every request failed: the error rate alone.
    failures = Arm("cand", [RunResult([failed(i) for i in range(25)])])
    only = compare(arm("base", 100.0 + spread(21, 5.0)), failures)
    assert [r.metric for r in only.rows] == ["error_rate"] and only.rows[0].verdict == Verdict.WORSE
