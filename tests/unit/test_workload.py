"""Workloads that isolate each cause: think-time distributions, idle gaps, prompt files, synthetic
prompts of a target length and their calibration, nonce prefixes."""

from __future__ import annotations

import json
import math
import random
import re
import statistics

import pytest
from support.compose import variant

from sentinel_exp.config.distributions import Distribution, DistributionError, parse_distribution
from sentinel_exp.config.schema import WorkloadConfig, typed_config
from sentinel_exp.errors import ConfigError
from sentinel_exp.names import DistributionKind, Phase
from sentinel_exp.records import RequestRecord
from sentinel_exp.workload.prompts_file import parse_prompt_lines, read_prompts_file
from sentinel_exp.workload.source import PromptSource
from sentinel_exp.workload.synthetic import LengthFit, fit_length, nonce_prefix, synthetic_text

# --- think time and other drawn quantities ----------------------------------------------------


def draws(value: object, n: int = 20_000, seed: int = 7) -> list[float]:
    dist = parse_distribution(value)
    rng = random.Random(seed)
    return [dist.sample(rng) for _ in range(n)]


def test_a_number_is_a_fixed_think_time():
    assert set(draws(2, n=10)) == {2.0}
    assert parse_distribution(0).is_zero and not parse_distribution(0.5).is_zero


@pytest.mark.parametrize(
    ("value", "mean", "stdev"),
    [
        ({"distribution": "exponential", "mean": 2}, 2.0, 2.0),
        ({"distribution": "uniform", "low": 1, "high": 3}, 2.0, 2 / math.sqrt(12)),
        ({"distribution": "lognormal", "mean": 2, "sigma": 0.5}, 2.0, 2 * math.sqrt(math.exp(0.25) - 1)),
    ],
)
def test_distributions_have_the_mean_and_spread_asked_for(value, mean, stdev):
    sample = draws(value)
    assert statistics.fmean(sample) == pytest.approx(mean, rel=0.04)
    assert statistics.stdev(sample) == pytest.approx(stdev, rel=0.06)
    assert min(sample) >= 0
    assert parse_distribution(value).expected() == pytest.approx(mean)


def test_draws_are_seeded():
    value = {"distribution": "exponential", "mean": 1}
    assert draws(value, n=50, seed=3) == draws(value, n=50, seed=3)
    assert draws(value, n=50, seed=3) != draws(value, n=50, seed=4)


def test_uniform_bounds_hold_and_its_longest_value_is_high():
    sample = draws({"distribution": "uniform", "low": 1, "high": 3})
    assert min(sample) >= 1 and max(sample) <= 3
    assert parse_distribution({"distribution": "uniform", "low": 1, "high": 3}).typical_max() == 3


def test_an_unbounded_distribution_is_bounded_by_its_99th_percentile():
    exponential = parse_distribution({"distribution": "exponential", "mean": 2})
    assert exponential.typical_max() == pytest.approx(2 * math.log(100))
    sample = sorted(draws({"distribution": "exponential", "mean": 2}))
    assert sample[int(0.99 * len(sample))] == pytest.approx(exponential.typical_max(), rel=0.08)
    lognormal = parse_distribution({"distribution": "lognormal", "mean": 2, "sigma": 0.5})
    sample = sorted(draws({"distribution": "lognormal", "mean": 2, "sigma": 0.5}))
    assert sample[int(0.99 * len(sample))] == pytest.approx(lognormal.typical_max(), rel=0.08)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must be 0 or more"),
        ("2s", "must be a number, or {distribution: exponential"),
        ({"distribution": "gamma", "mean": 2}, "distribution must be one of exponential, uniform, lognormal"),
        ({"distribution": "exponential"}, "takes mean (got none)"),
        ({"distribution": "uniform", "low": 3, "high": 1}, "low <= high"),
        ({"distribution": "exponential", "mean": -2}, "numbers, 0 or more"),
        ({"distribution": "exponential", "mean": 2, "sigma": 1}, "takes mean (got mean, sigma)"),
    ],
)
def test_a_bad_distribution_says_what_is_wrong(value, message):
    with pytest.raises(DistributionError, match=re.escape(message)):
        parse_distribution(value)


def test_think_time_distribution_from_a_hydra_override():
    cfg = typed_config(variant("workload.think_time_s={distribution:exponential,mean:2}"))
    assert parse_distribution(cfg.workload.think_time_s) == Distribution(DistributionKind.exponential, mean=2.0)
    assert typed_config(variant("workload.think_time_s=2")).workload.think_time_s == 2


