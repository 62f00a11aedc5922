"""Sweep presets through the real CLI against the simulated server (exactly known latency):
SLO verdicts and goodput, repeats, resuming a finished sweep, the interleaved order, Optuna."""

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from support.cli import job_runs, mlflow_runs, run_cli
from support.require import require

from sentinel_exp.records import read_records

pytestmark = pytest.mark.slow

SIM = [
    "server=simulated",
    "server.sim.jitter_ms=0",
    "server.sim.load_ms=50",
    "server.sim.ttft_ms=40",
    "server.sim.itl_ms=5",
    "server.sim.tokens=4",
    "telemetry.enabled=false",
    "plots=false",
]
QUICK = ["workload=quick", "workload.requests=2", "workload.warmup=0"]


def job_dirs(cwd: Path) -> list[Path]:
    """The job folders of the sweeps under `cwd`, sweep by sweep, in job order."""
    return sorted((p.parent for p in cwd.glob("multirun/*/*/*/sweep_job.json")), key=lambda p: (p.parent, int(p.name)))


def test_slo_targets_give_verdicts_and_goodput(tmp_path):
    # 10 measured requests after 2 warmup; generation request 5 (the 3rd measured) fails.
    run = [*SIM, "workload.requests=10", "workload.warmup=2", "server.sim.faults={5:http_500}"]
    met = run_cli(tmp_path, *run, "slo.request.ttft_ms=300", "slo.ttft_ms_p50=300", "slo.error_rate=0")
    assert met.returncode == 0, met.output
    none = run_cli(tmp_path, *run, "slo.request.ttft_ms=35", "tracking.experiment=strict")
    assert none.returncode == 0, none.output

    [ok] = mlflow_runs(tmp_path)
    m = ok.data.metrics
    assert m["requests_ok"] == 9 and m["requests_failed"] == 1
    # Every successful request came within 300 ms (the server takes 40; the target leaves room for a
    # request woken late beside the other tests on two cores); the failed one met nothing.
    assert m["slo_request_fraction"] == pytest.approx(0.9)
    assert m["goodput_requests_per_s"] == pytest.approx(9 / m["measured_duration_s"])
    assert m["goodput_requests_per_s"] == pytest.approx(m["requests_per_s"])
    assert m["slo_ttft_ms_p50_pass"] == 1 and m["slo_error_rate_pass"] == 0
    assert ok.data.tags["sentinel.slo"] == "fail" and ok.data.params["slo.ttft_ms_p50"] == "300"
    line = re.search(r"^SLO: .*$", met.stdout, re.M)
    assert line, met.stdout
    shown = re.fullmatch(
        r"SLO: ttft_ms_p50 (\d+(?:\.\d+)?) ≤ 300 pass, error_rate 0\.1 ≤ 0 FAIL; "
        r"per request \(ttft_ms ≤ 300\): 9 of 10 met \(90\.0%\), goodput \d+\.\d\d req/s",
        line.group(0),
    )
    assert shown, line.group(0)
    # The run's own p50 (4 significant digits): the server's 40 ms or more, however busy the machine.
    assert float(shown.group(1)) == pytest.approx(m["ttft_ms_p50"], rel=1e-3) and m["ttft_ms_p50"] >= 40

    # The server cannot answer in 35 ms what takes it 40: no request meets that target.
    [strict] = mlflow_runs(tmp_path, "strict")
    assert strict.data.metrics["slo_request_fraction"] == 0 and strict.data.metrics["goodput_requests_per_s"] == 0
    assert "sentinel.slo" not in strict.data.tags  # no run-level target, no run-level verdict
    assert "per request (ttft_ms ≤ 35): 0 of 10 met (0.0%), goodput 0.00 req/s" in none.stdout


def test_repeat3_then_a_rerun_resumes_and_force_measures_again(tmp_path):
    sweep = ["-m", "options=default,low_ctx", "sweep=repeat3", *SIM, *QUICK]
    first = run_cli(tmp_path, *sweep, timeout_s=400)
    assert first.returncode == 0, first.output
    runs = job_runs(tmp_path)
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    by_hash: dict[str, list[str]] = {}
    for r in runs:
        by_hash.setdefault(r.data.tags["sentinel.config_hash"], []).append(r.data.tags["sentinel.repeat"])
    # Two configurations, each measured three times as repeats 0, 1 and 2 of one config hash.
    assert sorted(sorted(repeats) for repeats in by_hash.values()) == [["0", "1", "2"]] * 2
    # Sequential order: a configuration's repeats back to back, each in its own folder.
    jobs = job_dirs(tmp_path)
    assert [json.loads((d / "sweep_job.json").read_text())["overrides"][0] for d in jobs] == ["options=default"] * 3 + [
        "options=low_ctx"
    ] * 3
    assert len(set(jobs)) == 6 and all((d / "requests.jsonl").exists() for d in jobs)
    measured = {r.data.tags["sentinel.output_dir"]: r for r in runs}

    again = run_cli(tmp_path, *sweep, timeout_s=400)
    assert again.returncode == 0, again.output
    assert len(job_runs(tmp_path)) == 6  # nothing measured again
    done = re.findall(r"^already done \((\w+)\)", again.stdout, re.M)
    assert sorted(done) == sorted(r.info.run_id for r in runs)
    rerun_jobs = job_dirs(tmp_path)[6:]
    for old, new in zip(jobs, rerun_jobs, strict=True):
        outcome = json.loads((new / "sweep_job.json").read_text())
        finished = measured[str(old)]
        # The job points at the finished run and hands the sweeper that run's objective.
        assert outcome["reused_run_id"] == finished.info.run_id
        assert outcome["objective"] == pytest.approx(finished.data.metrics["ttft_ms_p50"])
        summary = json.loads((new / "summary.json").read_text())
        assert summary["run_id"] == finished.info.run_id and summary["already_done"] is True
        assert not (new / "requests.jsonl").exists()
    # The closing table still shows every job with its numbers.
    assert len(re.findall(r"^│ #\d options=\S+ repeat=\d\s+│\s+\d+\.\d ms", again.stdout, re.M)) == 6

    forced = run_cli(tmp_path, "-m", "options=default", "sweep=repeat3", *SIM, *QUICK, "force=true", timeout_s=400)
    assert forced.returncode == 0, forced.output
    assert "already done" not in forced.stdout
    runs = job_runs(tmp_path)
    assert len(runs) == 9
    assert Counter(r.data.tags["sentinel.config_hash"] for r in runs).most_common(1)[0][1] == 6


