"""Workloads that isolate each cause, run against the simulated server: think time between a
client's requests, idle gaps that let keep_alive expire, prompt files with chat conversations,
synthetic prompts of a target length, unique prompts that miss the prompt cache.

Lower bounds are what the load generator or the server injects; upper bounds leave room for a
busy machine, where asyncio wake-ups come late by several ms.
"""

from __future__ import annotations

import json
import statistics

import pytest
from support.cli import SIM

from sentinel_exp.errors import ConfigError
from sentinel_exp.records import RequestRecord, read_records
from sentinel_exp.serve.engines.simulated import prompt_words

QUIET = (*SIM, "telemetry.enabled=false", "tracking.enabled=false", "plots=false")


def measured(result) -> list[RequestRecord]:
    return [r for r in read_records(result.output_dir / "requests.jsonl") if r.measured]


def gaps_s(records: list[RequestRecord]) -> list[float]:
    """Time between the end of each request and the start of the next (one client)."""
    ordered = sorted(records, key=lambda r: r.started_at)
    ends = [r.started_at + ((r.queue_ms or 0) + (r.e2e_ms or 0)) / 1000 for r in ordered]
    return [b.started_at - end for b, end in zip(ordered[1:], ends, strict=False)]


@pytest.mark.timing
def test_think_time_separates_a_clients_requests_and_stays_out_of_their_timings(tmp_path, run_experiment):
    result = run_experiment(
        tmp_path, *QUIET, "workload.requests=5", "workload.warmup=1", "workload.think_time_s=0.3", "server.sim.tokens=4"
    )
    records = measured(result)
    assert len(records) == 5 and all(r.ok for r in records)
    for gap in gaps_s(records):
        assert 0.29 <= gap <= 0.5  # 0.3 s, not twice that
    # The wait is before the request is due: none of it in queue, TTFT or e2e (40 ms to the first
    # token, 55 ms to the last; the 300 ms of thinking would put each well over its ceiling).
    assert all(r.queue_ms < 150 and 40 <= r.ttft_ms < 200 and r.e2e_ms < 250 for r in records)
    assert result.outcome.metrics["measured_duration_s"] >= 4 * 0.3


@pytest.mark.timing
def test_a_think_time_drawn_from_a_distribution_is_seeded(tmp_path, run_experiment):
    think = "workload.think_time_s={distribution:uniform,low:0.1,high:0.3}"
    first = run_experiment(tmp_path, *QUIET, "workload.requests=6", think, "hydra.run.dir=a")
    second = run_experiment(tmp_path, *QUIET, "workload.requests=6", think, "hydra.run.dir=b")
    a, b = gaps_s(measured(first)), gaps_s(measured(second))
    assert all(0.09 <= g <= 0.45 for g in a + b)  # drawn from 0.1-0.3 s, plus a late wake-up
    assert max(a) - min(a) > 0.02  # drawn, not fixed
    # Same seed, same waits: a gap is its draw plus the lateness of one wake-up, so most pairs agree
    # to a few ms (independent draws would: ~2% of the time for a median of 5 under 15 ms), and one
    # late wake-up of a busy machine moves one pair, not the median.
    differences = [abs(x - y) for x, y in zip(a, b, strict=True)]
    assert statistics.median(differences) < 0.015 and max(differences) < 0.15, (a, b)


def test_think_time_longer_than_keep_alive_makes_every_request_after_it_cold(tmp_path, run_experiment):
    result = run_experiment(
        tmp_path,
        *QUIET,
        "server.keep_alive=1s",
        "workload.requests=3",
        "workload.warmup=1",
        "workload.think_time_s=1.4",
        "server.sim.tokens=2",
    )
    records = measured(result)
    # The first measured request follows warmup at once (warm); each after a think time reloads.
    assert [r.cold for r in records] == [False, True, True]
    for record in records[1:]:
        assert 195 <= record.load_duration_ms <= 380  # server.sim.load_ms=200: one load, not two
    assert result.outcome.metrics["cold_starts"] == 2


def test_idle_gaps_reproduce_keep_alive_expiry_between_bursts(tmp_path, run_experiment):
    result = run_experiment(
        tmp_path,
        *QUIET,
        "server.keep_alive=1s",
        "workload.requests=6",
        "workload.warmup=1",
        "workload.concurrency=2",
        "workload.idle_every=3",
        "workload.idle_s=1.4",
        "server.sim.tokens=2",
        "server.sim.parallel=2",
    )
    records = sorted(measured(result), key=lambda r: r.index)
    # After the pause, the requests that wait on the reload are cold, the rest of the burst warm.
    assert [r.cold for r in records[:3]] == [False] * 3
    assert records[3].cold is True and 195 <= records[3].load_duration_ms <= 380  # one 200 ms load
    first_burst_end = max(r.started_at + (r.queue_ms + r.e2e_ms) / 1000 for r in records[:3])
    assert min(r.started_at for r in records[3:]) - first_burst_end >= 1.39


