"""The verdict of a run (diagnosis.py): TTFT and E2E split into parts on constructed records, the
warm/cold split of the statistics, and the likely cause of each cold start."""

from datetime import datetime

import pytest

from sentinel_exp.analysis.diagnosis import (
    ColdCause,
    classify_cold_starts,
    cold_start_warnings,
    diagnose,
    keep_alive_in_force,
    parse_unloads,
)
from sentinel_exp.analysis.stats import summarize
from sentinel_exp.names import Phase
from sentinel_exp.records import RequestRecord


def server_record(
    index: int,
    *,
    load: float = 1.0,
    queue: float = 0.0,
    prefill: float = 40.0,
    decode: float = 100.0,
    other: float = 2.0,
    prompt_tokens: int = 20,
    tokens: int = 21,
    cold: bool = False,
) -> RequestRecord:
    """A successful Ollama-API request whose parts are exactly these: TTFT = load + queue +
    prefill + other, E2E = TTFT + decode, total_duration = load + queue + prefill + decode."""
    ttft = load + queue + prefill + other
    return RequestRecord(
        index=index,
        phase=Phase.MEASURED,
        prompt_index=0,
        api="chat",
        ok=True,
        ttfb_ms=ttft,
        ttft_ms=ttft,
        e2e_ms=ttft + decode,
        chunk_times_ms=[ttft + decode * k / (tokens - 1) for k in range(tokens)],
        prompt_eval_count=prompt_tokens,
        eval_count=tokens,
        load_duration_ms=load,
        prompt_eval_duration_ms=prefill,
        eval_duration_ms=decode,
        total_duration_ms=load + queue + prefill + decode,
        cold=cold,
    )


def test_a_load_dominated_run_says_so_with_the_cold_count_and_the_prefill_rate():
    records = [server_record(i, load=900.0, cold=True) for i in range(3)]
    records += [server_record(i) for i in range(3, 12)]
    d = diagnose(records)
    ttft, e2e = d.breakdowns
    mean_load = (3 * 900.0 + 9 * 1.0) / 12
    mean_ttft = mean_load + 40.0 + 2.0
    assert ttft.mean_ms == pytest.approx(mean_ttft)
    assert d.metrics()["ttft_share_load"] == pytest.approx(mean_load / mean_ttft)
    assert d.metrics()["ttft_share_prefill"] == pytest.approx(40.0 / mean_ttft)
    assert d.metrics()["ttft_share_queue"] == 0.0
    assert sum(v for k, v in d.metrics().items() if k.startswith("ttft_share_")) == pytest.approx(1.0)
    assert sum(v for k, v in d.metrics().items() if k.startswith("e2e_share_")) == pytest.approx(1.0)
    # p50 is over the requests (the median one is warm); the shares are of the means.
    assert ttft.line() == (
        "TTFT is mostly model load: p50 43 ms, mean 268 ms = 84% model load (3 of 12 requests were cold), "
        "15% prefill (20 prompt tokens at 500 tok/s), 1% other (first token out, HTTP and the client) "
        "(mean shares over 12 requests)"
    )
    assert e2e.dominant.name == "load"


@pytest.mark.parametrize(
    ("parts", "fixes"),
    [
        ({"load": 900.0}, ["to cut model load (TTFT and E2E's largest part): keep the model loaded"]),
        (
            {"queue": 500.0, "decode": 20.0},
            ["to cut queueing (TTFT and E2E's largest part): more generation slots on the server"],
        ),
        (
            {"prefill": 400.0, "decode": 900.0},
            [
                "to cut prefill (TTFT's largest part): shorter prompts, or prompt caching",
                "to cut decode (E2E's largest part): num_thread at the physical cores",
            ],
        ),
    ],
)
def test_the_verdict_says_what_would_shorten_the_largest_part(parts, fixes):
    d = diagnose([server_record(i, **parts) for i in range(5)])
    assert len(d.fixes()) == len(fixes) and d.lines()[-len(fixes) :] == d.fixes()
    for line, start in zip(d.fixes(), fixes, strict=True):
        assert line.startswith(start), line


