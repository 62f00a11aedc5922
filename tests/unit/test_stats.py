import numpy as np
import pytest

from sentinel_exp.analysis.stats import describe, error_breakdown, is_cold, open_loop_warnings, summarize
from sentinel_exp.names import Phase
from sentinel_exp.records import RequestRecord


def record(index, phase=Phase.MEASURED, ok=True, ttft=40.0, itl=5.0, tokens=5, load=0.1, error_class=None):
    chunk_times = [ttft + k * itl for k in range(tokens)] if ok else []
    e2e = chunk_times[-1] + 0.5 if ok else None
    return RequestRecord(
        index=index,
        phase=phase,
        prompt_index=0,
        api="chat",
        ok=ok,
        ttfb_ms=ttft - 0.3,
        ttft_ms=ttft if ok else None,
        e2e_ms=e2e,
        chunk_times_ms=chunk_times,
        eval_count=tokens if ok else None,
        load_duration_ms=load,
        prompt_eval_duration_ms=30.0,
        eval_duration_ms=(tokens - 1) * itl,
        total_duration_ms=(e2e - 1.0) if ok else None,
        error_class=error_class,
    )


def test_describe_matches_numpy_percentiles():
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    out = describe(values)
    assert out["p50"] == 3.0
    assert out["p99"] == pytest.approx(np.percentile(values, 99))
    assert (out["min"], out["max"], out["mean"]) == (1.0, 100.0, 22.0)
    assert describe([]) == {}


def test_warmup_failed_and_cancelled_requests_stay_out_of_latency():
    records = [record(0, Phase.WARMUP, ttft=900.0, load=800.0), record(1, Phase.WARMUP, ttft=41.0)]
    records += [record(i, ttft=40.0 + i) for i in range(10)]
    records += [record(10, ok=False, error_class="HTTP500"), record(11, ok=False, error_class="Cancelled")]
    m = summarize(records, measured_duration_s=2.0)
    assert m["ttft_ms_max"] == 49.0 and m["ttft_ms_min"] == 40.0
    assert m["ttft_ms_p50"] == pytest.approx(44.5)
    assert m["requests_ok"] == 10 and m["requests_failed"] == 1 and m["requests_cancelled"] == 1
    assert m["error_rate"] == pytest.approx(1 / 11)
    assert m["itl_ms_p50"] == pytest.approx(5.0) and m["itl_ms_max"] == pytest.approx(5.0)
    # TPOT = (E2E - TTFT) / (tokens - 1) = (20 + 0.5) / 4
    assert m["tpot_ms_p50"] == pytest.approx(5.125)
    assert m["output_tokens_per_s"] == pytest.approx(1000 / 5.125)
    assert m["server_eval_tokens_per_s"] == pytest.approx(5 / 0.020)
    assert m["throughput_tokens_per_s"] == pytest.approx(50 / 2.0)
    assert m["client_overhead_ms_p50"] == pytest.approx(1.0)
    # total (ttft + 20 + 0.5 - 1) - load 0.1 - prefill 30 - eval 20 = ttft - 30.6; p50 44.5 - 30.6
    assert m["server_queue_ms_p50"] == pytest.approx(13.9)
    assert error_breakdown(records) == {"HTTP500": 1}


def test_cold_start_is_judged_on_server_load_duration():
    assert is_cold(record(0, load=300.0), 50.0) is True
    assert is_cold(record(0, load=2.0), 50.0) is False
    assert is_cold(RequestRecord(index=0, phase=Phase.MEASURED, prompt_index=0, api="openai"), 50.0) is None
    records = [record(0, load=300.0), record(1)]
    for r in records:
        r.cold = is_cold(r, 50.0)
    assert summarize(records)["cold_starts"] == 1


def test_an_open_loop_that_could_not_keep_its_rate_says_so():
    assert open_loop_warnings({"queue_ms_p95": 900.0}, rate=None, concurrency=2) == []  # closed loop
    assert open_loop_warnings({"queue_ms_p95": 15.0}, rate=2.0, concurrency=16) == []  # under 500 ms gap
    assert open_loop_warnings({"queue_ms_p95": 9.0}, rate=1000.0, concurrency=16) == []  # under 10 ms
    [warning] = open_loop_warnings({"queue_ms_p95": 2039.0}, rate=50.0, concurrency=2)
    assert warning.startswith(
        "arrivals at workload.rate=50/s outran 2 concurrent client(s): 5% of requests waited 2,039 ms or more"
    )
