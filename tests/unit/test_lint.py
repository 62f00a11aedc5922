"""The option lint: each rule fires on its case and stays quiet on a clean config (one table)."""

from __future__ import annotations

import dataclasses

import pytest
from support.compose import variant

from sentinel_exp.checks.options import (
    RULES,
    Finding,
    LintInput,
    counted_prompt_tokens,
    estimated_prompt_tokens,
    lint,
    rules_named,
)
from sentinel_exp.config.schema import typed_config

# What a plain run sends on this project's 2-core machine: nothing any rule objects to.
CLEAN = LintInput(
    options={"num_ctx": 2048, "num_batch": 512, "num_thread": 2, "num_predict": 64, "temperature": 0.7},
    warmup_options={"num_ctx": 2048, "num_batch": 512, "num_thread": 2, "num_predict": 16},
    keep_alive_s=300.0,
    keep_alive_source="the bundled server's default",
    idle_gap_s=60.0,
    physical_cores=2,
    prompt_tokens=40,
    tokens_estimated=True,
)


def changed(**fields: object) -> LintInput:
    return dataclasses.replace(CLEAN, **fields)  # type: ignore[arg-type]


def with_options(**options: object) -> LintInput:
    """Both phases send the changed options, as a run does."""
    assert CLEAN.warmup_options is not None
    return changed(options={**CLEAN.options, **options}, warmup_options={**CLEAN.warmup_options, **options})


# (case, input, the rules that must fire, words the finding must carry)
CASES = [
    ("clean", CLEAN, set(), ""),
    ("num_gpu 1 is one layer", with_options(num_gpu=1), {"num_gpu"}, "num_gpu=1 offloads 1 layer"),
    ("num_gpu 4 is four layers", with_options(num_gpu=4), {"num_gpu"}, "layer count"),
    ("num_gpu 0 is CPU only, on purpose", with_options(num_gpu=0), set(), ""),
    ("num_gpu 99 is every layer", with_options(num_gpu=99), set(), ""),
    ("num_gpu -1 is automatic", with_options(num_gpu=-1), set(), ""),
    ("num_thread over the cores", with_options(num_thread=4), {"num_thread"}, "num_thread=4 is more than the 2"),
    ("num_thread on a remote server", dataclasses.replace(with_options(num_thread=64), physical_cores=None), set(), ""),
    ("num_batch over num_ctx", with_options(num_batch=1024, num_ctx=512), {"num_batch"}, "num_batch=1024"),
    ("estimated prompt over num_ctx", changed(prompt_tokens=3000), {"num_ctx"}, "an estimate"),
    ("estimated prompt within num_ctx", changed(prompt_tokens=1500), set(), ""),
    # Counted by the server: 1030 is what num_ctx=2048 keeps of a truncated prompt (prompt_fit).
    ("counted prompt at the truncation mark", changed(prompt_tokens=1030, tokens_estimated=False), {"num_ctx"},
     "counted by the server"),
    ("counted prompt well within num_ctx", changed(prompt_tokens=900, tokens_estimated=False), set(), ""),
    ("no num_ctx sent", changed(options={"num_predict": 8}, warmup_options=None, prompt_tokens=99999), set(), ""),
    ("runner options differ between phases", changed(warmup_options={**CLEAN.options, "num_ctx": 4096}),
     {"runner_reload"}, "num_ctx differ"),
    # Unset is the runner default: sending the default in one phase only reloads nothing.
    ("runner default made explicit", changed(options={"num_gpu": -1}, warmup_options={}), set(), ""),
    ("keep_alive shorter than the idle gap", changed(keep_alive_s=30.0, idle_gap_s=60.0), {"keep_alive"},
     "keep_alive of 30 s (the bundled server's default) is shorter than the workload's longest idle gap of 60 s"),
    ("no idle gaps", changed(keep_alive_s=30.0, idle_gap_s=None), set(), ""),
    ("keep_alive forever", changed(keep_alive_s=float("inf"), idle_gap_s=1e6), set(), ""),
    ("keep_alive unknown", changed(keep_alive_s=None, idle_gap_s=1e6), set(), ""),
]  # fmt: skip