@pytest.mark.parametrize(
    ("parts", "latency", "dominant", "phrase"),
    [
        ({"load": 500.0}, "ttft", "load", "TTFT is mostly model load"),
        ({"prefill": 800.0}, "ttft", "prefill", "TTFT is mostly prefill: p50 803 ms"),
        ({"decode": 3000.0}, "e2e", "decode", "E2E is mostly decode"),
        ({"queue": 600.0}, "ttft", "queue", "TTFT is mostly queueing"),
        ({"queue": 40.0, "prefill": 38.0}, "ttft", "queue", "TTFT's largest part is queueing"),
    ],
)
def test_the_verdict_names_the_part_that_dominates(parts, latency, dominant, phrase):
    values = {"load": 1.0, "queue": 0.0, "prefill": 20.0, "decode": 50.0, "other": 2.0} | parts
    d = diagnose([server_record(i, **values) for i in range(5)])
    breakdown = next(b for b in d.breakdowns if b.latency == latency)
    assert breakdown.dominant.name == dominant
    assert breakdown.dominant.mean_ms == pytest.approx(parts[dominant])
    assert phrase in "\n".join(d.lines())


def test_decode_and_queue_details_carry_their_numbers():
    d = diagnose([server_record(i, queue=300.0, decode=400.0, tokens=41) for i in range(4)])
    e2e = d.breakdowns[1].line()
    assert "decode (41 output tokens at 102 tok/s)" in e2e
    assert "queueing (waiting for a free generation slot)" in e2e
    assert d.metrics()["e2e_share_decode"] == pytest.approx(400.0 / (1 + 300 + 40 + 400 + 2))


def test_openai_records_decompose_what_the_client_sees_and_name_the_unknown_parts():
    records = [
        RequestRecord(
            index=i,
            phase=Phase.MEASURED,
            prompt_index=0,
            api="openai",
            ok=True,
            ttfb_ms=90.0,
            ttft_ms=100.0,
            e2e_ms=300.0,
            chunk_times_ms=[100.0 + 10.0 * k for k in range(21)],
            eval_count=21,
        )
        for i in range(4)
    ]
    d = diagnose(records)
    assert d.metrics() == pytest.approx(
        {"ttft_share_ttfb": 0.9, "ttft_share_after_ttfb": 0.1, "e2e_share_ttft": 1 / 3, "e2e_share_decode": 2 / 3}
    )
    lines = d.lines()
    assert lines[0].startswith("TTFT is mostly time to first byte: p50 100 ms")
    assert "67% decode (21 output tokens at 105 tok/s)" in lines[1]
    assert "model load, queueing and prefill are unknown" in lines[2]
    assert "ttft_share_load" not in d.metrics()


def test_no_successful_request_gives_no_verdict():
    failed = RequestRecord(index=0, phase=Phase.MEASURED, prompt_index=0, api="chat", error_class="HTTP500")
    assert diagnose([failed]).lines() == [] and diagnose([failed]).text() == ""


def test_warm_statistics_leave_the_cold_requests_out():
    records = [server_record(0, load=700.0, cold=True), server_record(1, load=650.0, cold=True)]
    records += [server_record(i, load=1.0 + i) for i in range(2, 10)]
    m = summarize(records)
    assert m["cold_starts"] == 2
    assert m["ttft_ms_max"] == pytest.approx(742.0)
    assert m["ttft_ms_max_warm"] == pytest.approx(10.0 + 42.0)
    assert m["ttft_ms_min_warm"] == pytest.approx(3.0 + 42.0)
    assert m["server_load_ms_p50_cold"] == pytest.approx(675.0)
    assert m["e2e_ms_mean_cold"] == pytest.approx(675.0 + 142.0)
    assert {f"ttft_ms_{s}_warm" for s in ("p50", "p90", "p95", "p99", "mean", "min", "max")} <= set(m)
    assert m["output_tokens_p50"] == 21 and m["server_decode_ms_p50"] == 100.0
    assert m["prefill_tokens_per_s"] == pytest.approx(20 / 0.040)


def test_a_server_that_cannot_tell_cold_from_warm_gets_no_cold_starts_and_no_split():
    records = [server_record(i) for i in range(3)]
    for r in records:
        r.cold = None
    m = summarize(records)
    assert "cold_starts" not in m
    assert not [k for k in m if k.endswith(("_warm", "_cold"))]