# --- the longest idle gap ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "gap"),
    [
        ({}, 0.0),
        ({"think_time_s": 2.5}, 2.5),
        ({"think_time_s": 2.5, "idle_every": 10, "idle_s": 30}, 30.0),
        ({"think_time_s": 40, "idle_every": 10, "idle_s": 30}, 40.0),
        ({"think_time_s": {"distribution": "uniform", "low": 1, "high": 7}}, 7.0),
        ({"think_time_s": {"distribution": "exponential", "mean": 1}}, math.log(100)),
        ({"rate": 0.5}, 2 * math.log(100)),
    ],
)
def test_longest_idle_gap(settings, gap):
    assert WorkloadConfig(**settings).longest_idle_gap_s() == pytest.approx(gap)


# --- checks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["workload.think_time_s=-1"], "workload.think_time_s must be 0 or more"),
        (["workload.think_time_s=1", "workload.rate=2"], "think_time_s paces a closed loop"),
        (["workload.idle_every=5"], "workload.idle_every=5 and workload.idle_s=0 go together"),
        (["workload.idle_s=5"], "go together"),
        (["workload.idle_every=-1", "workload.idle_s=1"], "must be 0 or more"),
        (["workload.input_tokens=0"], "workload.input_tokens must be at least 1 token"),
        (["workload.input_tokens=10", "workload.prompts_file=x.txt"], "exclude each other"),
        (["workload.prompts_file=no/such/file.txt"], "workload.prompts_file: no file no/such/file.txt"),
        (
            ["workload.prompts_file=prompts/chat_turns.jsonl", "workload.api=generate"],
            "holds chat messages, which /api/generate cannot carry",
        ),
    ],
)
def test_workload_mistakes_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        typed_config(variant(*overrides))


def test_the_shipped_presets_validate():
    from support.compose import variant

    chat = typed_config(variant("workload=chat_file")).workload
    assert chat.prompts_file == "prompts/chat_turns.jsonl"
    assert any(p.is_chat for p in read_prompts_file(chat.prompts_file))
    idle = typed_config(variant("workload=idle_bursts")).workload
    assert idle.longest_idle_gap_s() == 10


# --- prompt files -----------------------------------------------------------------------------


def test_a_text_file_is_one_prompt_a_line(tmp_path, monkeypatch):
    (tmp_path / "p.txt").write_text("first prompt\n\n  second one  \n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # a relative path is read from the working directory
    assert [p.text for p in read_prompts_file("p.txt")] == ["first prompt", "second one"]


def test_jsonl_takes_prompts_and_chat_messages(tmp_path):
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    lines = [json.dumps({"prompt": "plain"}), json.dumps({"messages": turns})]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plain, chat = read_prompts_file(str(tmp_path / "p.jsonl"))
    assert plain.text == "plain" and not plain.is_chat
    assert chat.messages == turns and chat.is_chat


def test_shipped_prompt_sets_are_found_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(read_prompts_file("prompts/questions.txt")) == 8
    assert len(read_prompts_file("prompts/chat_turns.jsonl")) == 4


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("not json", "not JSON"),
        ('["a list"]', 'each line must be an object with either "prompt"'),
        ('{"prompt": "a", "messages": []}', 'each line must be an object with either "prompt"'),
        ('{"prompt": ""}', '"prompt" must be a non-empty string'),
        ('{"messages": []}', '"messages" must be a non-empty list'),
        ('{"messages": [{"content": "x"}]}', 'messages\\[0\\] must be an object with a string "role"'),
        ('{"messages": [{"role": "user", "content": 3}]}', "messages\\[0\\].content must be a string"),
    ],
)
def test_a_bad_jsonl_line_is_named_by_file_and_line(line, why):
    lines = ['{"prompt": "fine"}', "", line]
    with pytest.raises(ConfigError, match=f"workload.prompts_file: set.jsonl:3: {why}"):
        parse_prompt_lines(lines, "set.jsonl", jsonl=True)


def test_many_bad_lines_are_summed_up_and_an_empty_file_is_refused():
    with pytest.raises(ConfigError, match=r"set.jsonl:5: not JSON.*and 3 more bad lines") as caught:
        parse_prompt_lines(["x"] * 8, "set.jsonl", jsonl=True)
    assert str(caught.value).count("not JSON") == 5
    with pytest.raises(ConfigError, match=r"set\.txt holds no prompt"):
        parse_prompt_lines(["", "  "], "set.txt", jsonl=False)


# --- synthetic prompts and their calibration --------------------------------------------------


def test_synthetic_text_has_the_words_asked_for_and_is_seeded():
    text = synthetic_text(100, random.Random(1))
    assert len(text.split()) == 100 and text.endswith(".")
    assert text == synthetic_text(100, random.Random(1)) != synthetic_text(100, random.Random(2))


