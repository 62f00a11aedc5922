"""The verdict of a run (diagnosis.py): TTFT and E2E split into parts on constructed records, the
warm/cold split of the statistics, and the likely cause of each cold start."""

from datetime import datetime

import pytest
from support.records import server_record

from sentinel_exp.analysis.diagnosis import (
    FIXES,
    ColdCause,
    PartName,
    classify_cold_starts,
    cold_start_warnings,
    diagnose,
    keep_alive_in_force,
    parse_unloads,
)
from sentinel_exp.analysis.stats import summarize
from sentinel_exp.names import Phase
from sentinel_exp.records import RequestRecord


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


# --- edges that mutation testing found unpinned (scripts/mutation_survivors.md) -------------------


def test_the_server_breakdown_lines_word_for_word():
    [record] = [server_record(0, load=10, queue=5, prefill=20, decode=60, other=5, prompt_tokens=0, tokens=31)]
    ttft, e2e, *fixes = diagnose([record]).lines()
    assert ttft == (
        "TTFT is mostly prefill: p50 40 ms, mean 40 ms = 50% prefill (0 prompt tokens at 0 tok/s), "
        "25% model load (no request was cold), 12% queueing (waiting for a free generation slot), "
        "12% other (first token out, HTTP and the client) (mean shares over 1 request)"
    )
    assert e2e == (
        "E2E is mostly decode: p50 100 ms, mean 100 ms = 60% decode (31 output tokens at 517 tok/s), "
        "20% prefill (0 prompt tokens at 0 tok/s), 10% model load (no request was cold), "
        "5% queueing (waiting for a free generation slot), 5% other (HTTP and the client) (mean shares over 1 request)"
    )
    assert [line.split(":")[0] for line in fixes] == [
        "to cut prefill (TTFT's largest part)",
        "to cut decode (E2E's largest part)",
    ]


def test_parts_the_server_reports_as_zero_stay_zero():
    zero = server_record(0, load=0.0, queue=0.0, prefill=0.0, decode=0.0, other=0.0, prompt_tokens=0)
    for breakdown in diagnose([zero]).breakdowns:
        assert breakdown.mean_ms == 0.0 and [(p.mean_ms, p.share) for p in breakdown.parts] == [(0.0, 0.0)] * len(
            breakdown.parts
        )


def client_record(ttfb, ttft, e2e, tokens=21):
    return RequestRecord(
        index=0,
        phase=Phase.MEASURED,
        prompt_index=0,
        api="openai",
        ok=True,
        ttfb_ms=ttfb,
        ttft_ms=ttft,
        e2e_ms=e2e,
        chunk_times_ms=[ttft] * tokens,
        eval_count=tokens,
    )


UNKNOWN = (
    "model load, queueing and prefill are unknown: the server reports no durations (OpenAI API), so TTFB holds them all"
)


def test_the_client_breakdown_lines_word_for_word():
    d = diagnose([client_record(30.0, 40.0, 140.0)])
    assert d.unknown == UNKNOWN and d.breakdowns[1].label == "E2E"
    assert d.lines() == [
        "TTFT is mostly time to first byte: p50 40 ms, mean 40 ms = 75% time to first byte (load, queueing and "
        "prefill: not told apart), 25% first byte to first token (mean shares over 1 request)",
        "E2E is mostly decode: p50 140 ms, mean 140 ms = 71% decode (21 output tokens at 210 tok/s), 29% time to "
        "first token (mean shares over 1 request)",
        UNKNOWN,
        f"to cut decode (E2E's largest part): {FIXES[PartName.DECODE]}",  # time to first byte has no one fix
    ]
    assert d.text() == "\n".join(d.lines()) and d.text().count("\n") == 3


