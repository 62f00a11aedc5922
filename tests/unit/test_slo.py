"""SLO verdicts: which way each metric is better, run-level targets, per-request goodput, and the
`slo` config section as the command line writes it."""

import pytest
from support.compose import variant

from sentinel_exp.analysis.metrics import direction as metric_direction
from sentinel_exp.analysis.slo import judge, judge_requests, judge_targets, meets
from sentinel_exp.cli.app import config_dir
from sentinel_exp.cli.overrides import override_problems
from sentinel_exp.config.schema import register_configs, typed_config
from sentinel_exp.errors import ConfigError
from sentinel_exp.names import Direction
from sentinel_exp.records import RequestRecord
from sentinel_exp.report.console import slo_line

register_configs()


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("ttft_ms_p50", Direction.minimize),
        ("e2e_ms_p99", Direction.minimize),
        ("server_queue_ms_mean", Direction.minimize),
        ("error_rate", Direction.minimize),
        ("cold_starts", Direction.minimize),
        ("requests_failed", Direction.minimize),
        ("server_cpu_pct_mean", Direction.minimize),
        ("gpu_energy_j", Direction.minimize),
        ("energy_j_per_token", Direction.minimize),
        ("output_tokens_per_s", Direction.maximize),
        ("throughput_tokens_per_s", Direction.maximize),
        ("requests_per_s", Direction.maximize),
        ("goodput_requests_per_s", Direction.maximize),
        ("slo_request_fraction", Direction.maximize),
        ("telemetry_samples", None),
        ("model_size_mb", None),
        ("nonsense", None),
    ],
)
def test_each_metric_has_the_direction_in_which_it_is_better(metric, direction):
    assert metric_direction(metric) == direction


@pytest.mark.parametrize(
    ("metric", "limit", "value", "passed"),
    [
        ("ttft_ms_p50", 300, 299.9, True),
        ("ttft_ms_p50", 300, 300.0, True),  # the limit itself meets the target
        ("ttft_ms_p50", 300, 300.1, False),
        ("output_tokens_per_s", 20, 25.0, True),
        ("output_tokens_per_s", 20, 19.0, False),
        ("error_rate", 0, 0.0, True),
        ("ttft_ms_p50", 300, None, False),  # no measurement cannot meet a target
    ],
)
def test_a_run_level_target_passes_on_the_better_side_of_its_limit(metric, limit, value, passed):
    metrics = {} if value is None else {metric: value}
    [verdict] = judge_targets({metric: limit}, metrics)
    assert (verdict.value, verdict.passed) == (value, passed)


def _record(ok=True, ttft=40.0, e2e=200.0, chunks=(40.0, 45.0, 50.0), phase="measured", error_class=None):
    return RequestRecord(
        index=0,
        phase=phase,
        prompt_index=0,
        api="chat",
        ok=ok,
        ttft_ms=ttft,
        e2e_ms=e2e,
        chunk_times_ms=list(chunks),
        error_class=error_class,
    )


@pytest.mark.parametrize(
    ("record", "limits", "met"),
    [
        (_record(), {"ttft_ms": 45}, True),
        (_record(), {"ttft_ms": 40}, True),
        (_record(), {"ttft_ms": 35}, False),
        (_record(), {"e2e_ms": 150}, False),
        (_record(), {"ttft_ms": 45, "e2e_ms": 250, "itl_ms": 5}, True),  # gaps 5 and 5: mean 5
        (_record(chunks=(40.0, 41.0, 52.0)), {"itl_ms": 6}, True),  # mean 6 though one gap is 11
        (_record(chunks=(40.0, 41.0, 54.0)), {"itl_ms": 6}, False),  # mean 7
        (_record(chunks=(40.0,)), {"itl_ms": 0.5}, True),  # one token: no gap to be late
        (_record(ok=False, ttft=None, e2e=None, chunks=()), {"ttft_ms": 1e9}, False),  # a failure meets nothing
        (_record(ttft=None), {"ttft_ms": 1e9}, False),  # not measured: not met
    ],
)
def test_a_request_meets_its_targets_only_when_it_succeeded_within_each(record, limits, met):
    assert meets(record, limits) is met


def test_goodput_counts_requests_meeting_every_target_over_the_measured_time():
    records = [
        _record(phase="warmup", ttft=10.0),  # warmup is never judged
        _record(ttft=30.0),
        _record(ttft=50.0),
        _record(ok=False, ttft=None, error_class="HTTP500"),
        _record(ok=False, ttft=None, error_class="Cancelled"),  # stopped by a signal: not judged
    ]
    verdict = judge_requests(records, {"ttft_ms": 45}, measured_duration_s=2.0)
    assert (verdict.met, verdict.finished) == (1, 3)
    assert verdict.metrics() == {"slo_request_fraction": pytest.approx(1 / 3), "goodput_requests_per_s": 0.5}
    assert judge_requests(records, {}, 2.0) is None
    assert judge_requests([], {"ttft_ms": 45}, None).metrics() == {}


def test_a_run_level_target_may_name_the_goodput():
    result = judge({"goodput_requests_per_s": 0.4}, {"ttft_ms": 45}, {}, [_record(), _record(ttft=99.0)], 2.0)
    assert result.metrics() == {
        "slo_request_fraction": 0.5,
        "goodput_requests_per_s": 0.5,
        "slo_goodput_requests_per_s_pass": 1.0,
    }
    assert result.tags() == {"sentinel.slo": "pass"}