@pytest.mark.parametrize(("case", "given", "rules", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_fires_on_its_case_and_only_there(case: str, given: LintInput, rules: set[str], words: str) -> None:
    findings = lint(given)
    assert {f.rule for f in findings.items} == rules
    for finding in findings.items:
        assert words in finding.reason
        assert finding.fix and "; fix: " in finding.line and "\n" not in finding.line
        assert findings.tags()[f"sentinel.lint.{finding.rule}"] == finding.line


def test_every_rule_has_a_case_that_fires() -> None:
    fired = set().union(*(rules for _, _, rules, _ in CASES))
    assert fired == {name for name, _ in RULES}


def test_low_ctx_on_a_two_core_machine_warns_of_num_thread_and_num_gpu() -> None:
    """The motivating config: options=low_ctx sends num_thread 4 and num_gpu 1; on 2 cores decode
    fell from 67 to 32 tokens/s with no warning."""
    cfg = typed_config(variant("options=low_ctx"))
    options = cfg.effective_options()
    given = LintInput(
        options=options,
        warmup_options=options,
        physical_cores=2,
        prompt_tokens=estimated_prompt_tokens(cfg.workload.prompts, cfg.workload.system),
    )
    findings = {f.rule: f for f in lint(given).items}
    assert set(findings) == {"num_thread", "num_gpu"}
    assert findings["num_thread"].fix.startswith("num_thread=2")
    assert "num_gpu=1 offloads 1 layer" in findings["num_gpu"].reason
    # The default options on the same machine: quiet.
    default = typed_config(variant()).effective_options()
    assert lint(dataclasses.replace(given, options=default, warmup_options=default)).items == ()


def test_the_estimate_counts_characters_system_prompt_and_template() -> None:
    assert estimated_prompt_tokens(["x" * 400, "y" * 40], None) == 100 + 4
    assert estimated_prompt_tokens(["x" * 400], "s" * 80) == 120 + 8
    assert counted_prompt_tokens([None, 12, 40, None]) == 40
    assert counted_prompt_tokens([None]) is None


def test_a_part_of_the_table_runs_only_those_rules() -> None:
    given = with_options(num_gpu=1, num_ctx=16)
    assert {f.rule for f in lint(given, rules_named("num_ctx")).items} == {"num_ctx"}
    assert {f.rule for f in lint(given).items} == {"num_gpu", "num_ctx", "num_batch"}


# --- edges that mutation testing found unpinned (scripts/mutation_survivors.md) -------------------


def only(rule: str, given: LintInput) -> Finding | None:
    found = lint(given, rules_named(rule)).items
    return found[0] if found else None


def test_options_of_another_type_are_not_judged() -> None:
    # YAML's `true` is no layer count, and a number sent as text is the server's to refuse.
    assert only("num_gpu", with_options(num_gpu=True)) is None
    assert only("num_ctx", with_options(num_ctx="1024")) is None
    assert only("num_batch", with_options(num_batch=4096, num_ctx="1024")) is None


def test_num_gpu_findings_word_for_word() -> None:
    one, two = only("num_gpu", with_options(num_gpu=1)), only("num_gpu", with_options(num_gpu=2))
    assert one is not None and two is not None
    assert one.reason.startswith("num_gpu=1 offloads 1 layer to the GPU and runs the rest on the CPU")
    assert two.reason.startswith("num_gpu=2 offloads 2 layers to the GPU")
    assert one.fix == (
        "leave num_gpu unset (the server decides), 0 for CPU only, or a layer count such as 99 for every layer"
    )


def test_num_ctx_at_its_boundaries_with_num_keep() -> None:
    # An estimate is judged against the window: equal to num_ctx is too long.
    assert only("num_ctx", changed(prompt_tokens=2048)) is not None
    assert only("num_ctx", changed(prompt_tokens=2047)) is None
    # A count is judged against what a truncated prompt keeps: 1026 of 2048 with num_keep 4.
    counted = changed(prompt_tokens=1026, tokens_estimated=False)
    assert only("num_ctx", counted) is not None
    assert only("num_ctx", dataclasses.replace(counted, prompt_tokens=1025)) is None
    # num_keep 1000 keeps 1524 tokens: 1026 is then no truncation.
    assert only("num_ctx", dataclasses.replace(counted, options={**CLEAN.options, "num_keep": 1000})) is None
    finding = only("num_ctx", changed(prompt_tokens=1500, tokens_estimated=False))
    assert finding is not None and "about 1026 tokens" in finding.reason
    assert finding.fix == "raise num_ctx above twice the longest prompt (e.g. num_ctx=4096) or shorten the prompts"


@pytest.mark.parametrize(("n", "power"), [(1, 1), (2, 2), (3, 4), (5, 8), (1024, 1024), (1025, 2048)])
def test_the_next_power_of_two(n: int, power: int) -> None:
    from sentinel_exp.checks.options import _next_power_of_two

    assert _next_power_of_two(n) == power


def test_num_batch_needs_both_and_may_equal_num_ctx() -> None:
    assert only("num_batch", with_options(num_batch=2048, num_ctx=2048)) is None
    assert only("num_batch", changed(options={"num_batch": 4096}, warmup_options=None)) is None


def test_runner_reload_names_every_option_that_differs() -> None:
    finding = only("runner_reload", changed(warmup_options={**CLEAN.options, "num_ctx": 4096, "num_batch": 64}))
    assert finding is not None and finding.reason.startswith("the runner options num_ctx, num_batch differ")
    assert finding.fix == (
        "send the same runner options (num_ctx, num_batch, num_gpu, main_gpu, num_thread, use_mmap) in both phases"
    )


def test_keep_alive_as_long_as_the_gap_is_enough_and_the_fix_is_half_again() -> None:
    assert only("keep_alive", changed(keep_alive_s=60.0, idle_gap_s=60.0)) is None
    finding = only("keep_alive", changed(keep_alive_s=5.0, idle_gap_s=10.0))
    assert finding is not None
    assert finding.fix == "workload.keep_alive=15 (longer than the gap), or -1 to keep the model loaded"


def test_the_estimate_without_prompts_is_the_template_alone() -> None:
    assert estimated_prompt_tokens([], None) == 4
