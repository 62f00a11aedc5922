"""The doctor's pure parts: hypotheses drawn from a baseline's evidence (table-driven), verdicts
from comparisons, the prefill rate fitted round by round, and the report's words."""

from __future__ import annotations

import dataclasses
import math

import pytest
from support.records import server_record

from sentinel_exp.analysis.comparison import Arm, RunResult, Verdict, compare
from sentinel_exp.analysis.stats import summarize
from sentinel_exp.cli.doctor import doctors_own, merge_overrides
from sentinel_exp.config.schema import DiagnoseConfig
from sentinel_exp.doctor.evidence import Facts, gather
from sentinel_exp.doctor.hypotheses import (
    Candidate,
    Cause,
    Lever,
    Status,
    arm_requests,
    family_size,
    fitting_num_ctx,
    plan,
    seconds_text,
    to_test,
)
from sentinel_exp.doctor.steps import rounds_budget
from sentinel_exp.doctor.text import Report, answer, console_lines, hypothesis_line, markdown, recommended_line
from sentinel_exp.doctor.verdicts import Measured, judge, planned, prefill_rate, settles
from sentinel_exp.records import RequestRecord
from sentinel_exp.report import console as ui
from sentinel_exp.sweep.sequential import LookPlan, decided

SETTINGS = DiagnoseConfig()


def rec(
    index: int,
    *,
    load: float = 0.2,
    queue: float = 0.0,
    prefill: float = 20.0,
    decode: float = 40.0,
    prompt_tokens: int = 20,
    tokens: int = 21,
    cold: bool = False,
    block: int | None = None,
) -> RequestRecord:
    """A successful Ollama-API request made of exactly these parts (2 ms of other in TTFT)."""
    return server_record(
        index, load=load, queue=queue, prefill=prefill, decode=decode,
        prompt_tokens=prompt_tokens, tokens=tokens, cold=cold, block=block,
    )  # fmt: skip