def test_the_tag_fails_when_any_target_fails_and_is_absent_without_targets():
    metrics = {"ttft_ms_p50": 41.0, "e2e_ms_p95": 210.0}
    result = judge({"ttft_ms_p50": 300, "e2e_ms_p95": 200}, {}, metrics, [], None)
    assert result.metrics() == {"slo_ttft_ms_p50_pass": 1.0, "slo_e2e_ms_p95_pass": 0.0}
    assert result.tags() == {"sentinel.slo": "fail"}
    assert slo_line(result) == "SLO: ttft_ms_p50 41 ≤ 300 pass, e2e_ms_p95 210 ≤ 200 FAIL"
    empty = judge({}, {}, metrics, [], None)
    assert (empty.any, empty.tags(), empty.metrics()) == (False, {}, {})


def test_the_console_line_shows_the_per_request_verdict():
    result = judge({}, {"ttft_ms": 45}, {}, [_record(), _record(ttft=99.0)], 2.0)
    assert slo_line(result) == "SLO: per request (ttft_ms ≤ 45): 1 of 2 met (50.0%), goodput 0.50 req/s"


def test_targets_are_written_without_a_plus_on_the_command_line():
    overrides = ["slo.ttft_ms_p50=300", "slo.output_tokens_per_s=20.5", "slo.request.ttft_ms=500"]
    assert override_problems(overrides, config_dir()) == []
    cfg = typed_config(variant(*overrides))
    assert cfg.slo.run_targets() == {"ttft_ms_p50": 300.0, "output_tokens_per_s": 20.5}
    assert cfg.slo.request.limits() == {"ttft_ms": 500.0}
    # config.yaml, the params and --help see the targets like any setting.
    assert cfg.as_dict()["slo"] == {
        "request": {"ttft_ms": 500.0, "e2e_ms": None, "itl_ms": None},
        "ttft_ms_p50": 300,
        "output_tokens_per_s": 20.5,
    }
    assert typed_config(variant()).slo.run_targets() == {}
    assert typed_config(variant("slo.ttft_ms_p50=null")).slo.run_targets() == {}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("slo.nonsense=3", "slo.nonsense: not a metric with a known better direction"),
        # A misspelt metric with a known direction was judged, and failed for want of a value.
        ("slo.ttft_ms_p5=300", "slo.ttft_ms_p5: not a metric this tool logs; did you mean ttft_ms_p50?"),
        ("slo.e2e_ms_p95x=300", "slo.e2e_ms_p95x: not a metric this tool logs; did you mean e2e_ms_p95?"),
        ("slo.ttft_ms_p75=300", "slo.ttft_ms_p75: not a metric this tool logs; did you mean ttft_ms_p95?"),
        ("slo.ttft_ms_p50=fast", "slo.ttft_ms_p50='fast' is not valid: slo.ttft_ms_p50 takes a number"),
        ("slo.request.tfft_ms=3", "did you mean slo.request.ttft_ms?"),
        ("slo.request.ttft_ms=soon", "slo.request.ttft_ms='soon' is not valid"),
    ],
)
def test_a_wrong_target_stops_before_hydra_with_one_line(override, message):
    [problem] = override_problems([override], config_dir())
    assert message in problem


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["slo.nonsense=3"], "slo.nonsense: not a metric with a known better direction"),
        (["slo.ttft_ms_p5=300"], "slo.ttft_ms_p5: not a metric this tool logs; did you mean ttft_ms_p50?"),
        (["slo.gpu_temp_c_max=80"], "slo.gpu_temp_c_max: not a metric with a known better direction"),
        (["slo.ttft_ms_p50=fast"], "slo.ttft_ms_p50 must be a number, the limit (got 'fast')"),
        (["slo.request.ttft_ms=0"], "slo.request.ttft_ms must be positive ms (got 0)"),
    ],
)
def test_the_config_check_names_a_wrong_target(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        typed_config(variant(*overrides))


def test_goodput_over_a_measured_phase_shorter_than_a_second():
    verdict = judge_requests([_record(), _record()], {"ttft_ms": 45}, measured_duration_s=0.5)
    assert verdict.metrics() == {"slo_request_fraction": 1.0, "goodput_requests_per_s": 4.0}
    assert "goodput_requests_per_s" not in judge_requests([_record()], {"ttft_ms": 45}, 0.0).metrics()


def test_the_verdicts_as_summary_json_holds_them():
    result = judge({"ttft_ms_p50": 300}, {"ttft_ms": 45}, {"ttft_ms_p50": 41.0}, [_record(), _record(ttft=99.0)], 2.0)
    assert result.as_dict() == {
        "targets": [{"metric": "ttft_ms_p50", "limit": 300, "value": 41.0, "passed": True}],
        "request": {
            "limits": {"ttft_ms": 45},
            "met": 1,
            "finished": 2,
            "slo_request_fraction": 0.5,
            "goodput_requests_per_s": 0.5,
        },
    }
    assert judge({"ttft_ms_p50": 300}, {}, {}, [], None).as_dict() == {
        "targets": [{"metric": "ttft_ms_p50", "limit": 300, "value": None, "passed": False}]
    }
