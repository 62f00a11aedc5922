"""The doctor on the simulated server, one scripted cause per test: the report names that cause
first and verifies its fix as improved; every other hypothesis is refuted, skipped or not testable
here, each with its reason. A healthy configuration gets "nothing wrong", no fix invented. Then the
command line: Ctrl-C writes the report of what finished, and a rerun resumes from MLflow.

Answers are a few words (server.sim.tokens) a few ms apart, so a study takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from support.cli import cli_env, mlflow_runs
from support.doctor import diagnose_here

from sentinel_exp import tags as tag
from sentinel_exp.doctor.hypotheses import Cause, Status
from sentinel_exp.doctor.text import Report, answer

QUICK = ("server.sim.tokens=4", "server.sim.itl_ms=2", "server.sim.ttft_ms=20", "workload.warmup=1")


def statuses(report: Report) -> dict[Cause, Status]:
    return {o.hypothesis.cause: o.status for o in report.outcomes}


def only_confirmed(report: Report, cause: Cause) -> None:
    """`cause` confirmed and named first; no other confirmed; every other with its reason."""
    found = statuses(report)
    assert found[cause] == Status.CONFIRMED, answer(report.evidence, report.outcomes)
    assert [c for c, s in found.items() if s == Status.CONFIRMED] == [cause]
    assert all(s in (Status.REFUTED, Status.SKIPPED, Status.NOT_TESTABLE) for c, s in found.items() if c != cause)
    assert all(o.hypothesis.evidence for o in report.outcomes)
    # The seed's four hypotheses are answered by name, whatever the cause.
    text = "\n".join(_lines(report))
    for name in ("cold start and keep_alive", "context size", "GPU offload", "CPU threads"):
        assert f'the seed\'s "{name}"' in text


def _lines(report: Report) -> list[str]:
    from sentinel_exp.doctor.text import console_lines

    return console_lines(report)


def best_change(report: Report, cause: Cause) -> float:
    [outcome] = [o for o in report.outcomes if o.hypothesis.cause == cause]
    assert outcome.best is not None and outcome.best.row is not None and outcome.best.row.change_pct is not None
    return outcome.best.row.change_pct


@pytest.mark.timing
def test_cold_starts_from_idle_gaps_are_fixed_by_keep_alive(tmp_path):
    report = diagnose_here(
        tmp_path,
        *QUICK,
        "server.keep_alive=0.2s",
        "server.sim.load_ms=150",
        "workload.idle_every=2",
        "workload.idle_s=0.4",
    )
    only_confirmed(report, Cause.LOAD)
    first = answer(report.evidence, report.outcomes)
    assert "% model load (" in first and "requests were cold: idle gaps of 0.4 s exceed keep_alive 0.2 s)" in first
    assert "Fix: keep_alive=-1: TTFT p" in first and first.endswith("measured.")
    assert best_change(report, Cause.LOAD) < -50  # 150 ms loads in about half the requests, gone
    # The deliberate cold run, against the warm one, costs about the load.
    [load] = [o for o in report.outcomes if o.hypothesis.cause == Cause.LOAD]
    probe = next(m for m in load.measured if m.candidate.label.startswith("cold run"))
    assert probe.row is not None and 100 < probe.row.candidate - probe.row.baseline < 400
    text = (tmp_path / "report.md").read_text()
    assert text.splitlines()[2].startswith("**TTFT p") and "% model load (" in text.splitlines()[2]
    assert "workload.keep_alive=-1\n```" in text
    state = json.loads((tmp_path / "doctor.json").read_text())
    assert state["finished"] and set(state["studies"]) == {"load"}


@pytest.mark.timing
def test_long_prompts_with_a_slow_prefill_are_named_and_measured_shorter(tmp_path):
    report = diagnose_here(
        tmp_path,
        *QUICK,
        "server.sim.prefill_ms_per_token=0.5",
        "server.sim.ttft_ms=10",
        "workload.input_tokens=160",
        "workload.unique_prompts=true",
    )
    only_confirmed(report, Cause.PREFILL)
    first = answer(report.evidence, report.outcomes)
    assert first.startswith("TTFT p50 ") and "% prefill (prompts of 16" in first
    assert "Fix (a trade): prompts of " in first
    [prefill] = [o for o in report.outcomes if o.hypothesis.cause == Cause.PREFILL]
    # The rate fitted over the rungs is the one scripted: 0.5 ms per prompt word.
    assert prefill.rate is not None and prefill.rate.low < 0.5 < prefill.rate.high
    assert len(prefill.ladder) == 3
    # The prompts are the user's: no setting is recommended for them; num_ctx cannot be tried here.
    assert "shorter prompts are yours to write" in "\n".join(_lines(report))
    assert statuses(report)[Cause.CONTEXT] == Status.NOT_TESTABLE


@pytest.mark.timing
def test_queueing_beyond_the_slots_is_fixed_by_more_slots_or_less_concurrency(tmp_path):
    report = diagnose_here(tmp_path, *QUICK, "server.sim.parallel=1", "workload.concurrency=4")
    only_confirmed(report, Cause.QUEUE)
    first = answer(report.evidence, report.outcomes)
    assert "% queueing (4 at once, 1 generation slot)" in first
    [queue] = [o for o in report.outcomes if o.hypothesis.cause == Cause.QUEUE]
    improved = {m.candidate.label for m in queue.measured if m.improved}
    assert {"parallel=4", "concurrency=1"} <= improved
    assert queue.best is not None and queue.best.candidate.label == "parallel=4"  # a fix before a trade
    assert "Fix: parallel=4: TTFT p50" in first
    assert "server.sim.parallel=4\n```" in (tmp_path / "report.md").read_text()


@pytest.mark.timing
def test_a_slow_decode_is_named_and_shorter_answers_measured(tmp_path):
    report = diagnose_here(tmp_path, "server.sim.tokens=6", "server.sim.itl_ms=55", "server.sim.ttft_ms=10")
    only_confirmed(report, Cause.DECODE)
    first = answer(report.evidence, report.outcomes)
    assert first.startswith("E2E p50 ") and "% decode (decode runs at " in first
    assert "Fix (a trade): num_predict=3: E2E p50" in first
    # E2E compared as whole answers (not per token): that is what the user waits for.
    assert best_change(report, Cause.DECODE) < -30
    [decode] = [o for o in report.outcomes if o.hypothesis.cause == Cause.DECODE]
    assert "a smaller or more quantized model (model=...)" in decode.hypothesis.named
    # Shorter answers change the work: beside the recommended configuration, not in it.
    lines = _lines(report)
    assert "recommended: the configuration as given: no fix was confirmed" in lines
    assert any(
        line.startswith("trades measured, yours to choose (they change the work): num_predict=3 (-") for line in lines
    )


@pytest.mark.timing
def test_a_healthy_configuration_gets_nothing_wrong_and_no_invented_fix(tmp_path):
    """Long prompts that cost nothing to prefill: the prefill ladder runs (the evidence cannot rule
    it out), and its rungs, all alike but for noise, come out improved in none, each interval ruling
    out a gain of diagnose.min_gain_pct. Every candidate's verdict shares the 5%: a false
    improvement anywhere has at most that chance."""
    report = diagnose_here(
        tmp_path,
        *QUICK,
        "server.sim.jitter_ms=1",
        "workload.requests=40",
        "workload.input_tokens=160",
        "workload.unique_prompts=true",
    )
    found = statuses(report)
    assert found[Cause.PREFILL] == Status.REFUTED
    assert Status.CONFIRMED not in found.values()
    assert "nothing wrong found" in answer(report.evidence, report.outcomes)
    assert "no fix was confirmed" in (tmp_path / "report.md").read_text()


def _wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.timing
def test_ctrl_c_writes_the_report_of_what_finished_and_a_rerun_resumes(tmp_path, migrated_store):
    """Through the command line: the doctor is stopped in its study, says what finished, and the
    same command again finds the stopped doctor in MLflow, reuses its baseline and measures the
    study; both are parent runs of their own, with their runs under them."""
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    args = [
        sys.executable,
        "-m",
        "sentinel_exp",
        "sweep=diagnose",
        "server=simulated",
        *QUICK,
        "server.keep_alive=0.2s",
        "server.sim.load_ms=150",
        "workload.idle_every=2",
        "workload.idle_s=0.4",
        "plots=false",
        "telemetry.enabled=false",
    ]
    first = subprocess.Popen(
        [*args, "hydra.run.dir=first"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_for(lambda: (tmp_path / "first" / "load" / "0" / "requests.jsonl").exists(), 120)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 130, out
    stopped = (tmp_path / "first" / "report.md").read_text()
    assert "Stopped before the plan was done" in stopped
    assert 'model load and cold starts (the seed\'s "cold start and keep_alive"): not run' in stopped
    assert json.loads((tmp_path / "first" / "doctor.json").read_text())["studies"] == {}

    second = subprocess.run(
        [*args, "hydra.run.dir=second"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=240
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"baseline: reused from {tmp_path / 'first' / 'baseline'}" in second.stdout
    assert "Fix: keep_alive=-1: TTFT p" in second.stdout
    assert not (tmp_path / "second" / "baseline").exists()
    runs = mlflow_runs(tmp_path)
    parents = {r.data.tags[tag.OUTPUT_DIR]: r for r in runs if r.data.tags.get(tag.DOCTOR) == "true"}
    stopped_run, resumed = parents[str(tmp_path / "first")], parents[str(tmp_path / "second")]
    assert (stopped_run.info.status, resumed.info.status) == ("KILLED", "FINISHED")
    assert resumed.data.tags[tag.VERDICT].startswith("TTFT p")
    assert resumed.data.tags[tag.DOCTOR_RESUMED_FROM] == str(tmp_path / "first")
    children = [r for r in runs if r.data.tags.get(tag.PARENT_RUN_ID) == resumed.info.run_id]
    assert len(children) == 3  # the study's arms; its baseline is the stopped doctor's child
    baseline = [r for r in runs if r.data.tags.get(tag.PARENT_RUN_ID) == stopped_run.info.run_id]
    assert any(r.info.run_name == "doctor baseline: as given" for r in baseline)
    assert os.path.exists(tmp_path / "second" / "report.md")


def test_mistakes_are_one_error_line_and_no_folder(tmp_path):
    """`-m` with the doctor, and a server that does not answer: exit status 2, one `error:` line,
    no traceback, and no half-made doctor folder left."""
    from support.cli import run_cli

    multirun = run_cli(tmp_path, "-m", "sweep=diagnose", "server=simulated", "tracking.enabled=false")
    assert multirun.returncode == 2, multirun.output
    assert "error: sweep=diagnose is one run that plans and runs its own studies" in multirun.stderr
    absent = run_cli(tmp_path, "sweep=diagnose", "server=ollama", "tracking.enabled=false", "hydra.run.dir=gone")
    assert absent.returncode == 2, absent.output
    assert "error: Ollama does not answer at" in absent.stderr and "Traceback" not in absent.output
    assert not (tmp_path / "gone").exists()