def test_shares_of_tiny_zero_and_noisy_latencies():
    # Sub-millisecond: a mean of 0.5 ms still has shares, and a decode of 0.5 ms a rate.
    tiny = diagnose([client_record(0.25, 0.5, 1.0)])
    assert [p.share for p in tiny.breakdowns[0].parts] == [0.5, 0.5]
    assert "21 output tokens at 42,000 tok/s" in tiny.lines()[1]
    # Nothing at all: shares 0, no rate (no division by zero).
    nothing = diagnose([client_record(0.0, 0.0, 0.0)])
    assert [b.mean_ms for b in nothing.breakdowns] == [0.0, 0.0]
    assert [p.mean_ms for b in nothing.breakdowns for p in b.parts] == [0.0] * 4
    assert [p.share for b in nothing.breakdowns for p in b.parts] == [0.0] * 4
    assert nothing.breakdowns[1].parts[1].detail == "21 output tokens"
    # The first byte stamped after the first token (clock noise): its share is capped at the whole.
    noisy = diagnose([client_record(12.0, 10.0, 20.0)])
    assert [p.share for p in noisy.breakdowns[0].parts] == [1.0, 0.0]


@pytest.mark.parametrize("missing", ["load_duration_ms", "eval_duration_ms", "total_duration_ms", "ttft_ms"])
def test_a_request_lacking_any_server_duration_is_split_as_the_client_sees_it(missing):
    record = server_record(0)
    setattr(record, missing, None)
    d = diagnose([record])
    if missing == "ttft_ms":  # no TTFT: nothing to split at all
        assert d.lines() == []
    else:
        assert d.unknown == UNKNOWN and [p.name for p in d.breakdowns[0].parts] == ["ttfb", "after_ttfb"]


def test_a_request_without_a_first_byte_is_not_split():
    record = client_record(None, 40.0, 140.0)
    assert diagnose([record]).lines() == [] and diagnose([record]).text() == ""


@pytest.mark.parametrize(("others", "p50"), [((10, 20, 30, 100), 25), ((10, 20, 30, 100, 200), 30)])
def test_the_p50_shown_without_the_summary_is_the_median(others, p50):
    records = [server_record(i, load=0.0, prefill=0.0, decode=10.0, other=o) for i, o in enumerate(others)]
    assert diagnose(records).breakdowns[0].p50_ms == p50
    assert diagnose(records, {"ttft_ms_p50": 123.0}).breakdowns[0].p50_ms == 123.0


def test_the_lead_and_the_parts_shown_at_their_thresholds():
    from sentinel_exp.analysis.diagnosis import Breakdown, Diagnosis, Part, PartName

    parts = (
        Part(PartName.LOAD, 5.0, 0.5, "no request was cold"),
        Part(PartName.QUEUE, 0.05, 0.005),
        Part(PartName.PREFILL, 0.04, 0.004),
        Part(PartName.OTHER, 4.91, 0.491),
    )
    line = Breakdown("ttft", "TTFT", 10.0, 10.0, 3, parts).line()
    assert line.startswith("TTFT is mostly model load: ")  # exactly half is "mostly"
    assert "49% other, 0% queueing (mean" in line and "prefill" not in line  # 0.5% is shown, 0.4% is not
    assert Part(PartName.OTHER, 1.0, 0.25).text() == "25% other"
    assert Diagnosis((), "unknown parts").lines() == []


T0 = 1000.0  # exact in binary: the boundaries below are equalities


def span(index, start, e2e_ms=500.0, *, cold=False, queue=None, load=None, measured=True):
    return RequestRecord(
        index=index,
        phase=Phase.MEASURED if measured else Phase.WARMUP,
        prompt_index=0,
        api="chat",
        ok=e2e_ms is not None,
        started_at=start,
        queue_ms=queue,
        e2e_ms=e2e_ms,
        load_duration_ms=load,
        cold=cold,
    )


def causes(records, keep_alive_s, unloads=()):
    from sentinel_exp.analysis.diagnosis import Unload

    found = classify_cold_starts(records, keep_alive_s, [Unload(at, "m:1b", why) for at, why in unloads])
    return [(c.number, c.cause, c.detail) for c in found]


PRIOR = span(0, T0, measured=False)  # warmup, T0 to T0 + 0.5 s