def test_the_fit_recovers_overhead_and_tokens_per_word():
    true = LengthFit(overhead=31, per_word=1.08)
    points = [(w, round(true.tokens(w))) for w in (118, 236, 118, 236)]
    fit = fit_length(points)
    assert fit.overhead == pytest.approx(31, abs=1) and fit.per_word == pytest.approx(1.08, abs=0.01)
    # The rescaled prompt hits the target: 256 tokens within a token or two.
    assert true.tokens(fit.words_for(256)) == pytest.approx(256, abs=2)


def test_one_word_count_falls_back_to_a_ratio_and_none_to_the_prior():
    fit = fit_length([(200, 260), (200, 260)])
    assert fit == LengthFit(overhead=0.0, per_word=1.3)
    assert fit.words_for(130) == 100
    assert fit_length([]) == LengthFit()


def test_prompt_source_calibrates_on_warmup_and_records_the_target():
    workload = WorkloadConfig(input_tokens=256, warmup=2, unique_prompts=True)
    source = PromptSource(workload, run_token="ab")
    server = LengthFit(overhead=40, per_word=1.1)  # what the server counts for a prompt of n words

    def answer(planned, phase):
        # The nonce's words are counted too, as a server would.
        record = RequestRecord(index=0, phase=phase, prompt_index=planned.prompt_index, api="chat", ok=True)
        record.prompt_eval_count = round(server.tokens(len(planned.text.split())))
        return record

    warm = [source.next(i, warmup=True) for i in range(2)]
    assert [p.input_tokens_target for p in warm] == [256, 128]  # two word counts to fit a line
    for planned in warm:
        source.observe(answer(planned, Phase.WARMUP), planned)
    measured = [source.next(i) for i in range(2, 12)]
    counts = [answer(p, Phase.MEASURED).prompt_eval_count for p in measured]
    assert all(p.input_tokens_target == 256 for p in measured)
    assert all(abs(c - 256) <= 3 for c in counts), counts
    # Measured records do not move the fit.
    fit = source.fit
    source.observe(answer(measured[0], Phase.MEASURED), measured[0])
    assert source.fit == fit


def test_prompt_source_draws_targets_from_a_distribution():
    workload = WorkloadConfig(input_tokens={"distribution": "uniform", "low": 100, "high": 300})
    targets = [PromptSource(workload).next(i).input_tokens_target for i in range(200)]
    assert all(t is not None and 100 <= t <= 300 for t in targets)
    assert statistics.fmean(t for t in targets if t is not None) == pytest.approx(200, rel=0.06)


def test_without_warmup_the_lengths_are_uncalibrated_and_a_warning_says_so():
    source = PromptSource(WorkloadConfig(input_tokens=50, warmup=0))
    assert "not calibrated" in source.warnings[0]
    assert len(source.next(0).text.split()) == 50


# --- unique prompts ---------------------------------------------------------------------------


def test_nonce_prefixes_are_unique_within_and_between_runs():
    one = {nonce_prefix("a1b2c3", i) for i in range(10_000)}
    assert len(one) == 10_000
    assert nonce_prefix("a1b2c3", 5) != nonce_prefix("d4e5f6", 5)
    runs = {PromptSource(WorkloadConfig()).run_token for _ in range(50)}
    assert len(runs) == 50


def test_unique_prompts_put_the_nonce_first_in_what_the_server_sees():
    plain = PromptSource(WorkloadConfig(prompts=["why?"]))
    assert plain.next(0).text == plain.next(1).text == "why?"
    unique = PromptSource(WorkloadConfig(prompts=["why?"], unique_prompts=True), run_token="ab")
    first, second = unique.next(0), unique.next(1)
    assert first.text.endswith("] why?") and first.text != second.text
    assert first.text.startswith("[ab")
    # With a system prompt, the nonce leads it: the system prompt is what comes first.
    system = PromptSource(WorkloadConfig(prompts=["why?"], system="be brief", unique_prompts=True), run_token="ab")
    planned = system.next(3)
    assert planned.text == "why?" and planned.system == "[ab3] be brief"


def test_chat_messages_keep_their_turns_and_take_the_system_prompt_and_nonce(tmp_path):
    turns = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "?"},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": turns}) + "\n", encoding="utf-8")
    workload = WorkloadConfig(prompts_file=str(path), system="be brief", unique_prompts=True)
    planned = PromptSource(workload, run_token="ab").next(0)
    assert planned.system is None and planned.text == ""
    assert planned.messages == [{"role": "system", "content": "[ab0] be brief"}, *turns]
    assert turns[0]["content"] == "hi"  # the file's prompts are not changed in place