def facts(**changes: object) -> Facts:
    base = Facts(
        server_kind="simulated",
        local=True,
        options={"seed": 42},
        keep_alive_s=300.0,
        idle_gap_s=0.0,
        concurrency=1,
        rate=None,
        requests=20,
        slots=0,
        physical_cores=2,
        logical_cpus=2,
        gpu_count=0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def evidence(records: list[RequestRecord], extra_metrics: dict[str, float] | None = None, **fact_changes: object):
    metrics = summarize(records, measured_duration_s=2.0) | (extra_metrics or {})
    return gather(records, metrics, facts(**fact_changes))


HEALTHY = [rec(i) for i in range(20)]
COLD_HALF = [rec(i, load=300.0 if i % 2 else 0.2, cold=bool(i % 2)) for i in range(20)]
LONG_PROMPTS = [rec(i, prefill=300.0, prompt_tokens=300) for i in range(20)]
QUEUED = [rec(i, queue=150.0) for i in range(20)]
SLOW_DECODE = [rec(i, decode=2000.0) for i in range(20)]
UNTESTABLE_ON_SIM = {Cause.CONTEXT, Cause.THREADS, Cause.GPU}


def statuses(hypotheses) -> dict[Cause, Status]:
    return {h.cause: h.status for h in hypotheses}


@pytest.mark.parametrize(
    ("records", "changes", "tested"),
    [
        (HEALTHY, {}, set()),
        (COLD_HALF, {"keep_alive_s": 0.3, "idle_gap_s": 0.6, "lint": {"keep_alive": "..."}}, {Cause.LOAD}),
        (LONG_PROMPTS, {}, {Cause.PREFILL}),
        (QUEUED, {"concurrency": 4, "slots": 1}, {Cause.QUEUE}),
        (SLOW_DECODE, {}, {Cause.DECODE}),
    ],
    ids=["healthy", "cold", "long-prompts", "queue", "slow-decode"],
)
def test_each_scripted_cause_on_the_simulated_server_is_the_one_tested(records, changes, tested):
    hypotheses = plan(evidence(records, **changes), SETTINGS)
    found = statuses(hypotheses)
    assert {c for c, s in found.items() if s == Status.TEST} == tested
    # The simulated server models no runner options: those are never tested there, and say why.
    assert all(found[c] == Status.NOT_TESTABLE for c in UNTESTABLE_ON_SIM)
    assert all(h.evidence for h in hypotheses)
    assert all("models no runner options" in h.evidence for h in hypotheses if h.cause in UNTESTABLE_ON_SIM)
    assert {c for c, s in found.items() if s == Status.SKIPPED} == set(Cause) - tested - UNTESTABLE_ON_SIM


def by_cause(hypotheses, cause):
    return next(h for h in hypotheses if h.cause == cause)


def test_cold_starts_test_keep_alive_and_a_cold_run_at_the_percentile_the_cold_requests_reach():
    half = by_cause(plan(evidence(COLD_HALF, keep_alive_s=0.3, idle_gap_s=0.6), SETTINGS), Cause.LOAD)
    assert half.evidence == "10 of 20 requests were cold: idle gaps of 0.6 s exceed keep_alive 0.3 s"
    assert half.study is not None and half.study.objective == "ttft_ms_p50"
    assert [(c.overrides, c.lever) for c in half.study.candidates] == [
        (("workload.keep_alive=-1",), Lever.FIX),
        (("workload.keep_alive=0",), Lever.PROBE),
    ]
    few = [rec(i, load=300.0 if i % 5 == 0 else 0.2, cold=i % 5 == 0) for i in range(20)]
    on_ollama = by_cause(plan(evidence(few, server_kind="ollama", idle_gap_s=400.0), SETTINGS), Cause.LOAD)
    assert on_ollama.study is not None and on_ollama.study.objective == "ttft_ms_p95"
    # Ollama is one server for every arm: a cold run there would unload the model for the others.
    assert [c.lever for c in on_ollama.study.candidates] == [Lever.FIX]
    assert on_ollama.evidence == "4 of 20 requests were cold: idle gaps of 7 min exceed keep_alive 5 min"
    forever = by_cause(plan(evidence(few, keep_alive_s=math.inf), SETTINGS), Cause.LOAD)
    assert forever.status == Status.NOT_TESTABLE and "another client" in forever.evidence


def test_long_prompts_get_a_ladder_of_shorter_synthetic_prompts():
    h = by_cause(plan(evidence(LONG_PROMPTS), SETTINGS), Cause.PREFILL)
    assert h.study is not None and h.study.axis == "prompt tokens" and h.study.given_value == 300
    assert [c.value for c in h.study.candidates] == [300, 150, 75]
    assert all(c.lever == Lever.TRADE and not c.recommended for c in h.study.candidates)
    assert h.study.candidates[1].overrides == ("workload.input_tokens=150", "workload.prompts_file=null")
    # Synthetic prompts of that length already: that rung is the configuration as given.
    again = by_cause(plan(evidence(LONG_PROMPTS, input_tokens=300), SETTINGS), Cause.PREFILL)
    assert again.study is not None and [c.value for c in again.study.candidates] == [150, 75]
    short = by_cause(plan(evidence(HEALTHY), SETTINGS), Cause.PREFILL)
    assert short.status == Status.SKIPPED and "prompts are short (20 tokens" in short.evidence


def test_queueing_gets_a_concurrency_ladder_and_more_slots_where_the_tool_starts_the_server():
    h = by_cause(plan(evidence(QUEUED, concurrency=4, slots=1), SETTINGS), Cause.QUEUE)
    assert h.study is not None and h.study.axis == "concurrency"
    assert [(c.label, c.lever) for c in h.study.candidates] == [
        ("concurrency=2", Lever.TRADE),
        ("concurrency=1", Lever.TRADE),
        ("parallel=4", Lever.FIX),
    ]
    assert h.study.requests == 80  # 5 rounds of 4 requests for each of 4 streams
    ollama = by_cause(plan(evidence(QUEUED, server_kind="ollama", concurrency=4, slots=None), SETTINGS), Cause.QUEUE)
    assert ollama.named == ("more generation slots: OLLAMA_NUM_PARALLEL=4 in the Ollama server's environment",)
    paced = by_cause(plan(evidence(QUEUED, rate=4.0, concurrency=16, slots=1), SETTINGS), Cause.QUEUE)
    assert paced.study is not None and [c.label for c in paced.study.candidates] == ["rate=2", "rate=1", "parallel=2"]


def test_threads_over_the_free_cores_are_tested_at_the_free_and_the_physical_cores():
    e = evidence(
        HEALTHY,
        {"other_cpu_pct_mean": 170.0},
        server_kind="embedded",
        options={"num_thread": 4},
        threads=4,
        lint={"num_thread": "num_thread=4 is more than the 2 physical cores"},
    )
    hypotheses = plan(e, SETTINGS)
    threads = by_cause(hypotheses, Cause.THREADS)
    assert threads.evidence == "4 llama.cpp threads on 2 cores, 1.7 of them busy with other processes (1 free)"
    # The cores the threads can have to themselves: one is free.
    assert threads.study is not None and [c.overrides for c in threads.study.candidates] == [("options.num_thread=1",)]
    assert threads.study.objective == "e2e_ms_p50" and threads.study.given_value == 4
    # The embedded server's default window (2048) is far larger than 20-token prompts need.
    context = by_cause(hypotheses, Cause.CONTEXT)
    assert context.study is not None and context.study.candidates[0].overrides == ("options.num_ctx=256",)
    gpu = by_cause(hypotheses, Cause.GPU)
    assert gpu.status == Status.NOT_TESTABLE and gpu.evidence.startswith("no GPU on this machine")
    # Threads were studied first: a window larger than needed is no part of the latency seen.
    assert [h.cause for h in to_test(hypotheses)] == [Cause.THREADS, Cause.CONTEXT]
    quiet = by_cause(plan(evidence(HEALTHY, server_kind="embedded", threads=2), SETTINGS), Cause.THREADS)
    assert quiet.status == Status.SKIPPED and "no more threads than free cores" in quiet.evidence
    # No other process busy: the lint's physical cores.
    idle = evidence(HEALTHY, {"other_cpu_pct_mean": 5.0}, server_kind="embedded", threads=4, logical_cpus=4)
    alone = by_cause(plan(idle, SETTINGS), Cause.THREADS)
    assert alone.study is not None and [c.label for c in alone.study.candidates] == ["num_thread=2"]


@pytest.mark.parametrize(
    ("other_pct", "free", "candidate"),
    [(10.0, 2, "num_thread=2"), (49.0, 2, "num_thread=2"), (50.0, 1, "num_thread=1"), (170.0, 1, "num_thread=1")],
)
def test_a_tenth_of_a_core_busy_leaves_both_cores_free_as_the_contention_warning_counts_them(
    other_pct, free, candidate
):
    """Bystanders take a core from the server's threads once the contention warning counts them
    (half a core on 2 cores), not for the tenth of a core any machine has busy."""
    lint = {"num_thread": "num_thread=4 is more than the 2 physical cores"}
    e = evidence(HEALTHY, {"other_cpu_pct_mean": other_pct}, server_kind="embedded", threads=4, lint=lint)
    threads = by_cause(plan(e, SETTINGS), Cause.THREADS)
    assert e.free_cores == free and f"({free} free)" in threads.evidence
    assert threads.study is not None and [c.label for c in threads.study.candidates] == [candidate]


def test_gpu_offload_is_tested_where_a_gpu_holds_only_part_of_the_model():
    e = evidence(
        HEALTHY,
        {"gpu_offload_fraction": 0.1},
        server_kind="ollama",
        gpu_count=1,
        options={"num_gpu": 1},
        lint={"num_gpu": "num_gpu=1 offloads 1 layer"},
    )
    gpu = by_cause(plan(e, SETTINGS), Cause.GPU)
    assert gpu.study is not None and [c.overrides for c in gpu.study.candidates] == [
        ("options.num_gpu=null",),
        ("options.num_gpu=99",),
    ]
    whole = by_cause(
        plan(evidence(HEALTHY, {"gpu_offload_fraction": 1.0}, server_kind="ollama", gpu_count=1), SETTINGS), Cause.GPU
    )
    assert whole.status == Status.SKIPPED


@pytest.mark.parametrize(
    ("changes", "cause", "phrase"),
    [
        ({"server_kind": "ollama", "local": False, "threads": None}, Cause.THREADS, "another host"),
        ({"server_kind": "ollama", "local": False, "gpu_count": None}, Cause.GPU, "another host"),
        ({"server_kind": "openai"}, Cause.THREADS, "OpenAI-compatible"),
        ({"server_kind": "ollama"}, Cause.CONTEXT, "Ollama's own default"),
    ],
)
def test_what_cannot_be_tested_or_known_says_why(changes, cause, phrase):
    h = by_cause(plan(evidence(HEALTHY, **changes), SETTINGS), cause)
    assert h.status in (Status.NOT_TESTABLE, Status.SKIPPED) and phrase in h.evidence


def test_an_openai_server_tells_no_parts_of_ttft_apart():
    records = [dataclasses.replace(rec(i), load_duration_ms=None, total_duration_ms=None) for i in range(20)]
    found = statuses(plan(evidence(records, server_kind="openai"), SETTINGS))
    assert found[Cause.LOAD] == found[Cause.PREFILL] == found[Cause.QUEUE] == Status.NOT_TESTABLE


def test_the_lint_findings_no_hypothesis_tests_are_listed():
    e = evidence(HEALTHY, lint={"num_batch": "num_batch=512 is larger than num_ctx=256", "num_thread": "x"})
    lint = by_cause(plan(e, SETTINGS), Cause.LINT)
    assert lint.status == Status.SKIPPED and "num_batch: num_batch=512 is larger" in lint.evidence
    assert "num_thread" not in lint.evidence.partition("fix them all the same")[2]


def test_the_likeliest_cause_is_studied_first_and_the_family_counts_every_candidate():
    records = [rec(i, queue=150.0, prefill=300.0, prompt_tokens=300) for i in range(20)]
    hypotheses = plan(evidence(records, concurrency=4, slots=1), SETTINGS)
    assert [h.cause for h in to_test(hypotheses)] == [Cause.PREFILL, Cause.QUEUE]
    assert family_size(hypotheses) == 3 + 3
    assert family_size(plan(evidence(HEALTHY), SETTINGS)) == 1


@pytest.mark.parametrize(
    ("prompt", "answer", "expected"),
    [(20, 21, 256), (150, 64, 512), (300, 600, 1024), (1000, 10, 2048)],
)
def test_the_context_a_prompt_needs_is_a_power_of_two_over_twice_it(prompt, answer, expected):
    assert fitting_num_ctx(prompt, answer) == expected


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.3, "0.3 s"), (0.6, "0.6 s"), (12.0, "12 s"), (360.0, "6 min"), (math.inf, "forever")]
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert seconds_text(seconds) == text


