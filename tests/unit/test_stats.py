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


# --- edges that mutation testing found unpinned (scripts/mutation_survivors.md) -------------------


def server_record(index, **fields):
    """A successful measured request whose every server-side duration can be set or left out."""
    base = {"ttfb_ms": 9.0, "ttft_ms": 10.0, "e2e_ms": 30.0, "chunk_times_ms": [10.0, 20.0, 29.5], "eval_count": 3}
    return RequestRecord(index=index, phase=Phase.MEASURED, prompt_index=0, api="chat", ok=True, **{**base, **fields})


def test_latency_samples_name_every_sample_and_leave_out_what_a_request_lacks():
    from sentinel_exp.analysis.stats import latency_samples

    full = server_record(
        0,
        queue_ms=0.25,
        load_duration_ms=2.0,
        prompt_eval_duration_ms=3.0,
        eval_duration_ms=15.0,
        total_duration_ms=20.5,
    )
    bare = server_record(1, ttfb_ms=None, queue_ms=None)  # no server durations at all (OpenAI API)
    only_load = server_record(2, load_duration_ms=4.0)  # one duration alone: no breakdown from it
    no_prefill = server_record(3, load_duration_ms=4.0, eval_duration_ms=15.0, total_duration_ms=25.0)
    samples = latency_samples([full, bare, only_load, no_prefill])
    assert samples == {
        "ttfb": [9.0, 9.0, 9.0],
        "ttft": [10.0, 10.0, 10.0, 10.0],
        "itl": [10.0, 9.5] * 4,
        "tpot": [10.0] * 4,
        "e2e": [30.0] * 4,
        "queue": [0.25],
        "server_load": [2.0, 4.0, 4.0],
        "server_prefill": [3.0],
        "server_decode": [15.0, 15.0],
        "ttft_other": [10.0 - 2.0 - 3.0],
        "server_queue": [20.5 - 2.0 - 3.0 - 15.0],
        "client_overhead": [30.0 - 20.5, 30.0 - 25.0],
    }


@pytest.mark.parametrize(
    ("total", "queue"),
    [
        (20.5, 0.5),  # a real wait is kept, however small
        (19.5, 0.0),  # -0.5 ms: the durations' clocks disagree a little, no wait
        (19.0, -1.0),  # -1 ms and below is kept: it points at the server's own accounting
        (18.5, -1.5),
    ],
)
def test_a_slightly_negative_server_queue_is_clock_noise(total, queue):
    from sentinel_exp.analysis.stats import latency_samples

    r = server_record(
        0, load_duration_ms=2.0, prompt_eval_duration_ms=3.0, eval_duration_ms=15.0, total_duration_ms=total
    )
    assert latency_samples([r])["server_queue"] == [queue]


def test_time_per_output_token_needs_both_times_and_two_tokens():
    from sentinel_exp.analysis.stats import output_tokens, time_per_output_token

    assert time_per_output_token(server_record(0, eval_count=2)) == 20.0  # (30 - 10) / (2 - 1)
    assert time_per_output_token(server_record(0, eval_count=1)) is None
    assert time_per_output_token(server_record(0, ttft_ms=None)) is None
    assert time_per_output_token(server_record(0, e2e_ms=None)) is None
    # The server's count decides; the chunks count only when it gave none.
    assert output_tokens(server_record(0, eval_count=7)) == 7
    assert output_tokens(server_record(0, eval_count=None)) == 3


def test_cold_means_a_load_longer_than_the_threshold():
    assert is_cold(record(0, load=50.0), 50.0) is False
    assert is_cold(record(0, load=50.001), 50.0) is True


def test_summary_rates_count_every_positive_duration_and_skip_what_is_missing():
    fast = server_record(0, e2e_ms=10.5, chunk_times_ms=[10.0, 10.5], eval_count=2)  # TPOT 0.5 ms: 2000 tok/s
    one_token = server_record(1, eval_count=1)  # no TPOT: not in the decode rate
    quick_server = server_record(
        2, eval_count=2, eval_duration_ms=0.5, prompt_eval_count=8, prompt_eval_duration_ms=0.5
    )
    no_durations = server_record(3, eval_count=4, prompt_eval_count=8)  # counts without durations
    m = summarize([fast, one_token, quick_server, no_durations], measured_duration_s=0.5)
    # TPOTs 0.5, 20 and 20/3 ms: the fast one moves the median from 100 to 150 tok/s.
    assert m["output_tokens_per_s"] == pytest.approx(float(np.median([2000.0, 50.0, 150.0])))
    assert m["server_eval_tokens_per_s"] == pytest.approx(2 / 0.0005)
    assert m["prefill_tokens_per_s"] == pytest.approx(8 / 0.0005)
    assert m["output_tokens_total"] == 2 + 1 + 2 + 4
    assert m["throughput_tokens_per_s"] == pytest.approx(9 / 0.5)
    assert m["requests_per_s"] == pytest.approx(4 / 0.5)
    assert m["measured_duration_s"] == 0.5


def test_a_summary_without_a_duration_or_a_finished_request():
    cancelled = RequestRecord(
        index=0, phase=Phase.MEASURED, prompt_index=0, api="chat", ok=False, error_class="Cancelled"
    )
    m = summarize([cancelled], measured_duration_s=None)
    assert m["error_rate"] == 0.0 and m["requests_cancelled"] == 1 and m["output_tokens_total"] == 0
    assert "throughput_tokens_per_s" not in m and "requests_per_s" not in m and "measured_duration_s" not in m
    assert "requests_per_s" not in summarize([cancelled], measured_duration_s=0.0)


def test_error_breakdown_counts_each_class_and_names_the_unknown():
    failed = [record(i, ok=False, error_class=c) for i, c in enumerate(["HTTP500", "HTTP500", None, "Cancelled"])]
    assert error_breakdown(failed) == {"HTTP500": 2, "Unknown": 1}


def test_the_open_loop_warning_starts_just_above_the_mean_gap_or_10_ms():
    # 10 requests/s: a 100 ms mean gap. Waiting exactly that long is not yet a warning.
    assert open_loop_warnings({"queue_ms_p95": 100.0}, rate=10.0, concurrency=1) == []
    assert len(open_loop_warnings({"queue_ms_p95": 100.05}, rate=10.0, concurrency=1)) == 1
    # 1000 requests/s: a 1 ms gap, so 10 ms is the floor.
    assert open_loop_warnings({"queue_ms_p95": 10.0}, rate=1000.0, concurrency=1) == []
    assert len(open_loop_warnings({"queue_ms_p95": 10.5}, rate=1000.0, concurrency=1)) == 1


def test_an_answer_delivered_in_one_burst_has_no_decode_rate():
    # Every token in one chunk: TPOT 0 ms, no rate (not a division by zero).
    burst = server_record(0, e2e_ms=10.0, chunk_times_ms=[10.0, 10.0, 10.0], eval_count=3)
    m = summarize([burst])
    assert m["tpot_ms_p50"] == 0.0 and "output_tokens_per_s" not in m
