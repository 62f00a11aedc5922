"""sentinel_exp.analysis.comparison on made-up studies (tests/support/studies.py): known effects are
found with a CI that covers them, the unit of the interval is the design's (rounds, runs, or none
with one run per arm), and each documented rule holds at its boundary."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from support.studies import QUIET, Noise, paired_study, repeated_runs, requests, single_runs

from sentinel_exp.analysis.comparison import (
    SIGNIFICANT,
    Arm,
    Comparison,
    Design,
    MetricComparison,
    RunResult,
    Verdict,
    compare,
    compare_many,
    design_line,
    to_markdown,
    verdict_text,
)
from sentinel_exp.names import Direction


def test_an_injected_ttft_difference_is_found_both_ways_in_a_paired_study() -> None:
    slow, fast = paired_study(np.random.default_rng(1), effect=40.0 / 48.0)
    faster = compare(slow, fast)
    row = faster.row("ttft_ms_p50")
    assert faster.design is Design.PAIRED and faster.clusters == 10
    assert row is not None and row.primary and faster.rows[0] is row
    assert row.verdict == Verdict.IMPROVED
    assert row.ci_low is not None and row.ci_high is not None
    assert row.ci_low < 100 * (40 - 48) / 48 < row.ci_high < 0
    assert row.p_value is not None and row.p_value < 0.01

    slower = compare(fast, slow)
    back = slower.row("ttft_ms_p50")
    assert back is not None and back.verdict == Verdict.WORSE
    assert back.ci_low is not None and 0 < back.ci_low < 100 * (48 - 40) / 40 < back.ci_high
    # TTFB moved with TTFT: a secondary row, significant after Holm. Decode was not touched.
    ttfb, itl = slower.row("ttfb_ms_p50"), slower.row("itl_ms_p50")
    assert ttfb is not None and not ttfb.primary and ttfb.verdict == Verdict.WORSE
    assert itl is not None and itl.verdict not in SIGNIFICANT


def test_a_paired_change_is_the_geometric_mean_of_the_rounds_ratios() -> None:
    base, cand = paired_study(np.random.default_rng(2), rounds=6, per_block=5, effect=1.1)
    row = compare(base, cand).row("ttft_ms_p50")

    def per_round(arm: Arm) -> dict[int, float]:
        values: dict[int, list[float]] = {}
        for r in arm.runs[0].records:
            if r.measured and r.ok and r.block is not None and r.ttft_ms is not None:
                values.setdefault(r.block, []).append(r.ttft_ms)
        return {k: float(np.percentile(v, 50)) for k, v in values.items()}

    b, c = per_round(base), per_round(cand)
    logs = [math.log(c[k] / b[k]) for k in sorted(b)]
    assert row is not None and row.change_pct == pytest.approx(100 * math.expm1(float(np.mean(logs))), rel=1e-12)
    # The columns are the arms' pooled p50s, as each run's summary has them.
    pooled = [r.ttft_ms for r in base.runs[0].records if r.measured and r.ok]
    assert row.baseline == pytest.approx(float(np.percentile(pooled, 50)))


def test_one_run_per_arm_gives_no_significance_verdict() -> None:
    base, cand = single_runs(np.random.default_rng(3), n=200, effect=1.5)
    result = compare(base, cand)
    assert result.design is Design.SINGLE
    row = result.row("ttft_ms_p50")
    # The change is shown (+50%, from the pooled records), but nothing says whether runs differ that much.
    assert row is not None and row.change_pct is not None and 40 < row.change_pct < 60
    assert row.verdict == Verdict.NO_CI and row.ci_low is None and row.p_value is None
    assert not any(r.verdict in SIGNIFICANT for r in result.rows if r.metric != "error_rate")
    assert result.notes == (
        "one run per arm: the noise between runs is unknown, so no row gets a significance verdict; "
        "measure the arms in one interleaved study (a sweep's default) or repeat each run",
    )
    assert (
        design_line(result) == "design: one run per arm; the noise between runs is unknown, so no significance verdict"
    )


def test_runs_of_another_study_are_not_paired() -> None:
    base, cand = paired_study(np.random.default_rng(4), effect=1.2)
    elsewhere = Arm(cand.name, [RunResult(cand.runs[0].records, study="another study")])
    assert compare(base, cand).design is Design.PAIRED
    assert compare(base, elsewhere).design is Design.SINGLE


def test_repeats_compare_as_independent_runs() -> None:
    base, cand = repeated_runs(np.random.default_rng(5), runs=5, effect=1.25)
    result = compare(base, cand)
    assert result.design is Design.INDEPENDENT and result.clusters == 5
    row = result.row("ttft_ms_p50")
    assert row is not None and row.verdict == Verdict.WORSE
    # Coverage is a rate over many studies (test_calibration.py); one draw only shows the sign.
    assert row.ci_low is not None and row.ci_low > 0
    assert "Welch" in result.method and result.notes == ()


def test_noise_between_runs_widens_the_interval() -> None:
    noisy = compare(*repeated_runs(np.random.default_rng(6), runs=4, noise=Noise(drift=0.08)))
    quiet = compare(*repeated_runs(np.random.default_rng(6), runs=4, noise=QUIET))

    def width(result: object) -> float:
        row = result.row("ttft_ms_p50")  # type: ignore[attr-defined]
        return float(row.ci_high - row.ci_low)

    assert width(noisy) > 3 * width(quiet)


def test_too_few_requests_gives_no_interval_at_19_and_one_at_20() -> None:
    def verdict(n: int) -> Verdict:
        rng = np.random.default_rng(7)
        base, cand = paired_study(rng, rounds=4, per_block=5)
        trimmed = [r for r in cand.runs[0].records if not r.measured or r.index < n]
        row = compare(base, Arm("cand", [RunResult(trimmed, study="s1")])).row("ttft_ms_p50")
        assert row is not None and row.n_candidate == n
        return row.verdict

    assert verdict(19) == Verdict.TOO_FEW
    assert verdict(20) != Verdict.TOO_FEW


def test_error_rate_compares_proportions() -> None:
    rng = np.random.default_rng(8)
    # Newcombe (1998), table II, example (a): 56/70 vs 48/80 is +20 pp, 95% CI [5.24, 33.39] pp (method 10).
    base = Arm("base", [RunResult(requests(rng, 32, failed=48))])
    cand = Arm("cand", [RunResult(requests(rng, 14, failed=56))])
    row = compare(base, cand).row("error_rate")
    assert row is not None and row.change_unit == "pp" and row.unit == "%" and row.label == "error rate"
    assert (row.n_baseline, row.n_candidate) == (80, 70)
    assert (row.baseline, row.candidate) == pytest.approx((60.0, 80.0))
    assert row.change_pct == pytest.approx(20.0)
    assert (row.ci_low, row.ci_high) == pytest.approx((5.24, 33.39), abs=0.01)
    assert row.verdict == Verdict.WORSE
    # The failed requests' 5 s latencies are never samples.
    many = compare(Arm("a", [RunResult(requests(rng, 400, failed=2))]), Arm("b", [RunResult(requests(rng, 400))]))
    ttft = many.row("ttft_ms_p95")
    assert ttft is not None and ttft.baseline < 60 and ttft.n_baseline == 400


def test_output_length_mismatch_compares_e2e_per_token() -> None:
    rng = np.random.default_rng(9)
    short = Arm("short", [RunResult(requests(rng, 80, tokens=(25, 36)))])
    long = Arm("long", [RunResult(requests(rng, 80, tokens=(55, 66)))])
    result = compare(short, long, objective="e2e_ms_p50")
    [note] = [note for note in result.notes if "output tokens" in note and "per output token" in note]
    assert "spreads its TTFT over more tokens, so TTFT and the decode rate say more" in note
    metrics = [r.metric for r in result.rows]
    assert "e2e_ms_p50" not in metrics and "e2e_ms_per_token_p50" in metrics
    assert result.objective == "e2e_ms_per_token_p50" and result.rows[0].metric == "e2e_ms_per_token_p50"


def test_run_level_metrics_need_two_runs_a_side() -> None:
    rng = np.random.default_rng(10)
    one = compare(
        Arm("a", [RunResult(requests(rng, 50), {"throughput_tokens_per_s": 100.0, "cpu_pct_mean": 20.0})]),
        Arm("b", [RunResult(requests(rng, 50), {"throughput_tokens_per_s": 120.0})]),
    )
    row = one.row("throughput_tokens_per_s")
    assert row is not None and row.verdict == Verdict.NO_CI and row.change_pct == pytest.approx(20.0)
    assert one.row("cpu_pct_mean") is None and any("cpu_pct_mean" in n for n in one.notes)

    def runs(throughputs: list[float]) -> list[dict[str, float]]:
        return [{"throughput_tokens_per_s": t, "cold_starts": 0.0} for t in throughputs]

    base, _ = repeated_runs(rng, runs=4, metrics=runs([100.0, 101.0, 99.0, 100.5]))
    cand, _ = repeated_runs(rng, runs=4, metrics=runs([120.0, 121.0, 119.0, 120.5]))
    four = compare(base, cand)
    row = four.row("throughput_tokens_per_s")
    assert row is not None and row.verdict == Verdict.IMPROVED and (row.n_baseline, row.n_candidate) == (4, 4)
    assert (row.label, row.unit, row.direction) == ("throughput", "tok/s", Direction.maximize)
    cold = four.row("cold_starts")
    assert cold is not None and cold.change_pct == 0 and cold.verdict == Verdict.NO_CI


def test_equivalence_when_the_whole_interval_lies_within_the_minimum_effect() -> None:
    base, cand = paired_study(np.random.default_rng(11), rounds=20, per_block=20, noise=Noise(0.0, 0.0, 1.0))
    result = compare(base, cand)
    row = result.primary
    assert row is not None and row.ci_low is not None and row.ci_low >= -2 and row.ci_high <= 2
    assert row.verdict == Verdict.EQUIVALENT
    assert verdict_text(row, result.min_effect_pct) == "no change larger than 2%"
    # A secondary row is never called equivalent: only the objective decides.
    assert all(r.verdict != Verdict.EQUIVALENT for r in result.rows if not r.primary)


def test_the_minimum_detectable_effect_shrinks_with_more_rounds() -> None:
    few = compare(*paired_study(np.random.default_rng(12), rounds=4, per_block=6))
    many = compare(*paired_study(np.random.default_rng(12), rounds=30, per_block=6))
    mde_few, mde_many = few.primary.mde_pct, many.primary.mde_pct  # type: ignore[union-attr]
    assert mde_few is not None and mde_many is not None and mde_many < mde_few / 2
    assert f"{mde_many:.1f}%" in design_line(many)
    assert any("only 4 rounds" in note for note in few.notes)


def test_markdown_table_states_the_design() -> None:
    base, cand = paired_study(np.random.default_rng(13), effect=1.3)
    text = to_markdown([compare(base, cand)])
    assert "| metric | base | cand | change % | 95% CI | verdict |" in text
    primary = next(line for line in text.splitlines() if "(objective)" in line)
    assert primary.startswith("| **TTFT p50 (ms)**") and "worse" in primary
    assert "- design: paired rounds, 10 rounds; the CI covers the noise between rounds" in text
    assert "t interval over the rounds' log ratios (9 df)" in text


def test_a_sequential_look_reports_its_own_level() -> None:
    base, cand = paired_study(np.random.default_rng(14), effect=1.3)
    look = compare(base, cand, alpha=0.01)
    assert look.confidence == pytest.approx(0.99)
    assert "| 99% CI |" in to_markdown([look])
    wide, narrow = look.primary, compare(base, cand).primary
    assert wide is not None and narrow is not None and wide.ci_high > narrow.ci_high  # type: ignore[operator]


def test_any_latency_percentile_can_be_the_objective() -> None:
    base, cand = paired_study(np.random.default_rng(15), candidate_itl=12.0)
    result = compare(base, cand, objective="tpot_ms_p99")
    row = result.rows[0]
    assert row.metric == "tpot_ms_p99" and row.primary and row.label == "TPOT p99" and row.unit == "ms"
    assert row.verdict == Verdict.WORSE and row.change_pct is not None and 10 < row.change_pct < 30
    assert sum(r.primary for r in result.rows) == 1

    unknown = compare(base, cand, objective="requests_per_s")
    assert not any(r.primary for r in unknown.rows)
    assert any("requests_per_s" in note and "secondary" in note for note in unknown.notes)


def test_holm_adjustment_of_secondary_rows() -> None:
    from sentinel_exp.analysis.comparison import _holm

    assert _holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    result = compare(*paired_study(np.random.default_rng(16), effect=1.06))
    secondary = [r for r in result.rows if not r.primary and r.p_value is not None]
    expected = _holm([r.p_value for r in secondary])  # type: ignore[misc]
    for row, adjusted in zip(secondary, expected, strict=True):
        assert row.p_adjusted == pytest.approx(adjusted)
        assert (row.verdict in SIGNIFICANT) <= (adjusted < 0.05)
    primary = result.primary
    assert primary is not None and primary.p_adjusted == primary.p_value


def test_numbers_keep_three_significant_digits_and_no_exponent_from_1000_up() -> None:
    from sentinel_exp.analysis.comparison import _number

    cases = {
        0.0123: "0.0123",
        9.99: "9.99",
        40.24: "40.2",
        329.0: "329",
        999.4: "999",
        # Three significant digits of these are 1000: a whole number, never "1e+03".
        999.5: "1,000",
        999.7: "1,000",
        -999.7: "-1,000",
        1000.0: "1,000",
        1000.5: "1,000",
        1234.4: "1,234",
        math.nan: "n/a",
        math.inf: "n/a",
    }
    assert {value: _number(value) for value in cases} == cases


# --- the rest of the module, pinned (scripts/mutation.sh) -------------------------------------------


def test_each_arm_needs_a_run() -> None:
    base, cand = single_runs(np.random.default_rng(17))
    for arms in ((Arm("none", []), cand), (base, Arm("none", []))):
        with pytest.raises(ValueError) as raised:
            compare(*arms)
        assert str(raised.value) == "each arm needs at least one run"


def test_compare_many_is_compare_of_each_candidate_with_the_same_settings() -> None:
    base, cand = paired_study(np.random.default_rng(18), effect=1.04)
    other = Arm("other", cand.runs)
    settings = {"objective": "ttft_ms_p95", "min_effect_pct": 5.0, "alpha": 0.01}
    many = compare_many(base, [cand, other], **settings)  # type: ignore[arg-type]
    assert [(c.baseline, c.candidate) for c in many] == [("base", "cand"), ("base", "other")]
    assert all(c.objective == "ttft_ms_p95" and c.min_effect_pct == 5.0 for c in many)
    assert all(c.confidence == pytest.approx(0.99) for c in many)
    one_by_one = [compare(base, c, **settings) for c in (cand, other)]  # type: ignore[arg-type]
    assert to_markdown(many) == to_markdown(one_by_one)


def test_one_run_per_arm_gives_no_verdict_even_for_the_same_records() -> None:
    base, _ = single_runs(np.random.default_rng(19))
    result = compare(base, Arm("same", base.runs))
    assert result.clusters == 1
    ttft = result.row("ttft_ms_p50")
    assert ttft is not None and ttft.change_pct == 0.0 and ttft.verdict == Verdict.NO_CI
    assert result.method.startswith(
        "one run per arm: no unit to estimate the noise between runs with, so no significance verdict; "
    )


def test_the_method_states_the_level_of_its_intervals() -> None:
    paired = paired_study(np.random.default_rng(20))
    assert "per round, 95% t interval over the rounds' log ratios (9 df)" in compare(*paired).method
    assert "per round, 99% t interval over the rounds' log ratios (9 df)" in compare(*paired, alpha=0.01).method
    independent = compare(*repeated_runs(np.random.default_rng(20), runs=3))
    assert "per run, 95% Welch t interval over the arms' log values (3+ runs per arm)" in independent.method


def test_a_run_level_metric_whose_baseline_is_zero_has_no_change() -> None:
    rng = np.random.default_rng(21)
    result = compare(
        Arm("a", [RunResult(requests(rng, 30), {"cold_starts": 0.0})]),
        Arm("b", [RunResult(requests(rng, 30), {"cold_starts": 3.0})]),
    )
    cold = result.row("cold_starts")
    assert cold is not None and (cold.baseline, cold.candidate) == (0.0, 3.0)
    assert cold.change_pct is None and cold.verdict == Verdict.NO_CI


def comparison(design: Design, rows: tuple[MetricComparison, ...], **fields: object) -> Comparison:
    return Comparison(
        baseline="base",
        candidate="cand",
        objective="ttft_ms_p50",
        rows=rows,
        notes=("a note",),
        method="the method",
        design=design,
        **fields,  # type: ignore[arg-type]
    )


def metric_row(name: str, numbers: tuple[float | None, ...], verdict: Verdict, **fields: object) -> MetricComparison:
    """`name`: "metric|label|unit"; `numbers`: baseline, candidate, change_pct, ci_low, ci_high, p_value,
    p_adjusted. A secondary row of a metric where lower is better, unless `fields` say otherwise."""
    metric, label, unit = name.split("|")
    given: dict[str, object] = {"primary": False, "direction": Direction.minimize, **fields}
    return MetricComparison(metric, label, unit, *numbers, verdict=verdict, **given)  # type: ignore[arg-type]


def test_the_markdown_table_cell_by_cell() -> None:
    no_ci = (None, None, None, None)
    rows = (
        metric_row("ttft_ms_p50|TTFT p50|ms", (999.7, 1001.0, 0.3, -1.04, 1.56, 0.52, 0.52), Verdict.EQUIVALENT),
        metric_row("ttfb_ms_p95|TTFB p95|ms", (40.25, 48.3, 20.0, 12.0, 28.96, 0.0012, 0.0108), Verdict.WORSE),
        metric_row("error_rate|error rate|%", (0.0, 5.0, 5.0, 1.2, 9.94, 0.01, 0.04), Verdict.WORSE, change_unit="pp"),
        metric_row("cold_starts|cold starts|requests", (0.0, 2.0, None, *no_ci), Verdict.NO_CI),
        metric_row("error_rate|error rate|%", (0.0, 0.0, 0.0, *no_ci), Verdict.TOO_FEW, change_unit="pp"),
    )
    objective = replace(rows[0], primary=True, mde_pct=2.345)
    paired = comparison(Design.PAIRED, (objective, *rows[1:]), min_effect_pct=3.0, clusters=10)
    single = comparison(Design.SINGLE, (), confidence=0.993)
    assert to_markdown([paired, single]) == (
        "### cand vs base\n"
        "\n"
        "| metric | base | cand | change % | 95% CI | verdict |\n"
        "|---|---:|---:|---:|---|---|\n"
        "| **TTFT p50 (ms)** (objective) | 1,000 | 1,001 | +0.3% | [-1.0, +1.6] | no change larger than 3% (p 0.52) |\n"
        "| TTFB p95 (ms) | 40.2 | 48.3 | +20.0% | [+12.0, +29.0] | worse (Holm p 0.011) |\n"
        "| error rate (%) | 0 | 5 | +5.0 pp | [+1.2, +9.9] pp | worse (Holm p 0.04) |\n"
        "| cold starts (requests) | 0 | 2 | n/a | — | no verdict (one run per arm) |\n"
        "| error rate (%) | 0 | 0 | +0.0 pp | — | too few requests |\n"
        "\n"
        "- design: paired rounds, 10 rounds; the CI covers the noise between rounds and within them, not what "
        "every round shares; the smallest TTFT p50 change it finds with 80% power: 2.3%\n"
        "- a note\n"
        "- method: the method\n"
        "\n"
        "### cand vs base\n"
        "\n"
        "| metric | base | cand | change % | 99.3% CI | verdict |\n"
        "|---|---:|---:|---:|---|---|\n"
        "\n"
        "- design: one run per arm; the noise between runs is unknown, so no significance verdict\n"
        "- a note\n"
        "- method: the method\n"
    )  # fmt: skip


def test_the_design_line_of_independent_runs_and_of_a_study_with_no_objective_row() -> None:
    numbers = (40.0, 44.0, 10.0, 4.0, 16.0, 0.01, 0.01)
    primary = metric_row("ttft_ms_p50|TTFT p50|ms", numbers, Verdict.WORSE, primary=True, mde_pct=7.25)
    assert design_line(comparison(Design.INDEPENDENT, (primary,), clusters=3)) == (
        "design: independent runs, 3 runs per arm; the CI covers the noise between runs and within them, not what "
        "every run shares; the smallest TTFT p50 change it finds with 80% power: 7.2%"
    )
    assert design_line(comparison(Design.PAIRED, (), clusters=6)) == (
        "design: paired rounds, 6 rounds; the CI covers the noise between rounds and within them, not what every "
        "round shares"
    )
    # An objective row without a minimum detectable effect (too few requests, no interval) says none.
    blocked = metric_row(
        "ttft_ms_p50|TTFT p50|ms", (40.0, 44.0, 10.0, None, None, None, None), Verdict.TOO_FEW, primary=True
    )
    assert design_line(comparison(Design.PAIRED, (blocked,), clusters=6)).endswith("not what every round shares")