def test_a_study_measures_enough_requests_for_its_rounds_and_its_intervals():
    assert arm_requests(evidence(HEALTHY, requests=10)) == 20
    assert arm_requests(evidence(HEALTHY, requests=50)) == 50
    assert arm_requests(evidence(HEALTHY, concurrency=2)) == 40
    assert arm_requests(evidence(HEALTHY, concurrency=8, rate=2.0)) == 20


# --- verdicts ---------------------------------------------------------------------------------


def arm(name: str, ttft: float, rounds: int = 6, per_round: int = 4, study: str = "s", spread: float = 0.01) -> Arm:
    records = [
        rec(r * per_round + i, prefill=ttft * (1 + spread * ((r + i) % 3 - 1)), block=r)
        for r in range(rounds)
        for i in range(per_round)
    ]
    return Arm(name, [RunResult(tuple(records), study=study)])


def measured(label: str, lever: Lever, base: Arm, cand: Arm) -> Measured:
    comparison = compare(base, cand, objective="ttft_ms_p50")
    return Measured(Candidate(label, (f"options.x={label}",), lever), comparison)


@pytest.mark.parametrize(
    ("candidates", "status", "best"),
    [
        ([("a", Lever.FIX, 50.0)], Status.CONFIRMED, "a"),
        ([("a", Lever.TRADE, 50.0), ("b", Lever.FIX, 80.0)], Status.CONFIRMED, "b"),
        ([("a", Lever.FIX, 100.0), ("b", Lever.FIX, 150.0)], Status.REFUTED, None),
        ([("probe", Lever.PROBE, 20.0), ("a", Lever.FIX, 100.0)], Status.REFUTED, None),
    ],
    ids=["improved", "a-fix-before-a-trade", "none-improved", "a-probe-confirms-nothing"],
)
def test_a_hypothesis_is_confirmed_only_by_a_fix_or_trade_measured_improved(candidates, status, best):
    base = arm("as given", 100.0)
    hypothesis = by_cause(plan(evidence(LONG_PROMPTS), SETTINGS), Cause.PREFILL)
    results = [measured(label, lever, base, arm(label, ttft)) for label, lever, ttft in candidates]
    outcome = judge(hypothesis, results, SETTINGS.min_gain_pct)
    assert outcome.status == status
    assert (outcome.best.candidate.label if outcome.best else None) == best