def log_line(at: float, message: str) -> str:
    """A line as the bundled server logs it: asctime (local time, milliseconds) and the message."""
    when = datetime.fromtimestamp(at)
    return f"{when:%Y-%m-%d %H:%M:%S},{when.microsecond // 1000:03d} {message}"


T = 1_700_000_000.0


def timed(index: int, phase: str, started_at: float, *, cold: bool, load: float = 1.0) -> RequestRecord:
    r = server_record(index, load=load, cold=cold)
    r.phase, r.started_at, r.queue_ms = phase, started_at, 0.0
    return r


@pytest.mark.parametrize(
    ("gap_s", "keep_alive_s", "log", "cause", "detail"),
    [
        (10.0, 5.0, None, ColdCause.IDLE, "idle 10.0 s > keep_alive 5 s"),
        (10.0, 5.0, "unloaded m:1b (keep_alive 5 s expired)", ColdCause.IDLE, "keep_alive 5 s expired"),
        (0.5, 300.0, "unloaded m:1b (runner options changed: num_ctx 2048 -> 4096)", ColdCause.OPTIONS, "num_ctx"),
        (0.5, 300.0, "unloaded m:1b (replaced by other:7b)", ColdCause.REPLACED, "replaced by other:7b"),
        # The server's own word wins over the gap: the model was replaced before keep_alive ran out.
        (10.0, 5.0, "unloaded m:1b (replaced by other:7b)", ColdCause.REPLACED, "other:7b"),
        (0.5, 300.0, None, ColdCause.UNKNOWN, "idle 0.5 s"),
        # Another model's unload says nothing about this one.
        (0.5, 300.0, "unloaded other:7b (replaced by m:1b)", ColdCause.UNKNOWN, "idle 0.5 s"),
    ],
)
def test_a_cold_start_after_a_warm_request_gets_its_likely_cause(gap_s, keep_alive_s, log, cause, detail):
    warm = timed(0, Phase.WARMUP, T, cold=False)
    warm_end = T + warm.e2e_ms / 1000.0
    cold = timed(0, Phase.MEASURED, warm_end + gap_s, cold=True, load=300.0)
    lines = ["2024-01-01 00:00:00,000 loaded m:1b in 300.0 ms (runner options default)"]
    if log:
        lines.append(log_line(warm_end + gap_s / 2, log))
    [found] = classify_cold_starts([warm, cold], keep_alive_s, parse_unloads(lines), "m:1b")
    # Request 2 of the run: the warmup request was the first (the numbering of server.sim.faults).
    assert found.cause == cause and detail in found.detail and found.number == 2


def test_requests_that_waited_for_the_first_load_are_no_loss():
    together = [timed(i, Phase.MEASURED, T + 0.001 * i, cold=True, load=300.0) for i in range(4)]
    assert classify_cold_starts(together, 0.0) == []


def test_one_warning_per_cause_with_the_count_and_the_first_request():
    records = [timed(0, Phase.WARMUP, T, cold=False)]
    for i in range(4):  # keep_alive 0: each request finds the model gone
        records.append(timed(i, Phase.MEASURED, T + 1.0 + i, cold=True, load=300.0))
    records.append(timed(4, Phase.MEASURED, T + 5.5, cold=True, load=300.0))
    unloads = parse_unloads([log_line(T + 5.45, "unloaded m:1b (replaced by x:1b)")])
    warnings = cold_start_warnings(classify_cold_starts(records, 0.0, unloads, "m:1b"))
    assert len(warnings) == 2
    assert warnings[0].startswith("4 measured requests were cold after the model had been loaded (first: request 2)")
    assert "keep_alive 0 s" in warnings[0] and "workload.keep_alive" in warnings[0]
    assert warnings[1].startswith("1 measured request was cold")
    assert "replaced by x:1b" in warnings[1]


def test_keep_alive_in_force_is_the_requests_else_the_servers():
    assert keep_alive_in_force(None, None) == 300.0
    assert keep_alive_in_force(0, "1h") == 0.0
    assert keep_alive_in_force("30s", None) == 30.0
    assert keep_alive_in_force(None, "10m") == 600.0
    assert keep_alive_in_force(-1, None) == float("inf")