def test_chat_conversations_from_a_file_go_through_chat_and_openai(tmp_path, run_experiment):
    turns = [
        {"role": "user", "content": "What is a hash table?"},
        {"role": "assistant", "content": "A map from keys to values."},
        {"role": "user", "content": "When is it slow?"},
    ]
    prompts = tmp_path / "chat.jsonl"
    prompts.write_text(json.dumps({"messages": turns}) + "\n" + json.dumps({"prompt": "Why?"}) + "\n")
    for api in ("chat", "openai"):
        result = run_experiment(
            tmp_path,
            *QUIET,
            f"workload.api={api}",
            "workload.prompts_file=chat.jsonl",  # relative: from the working directory
            "workload.requests=2",
            "workload.warmup=0",
            "hydra.run.dir=out-" + api,
        )
        records = measured(result)
        assert all(r.ok for r in records) and [r.prompt_index for r in records] == [0, 1]
        # The simulated server counts the template's tokens of every message: all three turns arrived.
        assert records[0].prompt_eval_count == len(prompt_words(turns))
        assert records[1].prompt_eval_count == len(prompt_words([{"role": "user", "content": "Why?"}]))
    with pytest.raises(ConfigError, match="holds chat messages, which /api/generate cannot carry"):
        run_experiment(tmp_path, *QUIET, "workload.api=generate", "workload.prompts_file=chat.jsonl")


def test_synthetic_prompts_hit_their_target_length_and_both_lengths_are_recorded(tmp_path, run_experiment):
    result = run_experiment(
        tmp_path,
        *QUIET,
        "workload.input_tokens=300",
        "workload.unique_prompts=true",
        "workload.requests=4",
        "workload.warmup=2",
        "options.num_predict=3",
    )
    records = measured(result)
    assert all(r.input_tokens_target == 300 for r in records)
    assert all(abs(r.prompt_eval_count - 300) <= 2 for r in records), [r.prompt_eval_count for r in records]
    # num_predict is honoured and recorded: eval_count is the server's count of what came back.
    assert all(r.num_predict == 3 and r.eval_count == 3 for r in records)
    warmup = [r for r in read_records(result.output_dir / "requests.jsonl") if not r.measured]
    assert [r.input_tokens_target for r in warmup] == [300, 150]


@pytest.mark.timing
def test_unique_prompts_miss_the_prompt_cache(tmp_path, run_experiment):
    long_prompt = "workload.prompts=[" + " ".join(["word"] * 100) + "]"
    common = (*QUIET, "server.sim.prefill_ms_per_token=1", long_prompt, "workload.requests=4", "server.sim.tokens=2")
    cached = measured(run_experiment(tmp_path, *common, "hydra.run.dir=cached"))
    unique = measured(run_experiment(tmp_path, *common, "workload.unique_prompts=true", "hydra.run.dir=unique"))
    # The same prompt again: its ~100 prompt words are in the cache, only the TTFT's 40 ms is left
    # (the ceiling: below the 140 ms of a prompt prefilled again).
    assert all(40 <= r.ttft_ms < 120 for r in cached)
    # A nonce first: nothing in common with the cached prompt, every word is prefilled (1 ms each).
    assert all(140 <= r.ttft_ms < 260 for r in unique)


def test_idle_pauses_also_hold_back_poisson_arrivals_and_a_stop_cuts_them_short():
    import asyncio
    import time

    from sentinel_exp.run.load import PhasePlan, run_phase

    async def scenario(stop_after_s: float | None) -> tuple[list[tuple[int, float, float]], float]:
        spans: list[tuple[int, float, float]] = []
        stop = asyncio.Event()

        async def send_one(index, arrival_ns, keep):
            start = time.perf_counter()
            await asyncio.sleep(0.02)
            spans.append((index, start, time.perf_counter()))

        if stop_after_s is not None:
            asyncio.get_running_loop().call_later(stop_after_s, stop.set)
        plan = PhasePlan(requests=6, concurrency=2, rate=100.0, seed=1, idle_every=3, idle_s=0.5)
        return spans, await run_phase(plan, send_one, lambda r: None, stop)

    spans, duration = asyncio.run(scenario(None))
    first = [s for s in spans if s[0] < 3]
    second = [s for s in spans if s[0] >= 3]
    assert len(first) == len(second) == 3
    # Nothing is sent until the burst's requests have ended and the pause has passed.
    assert min(s[1] for s in second) - max(s[2] for s in first) >= 0.5
    assert duration >= 0.5
    spans, duration = asyncio.run(scenario(0.2))  # stopped inside the pause
    assert len(spans) == 3 and duration < 0.4