def test_an_interval_that_still_allows_a_gain_worth_having_leaves_it_undecided():
    """A noisy study that ran out of rounds: no significant change, but the interval reaches far
    into improvement; a refutation needs the interval to rule out a gain of min_gain_pct."""
    base = arm("as given", 100.0)
    swings = (60.0, 130.0, 70.0, 120.0, 75.0, 110.0)  # round by round: a noisy machine
    records = [rec(r * 4 + i, prefill=ttft, block=r) for r, ttft in enumerate(swings) for i in range(4)]
    cand = Arm("a", [RunResult(tuple(records), study="s")])
    hypothesis = by_cause(plan(evidence(LONG_PROMPTS), SETTINGS), Cause.PREFILL)
    one = measured("a", Lever.FIX, base, cand)
    assert one.row is not None and one.row.verdict == Verdict.NO_CHANGE and one.row.ci_low < -10
    outcome = judge(hypothesis, [one], 10.0)
    assert outcome.status == Status.UNDECIDED and "the interval of a still allows a gain of 10%" in outcome.note
    assert judge(hypothesis, [one], -one.row.ci_low + 1).status == Status.REFUTED


def test_a_look_stops_a_doctors_study_once_each_candidate_improved_or_ruled_out_a_worthwhile_gain():
    """The doctor's question is narrower than a sweep's: a no-change whose interval stops short of
    a 10% gain answers it, though it is far from an equivalence within the minimum effect."""
    base = arm("as given", 100.0)
    settled = settles(10.0)
    better = measured("a", Lever.FIX, base, arm("a", 50.0))
    assert better.improved and settled(better.comparison) and decided(better.comparison)
    wobbles = (96.0, 110.0, 94.0, 108.0, 97.0, 105.0)  # a few % round by round
    records = [rec(r * 4 + i, prefill=ttft, block=r) for r, ttft in enumerate(wobbles) for i in range(4)]
    alike = measured("b", Lever.FIX, base, Arm("b", [RunResult(tuple(records), study="s")]))
    assert alike.row is not None and alike.row.verdict == Verdict.NO_CHANGE and -10 < alike.row.ci_low < -2
    assert settled(alike.comparison) and not decided(alike.comparison)
    swings = (60.0, 130.0, 70.0, 120.0, 75.0, 110.0)  # round by round: a noisy machine
    records = [rec(r * 4 + i, prefill=ttft, block=r) for r, ttft in enumerate(swings) for i in range(4)]
    noisy = measured("c", Lever.FIX, base, Arm("c", [RunResult(tuple(records), study="s")]))
    assert noisy.row is not None and noisy.row.ci_low < -10 and not settled(noisy.comparison)
    look = LookPlan(budget_s=100.0, first=6, settles=settled).look(6, 10.0, lambda _: [alike.comparison])
    assert look.decided and look.stop
    assert not LookPlan(budget_s=100.0, first=6).look(6, 10.0, lambda _: [alike.comparison]).stop


