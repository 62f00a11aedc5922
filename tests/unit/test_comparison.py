"""sentinel_exp.analysis.comparison on synthetic request records drawn with numpy: known effects must be
found with a CI that covers them, and identical configurations must rarely look different."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sentinel_exp.analysis.comparison import (
    DEFAULT_RESAMPLES,
    Arm,
    Comparison,
    RunResult,
    Verdict,
    compare,
    to_markdown,
)
from sentinel_exp.names import Api, Phase
from sentinel_exp.records import RequestRecord

SIGNIFICANT = {Verdict.IMPROVED, Verdict.WORSE, Verdict.DIFFERS}


def records(
    rng: np.random.Generator,
    n: int,
    *,
    ttft: float = 40.0,
    jitter: float = 3.0,
    offset: float = 0.0,
    tokens: tuple[int, int] = (20, 41),
    itl: float = 10.0,
    failed: int = 0,
) -> list[RequestRecord]:
    """`n` successful measured requests (TTFT ~ N(ttft + offset, jitter), tokens uniform in
    [tokens), gaps ~ N(itl, 1)), `failed` failed ones with absurd latencies, and two warmup
    requests that must stay out of every statistic."""
    ttfts = rng.normal(ttft, jitter, n) + offset
    counts = rng.integers(tokens[0], tokens[1], n)
    out = []
    for i in range(n):
        chunks = ttfts[i] + np.concatenate(([0.0], np.cumsum(np.abs(rng.normal(itl, 1.0, counts[i] - 1)))))
        out.append(
            RequestRecord(
                index=i,
                phase=Phase.MEASURED,
                prompt_index=i % 10,
                api=Api.chat,
                ok=True,
                ttfb_ms=float(ttfts[i] - 1.0),
                ttft_ms=float(ttfts[i]),
                e2e_ms=float(chunks[-1] + 0.5),
                chunk_times_ms=chunks.tolist(),
                eval_count=int(counts[i]),
            )
        )
    for i in range(failed):
        out.append(
            RequestRecord(
                index=n + i,
                phase=Phase.MEASURED,
                prompt_index=0,
                api=Api.chat,
                ok=False,
                ttfb_ms=5000.0,
                ttft_ms=5000.0,
                e2e_ms=9000.0,
                chunk_times_ms=[5000.0, 9000.0],
                error_class="StreamCut",
            )
        )
    for i in range(2):
        out.append(
            RequestRecord(
                index=n + failed + i,
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
        )
    return out


def arm(name: str, *runs: list[RequestRecord], metrics: list[dict[str, float]] | None = None) -> Arm:
    per_run = metrics or [{} for _ in runs]
    return Arm(name, [RunResult(r, m) for r, m in zip(runs, per_run, strict=True)])


def ci_width(comparison: Comparison, metric: str) -> float:
    row = comparison.row(metric)
    assert row is not None and row.ci_low is not None and row.ci_high is not None
    return row.ci_high - row.ci_low


def test_injected_ttft_difference_is_found_both_ways() -> None:
    rng = np.random.default_rng(1)
    slow = arm("slow", records(rng, 50, ttft=48.0))
    fast = arm("fast", records(rng, 50, ttft=40.0))

    faster = compare(slow, fast)
    row = faster.row("ttft_ms_p50")
    assert row is not None and row.primary and faster.rows[0] is row
    print(f"\n(a) fast vs slow: TTFT p50 {row.change_pct:+.1f}% CI [{row.ci_low:+.1f}, {row.ci_high:+.1f}]")
    assert row.verdict == Verdict.IMPROVED
    assert row.ci_low is not None and row.ci_high is not None
    assert row.ci_low < 100 * (40 - 48) / 48 < row.ci_high < 0
    assert row.p_value is not None and row.p_value < 0.01

    slower = compare(fast, slow)
    back = slower.row("ttft_ms_p50")
    assert back is not None and back.verdict == Verdict.WORSE
    assert back.ci_low is not None and back.ci_high is not None
    print(f"(a) slow vs fast: TTFT p50 {back.change_pct:+.1f}% CI [{back.ci_low:+.1f}, {back.ci_high:+.1f}]")
    assert 0 < back.ci_low < 100 * (48 - 40) / 40 < back.ci_high
    # TTFB moved with TTFT: a secondary row, significant after Holm.
    ttfb = slower.row("ttfb_ms_p50")
    assert ttfb is not None and not ttfb.primary and ttfb.verdict == Verdict.WORSE
    # Decode was not touched.
    itl = slower.row("itl_ms_p50")
    assert itl is not None and itl.verdict == Verdict.NO_CHANGE


def test_identical_configurations_rarely_differ() -> None:
    # 200 requests a run: the objective's CI is then narrower than min_effect_pct, so the minimum
    # effect, not only the 5% level, guards it (at 100 requests it is a plain 5% test).
    objective_quiet = 0
    any_significant = 0
    for rep in range(20):
        a = arm("a", records(np.random.default_rng(1000 + 2 * rep), 200))
        b = arm("b", records(np.random.default_rng(1001 + 2 * rep), 200))
        result = compare(a, b, seed=rep)
        objective = result.row("ttft_ms_p50")
        assert objective is not None
        objective_quiet += objective.verdict == Verdict.NO_CHANGE
        any_significant += any(r.verdict in SIGNIFICANT for r in result.rows)
    print(f"\n(b) objective quiet in {objective_quiet}/20; any row significant in {any_significant}/20")
    assert objective_quiet >= 19
    assert any_significant <= 2


def test_noise_between_repeats_widens_the_interval() -> None:
    rng = np.random.default_rng(7)

    def repeats(name: str) -> Arm:
        return arm(name, *(records(rng, 50, offset=float(rng.uniform(-4, 4))) for _ in range(3)))

    base, cand = repeats("base"), repeats("cand")
    flat_base = arm("base", [r for run in base.runs for r in run.records])
    flat_cand = arm("cand", [r for run in cand.runs for r in run.records])

    two_stage = compare(base, cand)
    flat = compare(flat_base, flat_cand)
    wide, narrow = ci_width(two_stage, "ttft_ms_p50"), ci_width(flat, "ttft_ms_p50")
    print(f"\n(c) TTFT p50 CI width: two-stage {wide:.1f} points, requests only {narrow:.1f} points")
    assert "two-stage" in two_stage.method and "two-stage" not in flat.method
    assert wide > 1.5 * narrow
    # The point estimates are the same pooled statistics.
    pooled, plain = two_stage.row("ttft_ms_p50"), flat.row("ttft_ms_p50")
    assert pooled is not None and plain is not None and pooled.change_pct == pytest.approx(plain.change_pct)


def test_too_few_requests_gives_no_interval() -> None:
    rng = np.random.default_rng(3)
    result = compare(arm("a", records(rng, 60)), arm("b", records(rng, 15, ttft=60.0)))
    row = result.row("ttft_ms_p50")
    assert row is not None
    assert row.verdict == Verdict.TOO_FEW and row.ci_low is None and row.p_value is None
    assert row.change_pct is not None and row.change_pct > 30  # the point change is still shown
    assert row.n_candidate == 15
    error_rate = result.row("error_rate")
    assert error_rate is not None and error_rate.verdict == Verdict.TOO_FEW


def test_error_rate_compares_proportions() -> None:
    rng = np.random.default_rng(4)
    # Newcombe (1998), table II, example (a): 56/70 vs 48/80 is +20 pp, 95% CI [5.24, 33.39] pp (method 10).
    base = arm("base", records(rng, 32, failed=48))
    cand = arm("cand", records(rng, 14, failed=56))
    row = compare(base, cand).row("error_rate")
    assert row is not None and row.change_unit == "pp" and row.unit == "%"
    assert (row.baseline, row.candidate) == pytest.approx((60.0, 80.0))
    assert row.change_pct == pytest.approx(20.0)
    assert (row.ci_low, row.ci_high) == pytest.approx((5.24, 33.39), abs=0.01)
    assert row.verdict == Verdict.WORSE

    few_errors = compare(arm("a", records(rng, 400, failed=2)), arm("b", records(rng, 400, failed=40)))
    row = few_errors.row("error_rate")
    assert row is not None and row.verdict == Verdict.WORSE and row.ci_low is not None and row.ci_low > 0
    # The failed requests' 5 s latencies are never samples.
    ttft = few_errors.row("ttft_ms_p95")
    assert ttft is not None and ttft.candidate < 60 and ttft.n_candidate == 400

    none = compare(arm("a", records(rng, 100)), arm("b", records(rng, 100)))
    row = none.row("error_rate")
    assert row is not None and row.change_pct == 0 and row.verdict == Verdict.NO_CHANGE


def test_output_length_mismatch_compares_e2e_per_token() -> None:
    rng = np.random.default_rng(5)
    short = arm("short", records(rng, 80, tokens=(25, 36)))
    long = arm("long", records(rng, 80, tokens=(55, 66)))
    result = compare(short, long, objective="e2e_ms_p50")
    [note] = [note for note in result.notes if "output tokens" in note and "per output token" in note]
    assert "spreads its TTFT over more tokens, so TTFT and the decode rate say more" in note
    metrics = [r.metric for r in result.rows]
    assert "e2e_ms_p50" not in metrics and "e2e_ms_per_token_p50" in metrics
    assert result.objective == "e2e_ms_per_token_p50" and result.rows[0].metric == "e2e_ms_per_token_p50"
    tokens = result.row("output_tokens_p50")
    assert tokens is not None and tokens.direction is None and tokens.verdict == Verdict.DIFFERS

    same = compare(short, arm("short2", records(rng, 80, tokens=(25, 36))))
    assert not same.notes and same.row("e2e_ms_p50") is not None


def test_run_level_metrics() -> None:
    rng = np.random.default_rng(6)
    one = compare(
        arm("a", records(rng, 50), metrics=[{"throughput_tokens_per_s": 100.0, "cpu_pct_mean": 20.0}]),
        arm("b", records(rng, 50), metrics=[{"throughput_tokens_per_s": 120.0}]),
    )
    row = one.row("throughput_tokens_per_s")
    assert row is not None and row.verdict == Verdict.NO_CI and row.change_pct == pytest.approx(20.0)
    assert one.row("cpu_pct_mean") is None and any("cpu_pct_mean" in n for n in one.notes)

    def runs(throughputs: list[float]) -> Arm:
        return arm(
            "x",
            *(records(rng, 30) for _ in throughputs),
            metrics=[{"throughput_tokens_per_s": t, "cold_starts": 0.0} for t in throughputs],
        )

    three = compare(runs([100.0, 101.0, 99.0, 100.5]), runs([120.0, 121.0, 119.0, 120.5]))
    row = three.row("throughput_tokens_per_s")
    assert row is not None and row.verdict == Verdict.IMPROVED and row.n_baseline == 4
    cold = three.row("cold_starts")
    assert cold is not None and cold.change_pct == 0 and cold.verdict == Verdict.NO_CHANGE


def test_markdown_table() -> None:
    rng = np.random.default_rng(8)
    result = compare(arm("options=base", records(rng, 50, ttft=48.0)), arm("options=low_ctx", records(rng, 50)))
    text = to_markdown([result])
    assert "| metric | options=base | options=low_ctx | change % | 95% CI | verdict |" in text
    lines = text.splitlines()
    primary = next(line for line in lines if "(objective)" in line)
    assert primary.startswith("| **TTFT p50 (ms)**") and "improved" in primary and "%" in primary
    assert f"{DEFAULT_RESAMPLES} resamples, seed 0" in text and "percentile bootstrap" in text


def test_rejects_too_few_resamples() -> None:
    rng = np.random.default_rng(9)
    with pytest.raises(ValueError, match="resamples"):
        compare(arm("a", records(rng, 30)), arm("b", records(rng, 30)), resamples=500)


def test_timing_three_runs_of_200_requests() -> None:
    rng = np.random.default_rng(10)

    def three_runs(name: str, ttft: float) -> Arm:
        return arm(
            name,
            *(records(rng, 200, ttft=ttft) for _ in range(3)),
            metrics=[
                {"throughput_tokens_per_s": float(rng.normal(300, 5)), "cpu_pct_mean": 30.0, "cold_starts": 0.0}
                for _ in range(3)
            ],
        )

    a, b = three_runs("a", 40.0), three_runs("b", 41.0)
    start = time.perf_counter()
    result = compare(a, b)
    elapsed = time.perf_counter() - start
    print(f"\n(g) one compare, 2 arms x 3 runs x 200 requests, {len(result.rows)} rows: {elapsed * 1000:.0f} ms")
    assert len(result.rows) >= 13


def test_any_latency_percentile_can_be_the_objective() -> None:
    rng = np.random.default_rng(11)
    result = compare(arm("a", records(rng, 60)), arm("b", records(rng, 60, itl=12.0)), objective="tpot_ms_p99")
    row = result.rows[0]
    assert row.metric == "tpot_ms_p99" and row.primary and row.label == "TPOT p99"
    assert row.verdict == Verdict.WORSE and row.change_pct is not None and 15 < row.change_pct < 25
    assert sum(r.primary for r in result.rows) == 1

    unknown = compare(arm("a", records(rng, 30)), arm("b", records(rng, 30)), objective="requests_per_s")
    assert not any(r.primary for r in unknown.rows)
    assert any("requests_per_s" in note and "secondary" in note for note in unknown.notes)


def test_holm_adjustment_of_secondary_rows() -> None:
    from sentinel_exp.analysis.comparison import _holm

    assert _holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(12)
    result = compare(arm("a", records(rng, 100)), arm("b", records(rng, 100, ttft=43.0)))
    for row in result.rows:
        if row.primary:
            assert row.p_adjusted == row.p_value
        elif row.p_value is not None:
            assert row.p_adjusted is not None and row.p_adjusted >= row.p_value
            if row.verdict in SIGNIFICANT:
                assert row.p_adjusted < 0.05
