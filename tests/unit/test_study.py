"""A sweep's jobs grouped into configurations, named by what differs, compared with a baseline."""

from __future__ import annotations

import pytest

from sentinel_exp.analysis.comparison import Comparison, RunResult
from sentinel_exp.errors import UserError
from sentinel_exp.sweep.study import (
    ArmSetup,
    MeasuredJob,
    arm_names,
    arms,
    configuration,
    pick_baseline,
    setup_of,
    with_setup_notes,
)

EMPTY = RunResult(records=())


def job(num: int, *overrides: str) -> MeasuredJob:
    return MeasuredJob(num, overrides, EMPTY)


def test_repeats_of_one_configuration_are_the_runs_of_one_arm():
    jobs = [
        job(0, "server=simulated", "options=default", "+repeat=1"),
        job(1, "server=simulated", "options=low_ctx", "+repeat=1"),
        job(2, "server=simulated", "options=default", "+repeat=2"),
        job(3, "server=simulated", "options=low_ctx", "+repeat=2"),
        job(4, "server=simulated", "options=default", "repeat=3"),
    ]
    grouped = arms(jobs)
    assert [(arm.name, len(arm.runs)) for arm in grouped] == [("options=default", 3), ("options=low_ctx", 2)]
    assert configuration(("a=1", "chunk=2", "~b")) == ("a=1", "~b")


def test_names_keep_only_the_swept_values_with_short_keys_and_no_escapes():
    configurations = [
        ("server=simulated", "workload.keep_alive=null", "server.url=http\\://x\\:1"),
        ("server=simulated", "workload.keep_alive=-1", "server.url=http\\://x\\:1"),
    ]
    assert arm_names(configurations) == ["keep_alive=null", "keep_alive=-1"]
    assert arm_names([("a=1",), ("a=1",)]) == ["(all)", "(all)"]


def test_names_keep_the_whole_key_where_two_swept_keys_end_alike():
    configurations = [
        ("server.keep_alive=1s", "workload.keep_alive=null", "+options.num_ctx=512"),
        ("server.keep_alive=5m", "workload.keep_alive=-1", "+options.num_ctx=1024"),
    ]
    assert arm_names(configurations) == [
        "server.keep_alive=1s workload.keep_alive=null num_ctx=512",
        "server.keep_alive=5m workload.keep_alive=-1 num_ctx=1024",
    ]
    grouped = arms([job(0, *configurations[0]), job(1, *configurations[1])])
    assert pick_baseline(grouped, "workload.keep_alive=-1") == 1


def test_the_baseline_is_named_by_a_swept_value_or_is_the_first():
    grouped = arms([job(0, "options=low_ctx"), job(1, "options=default"), job(2, "options=seed_baseline")])
    assert pick_baseline(grouped, None) == 0
    assert pick_baseline(grouped, "options=default") == 1
    with pytest.raises(UserError, match=r"compare.baseline=options=nope matches none of the configurations"):
        pick_baseline(grouped, "options=nope")


def _comparison(baseline: str, candidate: str) -> Comparison:
    return Comparison(baseline, candidate, "ttft_ms_p50", rows=(), notes=("first note",), method="m")


def test_a_comparison_on_the_simulated_server_says_which_differences_it_does_not_model():
    sim = {
        "num_gpu=0": ArmSetup("simulated", {"num_gpu": 0, "seed": 42}),
        "num_gpu=1": ArmSetup("simulated", {"num_gpu": 1, "seed": 42}),
        "seed=1": ArmSetup("simulated", {"num_gpu": 0, "seed": 1}),
    }
    [gpu, seed] = with_setup_notes([_comparison("num_gpu=0", "num_gpu=1"), _comparison("num_gpu=0", "seed=1")], sim)
    assert gpu.notes[0] == "first note"
    assert gpu.notes[1].startswith("the simulated server does not model num_gpu: its value changes no timing on it")
    assert seed.notes == ("first note",)  # a sampling option: nothing the server would not model
    ollama = {name: ArmSetup("ollama", setup.options) for name, setup in sim.items()}
    assert with_setup_notes([_comparison("num_gpu=0", "num_gpu=1")], ollama)[0].notes == ("first note",)


def test_the_setup_is_read_from_a_runs_tags_and_params():
    setup = setup_of({"sentinel.server_kind": "simulated"}, {"sent_options": '{"num_ctx": 512}'})
    assert setup == ArmSetup("simulated", {"num_ctx": 512})
    assert setup_of({}, {"sent_options": "not json"}) == ArmSetup(None, {})


def test_the_best_is_named_only_where_the_objectives_verdicts_name_it() -> None:
    import numpy as np
    from support.studies import Noise, paired_study, single_runs

    from sentinel_exp.analysis.comparison import compare
    from sentinel_exp.sweep.study import Best, best_arm

    quiet = Noise(0.01, 0.01, 1.0)

    def versus(effect: float, seed: int, name: str):
        base, cand = paired_study(np.random.default_rng(seed), effect=effect, noise=quiet)
        return compare(base, type(cand)(name, cand.runs))

    faster, fastest, same = versus(0.8, 1, "fast"), versus(0.6, 2, "fastest"), versus(1.0, 3, "same")
    assert best_arm("base", [faster, same, fastest]).name == "fastest"  # the largest improvement
    slower = [versus(1.3, 4, "slow"), versus(1.5, 5, "slower")]
    assert best_arm("base", slower).name == "base"  # every candidate is worse
    mixed = best_arm("base", [same, slower[0]])
    assert mixed == Best(None, "no configuration is better than base on TTFT p50; worse: slow")
    assert best_arm("base", [same]) == Best(
        None, "no configuration differs significantly from the baseline on the objective"
    )
    # The lowest p50 of a single run per arm is no winner: nothing says the runs differ.
    alone = best_arm("base", [compare(*single_runs(np.random.default_rng(6), effect=0.5))])
    assert alone.name is None and "one run per arm" in alone.why