@pytest.mark.parametrize(
    ("study", "later", "left", "expected"),
    [
        ((30.0, 20.0), [], 100.0, 90.0),  # the last study: its rounds and all that is spare
        ((30.0, 20.0), [(30.0, 20.0)], 500.0, 240.0),  # half the 440 s spare each
        ((30.0, 20.0), [(30.0, 20.0)], 1000.0, 320.0),  # at most 16 times its planned rounds
        ((30.0, 20.0), [(30.0, 20.0)], 160.0, 70.0),  # (160 - 60) / 2 spare on top of its 20 s
        ((30.0, 20.0), [(90.0, 60.0)], 160.0, 30.0),  # a quarter of the 40 s spare: its rounds are a quarter
        ((30.0, 20.0), [(200.0, 150.0)], 160.0, 20.0),  # nothing spare: its planned rounds
    ],
)
def test_a_study_may_go_on_within_its_share_of_the_spare_budget(study, later, left, expected):
    assert rounds_budget(study, later, left) == pytest.approx(expected)


def test_too_few_requests_leave_a_hypothesis_undecided():
    base, cand = arm("as given", 100.0, rounds=2), arm("a", 50.0, rounds=2)
    hypothesis = by_cause(plan(evidence(LONG_PROMPTS), SETTINGS), Cause.PREFILL)
    assert judge(hypothesis, [measured("a", Lever.FIX, base, cand)], 10.0).status == Status.UNDECIDED


