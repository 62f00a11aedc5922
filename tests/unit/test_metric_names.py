"""The list of logged metric names against what a run's summaries really compute: a target or an
objective is refused only when no run could log it."""

from __future__ import annotations

import pytest
from support.run_data import run_records, samples

from sentinel_exp.analysis import metric_names
from sentinel_exp.analysis.diagnosis import diagnose
from sentinel_exp.analysis.stats import describe, latency_samples, summarize
from sentinel_exp.telemetry.summary import summarize_telemetry


def test_every_metric_a_run_computes_is_known():
    records = run_records()
    for r in records:
        r.load_duration_ms, r.prompt_eval_duration_ms, r.eval_duration_ms, r.total_duration_ms = 1.0, 2.0, 3.0, 7.0
        r.eval_count, r.prompt_eval_count, r.cold = 3, 10, r.index % 2 == 0
    metrics = summarize(records, 10.0)
    metrics |= diagnose(records, metrics).metrics()
    metrics |= summarize_telemetry(samples(20), output_tokens=100)
    assert len(metrics) > 100
    assert sorted(set(metrics) - metric_names.LOGGED) == []


def test_the_latency_families_and_statistics_are_the_summaries_own():
    assert set(latency_samples(run_records())) == set(metric_names.LATENCY_FAMILIES)
    assert tuple(describe([1.0, 2.0])) == metric_names.STATISTICS


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("ttft_ms_p5", "ttft_ms_p50"), ("e2e_ms_p95x", "e2e_ms_p95"), ("ttft_p50", "ttft_ms_p50"), ("nonsense", None)],
)
def test_a_misspelt_name_finds_the_metric_it_meant(typed, meant):
    assert not metric_names.is_logged(typed)
    assert metric_names.closest(typed) == meant