def test_an_interleaved_study_runs_every_arm_in_balanced_rounds_against_one_server(tmp_path):
    # default and low_ctx differ in runner options: the server reloads the model at every switch.
    result = run_cli(
        tmp_path, "-m", "options=default,low_ctx", *SIM, "workload=quick", "workload.requests=8", "compare.blocks=4"
    )
    assert result.returncode == 0, result.output
    assert "study: 2 arms, 4 rounds of 2 requests per arm" in result.stdout
    jobs = job_dirs(tmp_path)
    records = {d.name: read_records(d / "requests.jsonl") for d in jobs}
    # One server for both arms (the same server settings), its log in the first arm's folder.
    runs = job_runs(tmp_path)
    assert len({r.data.tags["sentinel.server_url"] for r in runs}) == 1
    assert (jobs[0] / "server.log").is_file() and not (jobs[1] / "server.log").exists()
    # Each arm measured 2 requests in each of 4 rounds, and the rounds alternate which arm goes first.
    blocks = {}
    for arm, recs in records.items():
        measured = [r for r in recs if r.measured]
        assert [r.block for r in measured] == [0, 0, 1, 1, 2, 2, 3, 3] and [r.index for r in measured] == list(range(8))
        blocks[arm] = {b: min(r.started_at for r in measured if r.block == b) for b in range(4)}
    firsts = ["0" if blocks["0"][b] < blocks["1"][b] else "1" for b in range(4)]
    assert sorted(firsts[:2]) == ["0", "1"] and sorted(firsts[2:]) == ["0", "1"]  # balanced, pair by pair
    # A switch reloads the model: one uncounted warmup request takes the load, the measured ones stay warm.
    switch_warmups = [r for recs in records.values() for r in recs if r.phase == "warmup" and r.block is not None]
    assert len(switch_warmups) >= 3 and any(r.cold for r in switch_warmups)
    assert not any(r.cold for recs in records.values() for r in recs if r.measured)
    # The arms' prompts agree request for request: the comparison pairs like with like.
    prompts = [[r.prompt_index for r in recs if r.measured] for recs in records.values()]
    assert prompts[0] == prompts[1]

    clash = run_cli(tmp_path, "-m", "sweep=repeat3", "sweep.order=interleaved", *SIM, *QUICK)
    assert clash.returncode == 2 and "cannot set repeat as well" in clash.stderr


def test_a_sequential_sweep_gives_no_significance_verdict(tmp_path):
    # The legacy design under a drifting machine: each job on its own, one run per arm. Even a
    # doubled TTFT gets no verdict: the noise between runs is unknown.
    drift = ["server.sim.drift_pct=30", "server.sim.drift_period_s=20"]
    sweep = ["-m", *SIM, *drift, "server.sim.ttft_ms=40,80", "sweep.order=sequential", "workload.requests=20"]
    result = run_cli(tmp_path, *sweep, "workload.warmup=0")
    assert result.returncode == 0, result.output
    assert "one run per arm: the noise between runs is unknown" in result.stdout
    line = next(line for line in result.stdout.splitlines() if "ttft_ms=80" in line and "%" in line)
    assert "no verdict (one run per arm)" in line and "worse" not in line
    assert "best: none (one run per arm: the noise between runs is unknown)" in result.stdout


def test_optuna_preset_runs_its_trials_and_names_the_best(tmp_path):
    optuna_sweeper = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper")
    require(optuna_sweeper, "the optuna extra is not installed (pip install -e '.[optuna]')")
    result = run_cli(tmp_path, "sweep=optuna", "hydra.sweeper.n_trials=4", *SIM, *QUICK, timeout_s=400)
    assert result.returncode == 0, result.output
    runs = job_runs(tmp_path)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    best = re.search(r"Best parameters: (\{.*\})", result.output)
    assert best and "options.num_ctx" in best.group(1), result.output
    assert re.search(r"Best value: \d+\.\d+", result.output)


def test_an_edited_prompts_file_is_a_new_configuration(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Why is the sky blue?\nWhat is a hash table?\n")
    sweep = ["-m", "workload.prompts_file=prompts.txt", *SIM, *QUICK]
    first = run_cli(tmp_path, *sweep)
    assert first.returncode == 0, first.output

    # Same name, other prompts (that the same file resumes is test_repeat3_then_a_rerun_resumes...).
    prompts.write_text("Why is the sky blue?\nWhen is a hash table slow?\n")
    edited = run_cli(tmp_path, *sweep)
    assert edited.returncode == 0, edited.output
    assert "already done" not in edited.stdout
    runs = sorted(job_runs(tmp_path), key=lambda r: r.info.start_time)
    assert len(runs) == 2
    hashes = [r.data.tags["sentinel.config_hash"] for r in runs]
    digests = [r.data.tags["sentinel.input_sha256.workload.prompts_file"] for r in runs]
    assert hashes[0] != hashes[1] and digests[0] != digests[1]
    assert all(len(d) == 16 for d in digests)