def test_the_prefill_rate_is_fitted_round_by_round():
    arms = {}
    for tokens in (300, 150, 75):
        arms[str(tokens)] = [
            # Each round's slope is off by up to 0.05 ms a token; the rounds average 1.5.
            rec(r * 4 + i, prefill=10.0 + (1.5 + 0.05 * (r % 3 - 1)) * tokens, prompt_tokens=tokens, block=r)
            for r in range(5)
            for i in range(4)
        ]
    rate = prefill_rate(arms)
    assert rate is not None and rate.rounds == 5
    assert rate.per_unit_ms == pytest.approx(1.5, abs=0.02)
    assert rate.low < 1.5 < rate.high and rate.high - rate.low < 0.2
    assert prefill_rate({"one": arms["300"]}) is None  # one rung: no slope


# --- the report's words --------------------------------------------------------------------------


def confirmed_load():
    e = evidence(COLD_HALF, keep_alive_s=300.0, idle_gap_s=360.0)
    hypotheses = plan(e, SETTINGS)
    load = by_cause(hypotheses, Cause.LOAD)
    assert load.study is not None
    fix = next(c for c in load.study.candidates if c.lever == Lever.FIX)
    base, cand = arm("as given", 160.0), arm(fix.label, 40.0)
    outcome = judge(load, [Measured(fix, compare(base, cand, objective="ttft_ms_p50"))], 10.0)
    return e, [outcome if h.cause == Cause.LOAD else planned(h) for h in hypotheses]


def test_the_answer_names_the_cause_with_its_share_and_the_fix_measured():
    e, outcomes = confirmed_load()
    text = answer(e, outcomes)
    assert text.startswith("TTFT p50 ")
    assert "% model load (10 of 20 requests were cold: idle gaps of 6 min exceed keep_alive 5 min)." in text
    assert "Fix: keep_alive=-1: TTFT p50 " in text and text.endswith("), measured.")
    line = hypothesis_line(outcomes[0], e)
    assert line.startswith('model load and cold starts (the seed\'s "cold start and keep_alive"): confirmed.')
    assert "keep_alive=-1: TTFT p50 " in line and ", improved" in line and "6 paired rounds" in line


