"""Each documented rule of the comparison (README, "Which change helps?") at its boundary, on
records whose values are laid out by hand, so that the boundary is exact: the minimum effect,
Holm's correction of the secondary rows, the 95% level, the change against the baseline, the 20
successful requests a side and the 10% difference in output length. Each test fails when its
rule changes (scripts/mutation_survivors.md lists the mutants that prove it)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

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
    index: int, ttft: float, *, ttfb: float | None = None, tokens: int = 20, itl: float = 10.0
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


# --- the minimum effect ---------------------------------------------------------------------------


def test_a_one_percent_change_is_significant_but_below_the_default_minimum_effect() -> None:
    # 2001 requests a side, TTFT 100 ± 5 ms against 99 ± 5 ms: -1.000% exactly, with a CI about
    # ±0.3 points wide. Significant, yet smaller than the default minimum effect of 2%.
    offsets = spread(2001, 5.0)
    base, cand = arm("base", 100.0 + offsets), arm("cand", 99.0 + offsets)

    default = compare(base, cand)
    ttft = row(default, "ttft_ms_p50")
    assert DEFAULT_MIN_EFFECT_PCT == 2.0 and "min effect 2%" in default.method
    assert ttft.primary and ttft.change_pct == pytest.approx(-1.0, abs=1e-9)
    assert ttft.ci_low is not None and ttft.ci_high is not None and -1.5 < ttft.ci_low < ttft.ci_high < -0.5
    assert ttft.verdict == Verdict.NO_CHANGE
    # TTFB (TTFT − 1 ms) moved by 1.01%: a secondary row, significant after Holm, and still too small.
    ttfb = row(default, "ttfb_ms_p50")
    assert ttfb.p_adjusted is not None and ttfb.p_adjusted < 0.01 and ttfb.verdict == Verdict.NO_CHANGE

    gate_off = compare(base, cand, min_effect_pct=0.0)
    assert row(gate_off, "ttft_ms_p50").verdict == Verdict.IMPROVED
    assert row(gate_off, "ttfb_ms_p50").verdict == Verdict.IMPROVED
    assert "min effect 0%" in gate_off.method


def test_a_change_counts_only_when_larger_than_the_minimum_effect() -> None:
    # -5.000% exactly, its CI far from 0: improved under a minimum effect of 4.9%, not under 5.1%.
    offsets = spread(101, 2.0)
    base, cand = arm("base", 100.0 + offsets, tokens=2), arm("cand", 95.0 + offsets, tokens=2)
    assert row(compare(base, cand, min_effect_pct=4.9), "ttft_ms_p50").verdict == Verdict.IMPROVED
    assert row(compare(base, cand, min_effect_pct=5.1), "ttft_ms_p50").verdict == Verdict.NO_CHANGE
    # A slower candidate is held to the same gate.
    assert row(compare(cand, base, min_effect_pct=5.1), "ttft_ms_p50").verdict == Verdict.WORSE
    assert row(compare(cand, base, min_effect_pct=5.3), "ttft_ms_p50").verdict == Verdict.NO_CHANGE


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


def ttfb_arm(name: str, ttfbs: NDArray[np.float64]) -> Arm:
    """TTFT 100 ± 5 ms in every arm; only TTFB, which feeds no other row, differs."""
    ttfts = 100.0 + spread(ttfbs.size, 5.0)
    return Arm(
        name,
        [RunResult([request(i, float(t), ttfb=float(b)) for i, (t, b) in enumerate(zip(ttfts, ttfbs, strict=True))])],
    )


def test_holm_keeps_a_secondary_row_at_p_002_from_counting() -> None:
    # TTFB 50 ± 15 ms; the candidate's slowest fifth 2.25 ms slower: TTFB p95 +3.5%, raw p ≈ 0.02,
    # while every other row is the same in both arms (p = 1). With ten rows tested, nine of them
    # secondary, Holm multiplies the smallest p by 9: no significant change.
    base_ttfb = 50.0 + spread(101, 15.0)
    cand_ttfb = base_ttfb.copy()
    cand_ttfb[80:] += 2.25
    base, cand = ttfb_arm("base", base_ttfb), ttfb_arm("cand", cand_ttfb)

    result = compare(base, cand)
    p95 = row(result, "ttfb_ms_p95")
    assert not p95.primary and p95.change_pct is not None and p95.change_pct > DEFAULT_MIN_EFFECT_PCT
    assert p95.p_value is not None and 0.01 < p95.p_value < 0.03
    tested = [r for r in result.rows if r.p_value is not None]
    assert len(tested) == 10 and sum(r.p_value is not None and r.p_value < 0.5 for r in tested) == 1
    assert p95.p_adjusted == pytest.approx(9 * p95.p_value) and p95.p_adjusted > 0.05
    assert p95.verdict == Verdict.NO_CHANGE
    assert_holm_row_by_row(result)
    # The same difference as the objective, the one row that is not corrected, counts.
    decisive = compare(base, cand, objective="ttfb_ms_p95")
    assert decisive.rows[0].metric == "ttfb_ms_p95" and decisive.rows[0].verdict == Verdict.WORSE


def test_p_adjusted_is_holms_value_row_by_row() -> None:
    # Many rows moved by different amounts, so the step-down and its running maximum both matter.
    rng = np.random.default_rng(20)
    base_runs = [request(i, float(t), tokens=30, itl=10.0) for i, t in enumerate(rng.normal(100, 8, 120))]
    cand_runs = [
        request(i, float(t), ttfb=float(t) - float(rng.uniform(0.5, 4.0)), tokens=int(k), itl=10.3)
        for i, (t, k) in enumerate(zip(rng.normal(103, 9, 120), rng.integers(28, 33, 120), strict=True))
    ]
    result = compare(Arm("base", [RunResult(base_runs)]), Arm("cand", [RunResult(cand_runs)]))
    p_values = sorted(r.p_value for r in result.rows if not r.primary and r.p_value is not None)
    assert len(set(p_values)) >= 4 and p_values[0] < 0.05
    assert_holm_row_by_row(result)


# --- the 95% level --------------------------------------------------------------------------------


def test_a_change_significant_only_at_a_lower_level_is_not_counted() -> None:
    # 61 requests a side, TTFT 100 ± 20 ms against 106 ± 20 ms: +6% (above the minimum effect) with a
    # bootstrap p ≈ 0.12. Its 95% CI holds 0, so no significant change; an 80% one would not.
    offsets = spread(61, 20.0)
    ttft = row(compare(arm("base", 100.0 + offsets), arm("cand", 106.0 + offsets)), "ttft_ms_p50")
    assert ttft.change_pct == pytest.approx(6.0)
    assert ttft.p_value is not None and 0.05 < ttft.p_value < 0.2
    assert ttft.ci_low is not None and ttft.ci_high is not None and ttft.ci_low < 0 < ttft.ci_high
    assert ttft.verdict == Verdict.NO_CHANGE


def test_the_interval_is_the_central_95_percent_of_the_replicates() -> None:
    # Two runs a side of a run-level metric: each replicate's mean is a run's value or the mean of
    # both, so the change takes nine values. The lowest, 120 against 110 (+9.09%), and the highest,
    # 130 against 100 (+30%), each have chance 1/16 = 6.25%: more than 2.5%, so they are the 95%
    # interval's ends exactly (an 80% interval would end at the next values, +13.6% and +25%).
    runs = [RunResult([request(i, 100.0) for i in range(20)], {"throughput_tokens_per_s": v}) for v in (100.0, 110.0)]
    faster = [RunResult(r.records, {"throughput_tokens_per_s": v}) for r, v in zip(runs, (120.0, 130.0), strict=True)]
    result = compare(Arm("base", runs), Arm("cand", faster))
    throughput = row(result, "throughput_tokens_per_s")
    assert throughput.change_pct == pytest.approx(100 * (125 / 105 - 1))
    assert (throughput.ci_low, throughput.ci_high) == pytest.approx((100 * (120 / 110 - 1), 30.0))
    assert "95% CIs" in result.method


# --- the change, against the baseline -------------------------------------------------------------


def test_the_change_is_relative_to_the_baseline_exactly_as_the_records_give_it() -> None:
    # The candidate's every TTFT is 1.2 times the baseline's: +20% at every percentile, not the
    # 16.7% that (cand − base) / cand would give.
    base_ttft = 100.0 + spread(41, 10.0)
    base, cand = arm("base", base_ttft), arm("cand", 1.2 * base_ttft)
    result = compare(base, cand)
    for metric, q in (("ttft_ms_p50", 50), ("ttft_ms_p95", 95)):
        r = row(result, metric)
        assert r.baseline == pytest.approx(float(np.percentile(base_ttft, q)), rel=1e-12)
        assert r.candidate == pytest.approx(float(np.percentile(1.2 * base_ttft, q)), rel=1e-12)
        assert r.change_pct == pytest.approx(20.0, rel=1e-9)
        assert r.verdict == Verdict.WORSE
    assert row(result, "ttft_ms_p50").baseline == 100.0
    # E2E is TTFT + 190.5 ms here: its change follows the records, 100·(c − b)/b, not a ratio of TTFTs.
    e2e = row(result, "e2e_ms_p50")
    assert (e2e.baseline, e2e.candidate) == pytest.approx((290.5, 310.5))
    assert e2e.change_pct == pytest.approx(100 * 20 / 290.5)
    # Backwards, the same records are -16.67%, against the other baseline.
    back = row(compare(cand, base), "ttft_ms_p50")
    assert back.change_pct == pytest.approx(100 * (100 - 120) / 120) and back.verdict == Verdict.IMPROVED


# --- 20 successful requests a side ----------------------------------------------------------------


def counted_arm(name: str, ok: int, failures: int = 0) -> Arm:
    records = [request(i, 100.0 + 10 * (i % 5)) for i in range(ok)]
    return Arm(name, [RunResult(records + [failed(ok + i) for i in range(failures)])])


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