@pytest.mark.parametrize(
    ("cold", "keep_alive_s", "expected"),
    [
        # An idle gap of exactly keep_alive has not outlived it.
        (span(1, T0 + 2.5, cold=True), 2.0, (ColdCause.UNKNOWN, "idle 2.0 s")),
        # The server sees a request after its client-side wait (queue_ms): idle 0.1 s here.
        (span(1, T0 + 0.4, cold=True, queue=200.0), 0.0999, (ColdCause.IDLE, "idle 0.1 s > keep_alive 0.0999 s")),
        # A cold request that failed has no end, and still a start.
        (span(1, T0 + 0.4, None, cold=True, queue=200.0), 0.0999, (ColdCause.IDLE, "idle 0.1 s > keep_alive 0.0999 s")),
        (span(1, T0 + 2.5, None, cold=True), 2.0, (ColdCause.UNKNOWN, "idle 2.0 s")),
        # Starting the moment the last request ended: it had been loaded, and lost.
        (span(1, T0 + 0.5, cold=True), 0.0, (ColdCause.UNKNOWN, "idle 0.0 s")),
    ],
)
def test_the_idle_gap_is_measured_from_when_the_server_saw_the_request(cold, keep_alive_s, expected):
    assert causes([PRIOR, cold], keep_alive_s) == [(2, *expected)]  # request 2 of the run


def test_only_cold_requests_after_a_finished_one_are_classified():
    records = [
        span(0, T0, cold=True),  # waited for the first load: no loss, and the next still counts
        span(1, T0 + 3.0, cold=True),
        span(2, T0 + 6.0),  # warm
    ]
    assert causes(records, 2.0) == [(2, ColdCause.IDLE, "idle 2.5 s > keep_alive 2 s")]


def test_a_request_in_flight_means_the_server_was_not_idle():
    long, short = span(0, T0, 10_000.0), span(1, T0, 1000.0)
    assert causes([long, short, span(2, T0 + 5.0, cold=True)], 0.5) == [(3, ColdCause.UNKNOWN, "idle 0.0 s")]
    # One starting at the same instant was not yet in flight.
    alongside = span(3, T0 + 5.0, 1000.0)
    assert causes([short, alongside, span(2, T0 + 5.0, cold=True)], 0.5) == [
        (2, ColdCause.IDLE, "idle 4.0 s > keep_alive 0.5 s")
    ]


IDLE_4S = (ColdCause.IDLE, "idle 4.0 s > keep_alive 0.5 s")
REPLACED = (ColdCause.REPLACED, "replaced by x:1b")


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # The window: from the last request's start (less 1 ms) to this request's load done (plus 1 ms).
        (T0 + 5.5008, REPLACED),
        ((T0 + 5.0 + 500.0 / 1000.0) + 0.001, REPLACED),
        (T0 + 5.5 + 0.5, IDLE_4S),
        (T0 - 0.0005, REPLACED),
        (T0 - 0.001, REPLACED),
        (T0 - 0.5, IDLE_4S),
    ],
)
def test_an_unload_counts_between_the_last_request_and_this_ones_load(at, expected):
    prior, cold = span(0, T0, 1000.0), span(1, T0 + 5.0, cold=True, load=500.0)
    assert causes([prior, cold], 0.5, [(at, "replaced by x:1b")]) == [(2, *expected)]


def test_without_a_load_duration_the_window_ends_as_the_request_starts():
    prior, cold = span(0, T0, 1000.0), span(1, T0 + 5.0, cold=True)
    assert causes([prior, cold], 0.5, [(T0 + 5.0015, "replaced by x:1b")]) == [(2, *IDLE_4S)]


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (["keep_alive 5 s expired", "replaced by x:1b"], REPLACED),  # the latest unload in the window
        (["runner options changed: num_ctx: 2048 -> 1024"], (ColdCause.OPTIONS, "num_ctx: 2048 -> 1024")),
        (["runner options changed"], (ColdCause.OPTIONS, "runner options changed")),
        (["evicted: out of memory"], (ColdCause.UNKNOWN, "evicted: out of memory")),
    ],
)
def test_the_servers_own_reason_for_the_unload(reasons, expected):
    prior, cold = span(0, T0, 1000.0), span(1, T0 + 5.0, cold=True, load=500.0)
    unloads = [(T0 + 2.0 + i, reason) for i, reason in enumerate(reasons)]
    assert causes([prior, cold], 0.5, unloads) == [(2, *expected)]