def test_nothing_wrong_says_so_and_recommends_the_configuration_as_given():
    e = evidence(HEALTHY)
    outcomes = [planned(h) for h in plan(e, SETTINGS)]
    assert "nothing wrong found" in answer(e, outcomes)
    assert recommended_line(["server=simulated"], outcomes) is None


def test_the_recommended_line_is_the_command_line_with_the_fixes_on_top():
    _, outcomes = confirmed_load()
    given = ["server=simulated", "workload.keep_alive=5m", "workload.requests=30"]
    assert recommended_line(given, outcomes) == (
        "python -m sentinel_exp server=simulated workload.requests=30 workload.keep_alive=-1"
    )


def test_the_report_starts_with_the_answer_and_lists_every_hypothesis():
    e, outcomes = confirmed_load()
    report = Report(
        "x", e, tuple(outcomes), ("server=simulated",), ("TTFT is mostly model load",), "/b", 42.0, 600.0, 0.025, True
    )
    text = markdown(report)
    assert text.splitlines()[2].startswith("**TTFT p50 ")
    assert text.count("\n- ") >= len(outcomes)
    assert "```bash\npython -m sentinel_exp server=simulated workload.keep_alive=-1\n```" in text
    assert "42 s of machine time of diagnose.budget_s=600" in text
    assert console_lines(report)[0] == answer(e, outcomes)


def test_overrides_merge_with_the_candidates_last_and_the_doctors_own_are_left_out():
    assert merge_overrides(["a=1", "b=2", "+c=3"], ["b=5", "c=4"]) == ["a=1", "b=5", "c=4"]
    assert [o for o in ["sweep=diagnose", "diagnose.budget_s=60", "sweep=aa", "x=1"] if not doctors_own(o)] == [
        "sweep=aa",
        "x=1",
    ]


def test_runs_inside_a_plan_advance_its_one_bar():
    with ui.PlanProgress(False, 2) as plan_bar:
        run_bar = ui.RunProgress(True)
        assert run_bar._progress is None  # draws nothing of its own
        for i in range(3):
            run_bar.advance(rec(i))
        assert plan_bar._done == 3 and plan_bar._total == 3
    assert ui.RunProgress(False)._plan is None


# --- resuming ------------------------------------------------------------------------------------


def _earlier(folder, **changes):
    from sentinel_exp.doctor.state import DoctorState

    (folder / "baseline").mkdir(parents=True)
    (folder / "load").mkdir()
    state = DoctorState(str(folder), "abc", baseline=str(folder / "baseline"), studies={"load": str(folder / "load")})
    dataclasses.replace(state, spent_s=42.0, **changes).save()


@pytest.mark.parametrize(
    ("changes", "force", "resumed"),
    [({}, False, True), ({"finished": True}, False, False), ({}, True, False), ({"identity": "other"}, False, False)],
    ids=["stopped", "finished", "force", "another-configuration"],
)
def test_a_stopped_doctor_of_the_same_configuration_is_resumed_from_its_folder(tmp_path, changes, force, resumed):
    from sentinel_exp.doctor.state import open_state

    _earlier(tmp_path, **changes)
    cfg = dataclasses.replace(typed_default(), force=force)
    state = open_state(tmp_path, cfg, "abc")
    assert (state.baseline is not None) == resumed
    if resumed:
        assert state.studies == {"load": str(tmp_path / "load")} and state.spent_s == 42.0
        assert state.resumed_from == str(tmp_path)
    assert state.fresh_folder("load").name == "load-2"  # an interrupted try's folder is never reused


def test_without_its_baseline_nothing_of_a_stopped_doctor_is_reused(tmp_path):
    from sentinel_exp.doctor.state import open_state

    _earlier(tmp_path)
    (tmp_path / "baseline").rmdir()
    state = open_state(tmp_path, typed_default(), "abc")
    assert state.baseline is None and state.studies == {} and state.spent_s == 0.0


def typed_default():
    from sentinel_exp.config.schema import ExperimentConfig, ModelConfig, TrackingConfig

    return ExperimentConfig(model=ModelConfig("m"), tracking=TrackingConfig(enabled=False))
