"""The metric catalogue: every name a run logs has one label, unit and better direction, and the
tables that show metrics read them from it."""

from __future__ import annotations

import pytest
from support.run_data import run_records

from sentinel_exp.analysis import metrics
from sentinel_exp.analysis.metrics import LATENCIES, METRICS, describe, direction
from sentinel_exp.analysis.stats import latency_samples, summarize
from sentinel_exp.names import Direction
from sentinel_exp.records import RequestRecord
from sentinel_exp.report.markdown import summary_rows


def _records() -> list[RequestRecord]:
    """Measured requests with every clock point and the server's durations, so each latency has values."""
    out = run_records(warmup=0, measured=5, failed=0)
    for r in out:
        r.eval_count, r.eval_duration_ms, r.prompt_eval_count, r.prompt_eval_duration_ms = 3, 150.0, 40, 15.0
        r.load_duration_ms, r.total_duration_ms = 1.0, 180.0
    return out


def test_every_latency_the_stats_give_is_catalogued():
    assert set(latency_samples(_records())) == {latency.name for latency in LATENCIES}


def test_every_logged_run_metric_is_described_or_a_latency_statistic():
    logged = summarize(_records(), measured_duration_s=2.0)
    unknown = [name for name in logged if describe(name).label == name and not name.startswith("output_tokens_")]
    # Counts and durations are shown by name; each has a direction or deliberately none.
    assert set(unknown) <= {
        "requests_ok",
        "requests_cancelled",
        "requests_per_s",
        "measured_duration_s",
        "server_eval_tokens_per_s",
    }
    assert describe("ttft_ms_p99").label == "TTFT p99" and describe("ttft_ms_p99").unit == "ms"
    assert describe("client_overhead_ms_max").label == "E2E − server total max"


@pytest.mark.parametrize(
    ("metric", "label", "unit", "better"),
    [
        # As the comparison's tables show them.
        ("ttft_ms_p50", "TTFT p50", "ms", Direction.minimize),
        ("ttfb_ms_p95", "TTFB p95", "ms", Direction.minimize),
        ("e2e_ms_p95", "E2E p95", "ms", Direction.minimize),
        ("e2e_ms_per_token_p50", "E2E per output token p50", "ms/token", Direction.minimize),
        ("itl_ms_p50", "ITL p50", "ms", Direction.minimize),
        ("tpot_ms_p90", "TPOT p90", "ms", Direction.minimize),
        ("output_tokens_per_s", "decode tok/s per request (median)", "tok/s", Direction.maximize),
        ("output_tokens_p50", "output tokens per request (median)", "tokens", None),
        ("throughput_tokens_per_s", "throughput", "tok/s", Direction.maximize),
        ("cold_starts", "cold starts", "requests", Direction.minimize),
        ("cpu_pct_mean", "CPU, machine (mean)", "%", Direction.minimize),
        ("server_cpu_pct_mean", "CPU, server (mean)", "% of a core", Direction.minimize),
        ("gpu_util_pct_mean", "GPU utilisation (mean)", "%", None),
        ("energy_j_per_token", "GPU energy per token", "J/token", Direction.minimize),
        ("error_rate", "error rate", "%", Direction.minimize),
    ],
)
def test_a_metric_is_shown_and_judged_as_the_comparison_shows_it(metric, label, unit, better):
    shown = describe(metric)
    assert (shown.label, shown.unit, shown.direction) == (label, unit, better)
    assert direction(metric) == better


def test_error_rate_is_logged_as_a_fraction_and_shown_in_percent():
    assert METRICS["error_rate"].scale == 100.0
    assert all(m.scale == 1.0 for name, m in METRICS.items() if name != "error_rate")


def test_the_summary_table_reads_the_catalogue():
    logged = summarize(_records(), measured_duration_s=2.0)
    labels = [row[0] for row in summary_rows(logged)]
    assert labels[:5] == ["TTFB", "TTFT", "ITL", "TPOT", "E2E"]
    assert labels[-2:] == [metrics.OUTPUT_TOKENS.label, "prefill rate"]
    assert summary_rows(logged)[-2][1] == "3.0 tok"
    assert "TTFT − load − prefill" not in labels  # a figure's, not a summary row


def test_the_sweep_table_headers_come_from_the_catalogue():
    from sentinel_exp.report.console import SWEEP_COLUMNS

    assert [describe(name).header for name in SWEEP_COLUMNS] == [
        "TTFT p50",
        "TTFT p95",
        "E2E p50",
        "tok/s",
        "cold",
        "failed",
    ]


def test_a_figure_names_a_latency_by_its_axis_label():
    assert metrics.axis_label("itl") == "inter-token latency"
    assert metrics.axis_label("unknown_thing") == "unknown_thing"
