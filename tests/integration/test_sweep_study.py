"""A sweep is one study: one MLflow parent run, its jobs as children, their arms measured in
interleaved rounds against one server, and a comparison with verdicts on one screen."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.cli import CliResult, mlflow_runs, run_cli

SIM = ("server=simulated", "workload=quick", "workload.warmup=1", "server.sim.jitter_ms=3", "server.sim.load_ms=0")


@pytest.mark.timing
def test_a_sweep_is_a_parent_run_whose_comparison_finds_the_injected_slowdown(tmp_path):
    result = run_cli(tmp_path, "-m", *SIM, "workload.requests=40", "server.sim.ttft_ms=40,48")
    assert result.returncode == 0, result.output
    assert "study: 2 arms, 10 rounds of 4 requests per arm" in result.stdout
    # The candidate's line: 48 ms against 40 ms is about +20%, and the tool says so with its CI.
    [objective] = [line for line in result.stdout.splitlines() if "ttft_ms=48" in line and "%" in line]
    change = float(re.search(r"([+-]\d+\.\d)%", objective).group(1))
    assert "worse" in objective and 15 <= change <= 25, objective
    assert "design: paired rounds, 10 rounds" in result.stdout
    runs = mlflow_runs(tmp_path)
    [parent] = [run for run in runs if run.data.tags.get("sentinel.role") == "sweep"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 2 and len(runs) == 3
    assert parent.data.tags["sentinel.sweep_overrides"].endswith("server.sim.ttft_ms=40,48")
    assert parent.data.tags["sentinel.best_job"] == "ttft_ms=40"  # the faster one, as its verdict says
    assert "best: ttft_ms=40 (every other configuration is worse on TTFT p50)" in result.stdout
    # Each arm is a child run of its own, measured in the study's rounds and tagged with it.
    assert {child.data.tags["sentinel.study_id"] for child in children} == {parent.data.tags["sentinel.sweep_id"]}
    assert {child.data.tags["sentinel.sweep_id"] for child in children} == {parent.data.tags["sentinel.sweep_id"]}
    [compare_md] = tmp_path.glob("multirun/*/*/compare.md")
    text = compare_md.read_text()
    assert "### ttft_ms=48 vs ttft_ms=40" in text and "| metric | ttft_ms=40 | ttft_ms=48 |" in text

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent_files == {"compare.md", "report.md", "ttft_cdfs.png", "ttft_percentiles.png"}
    child_files = {a.path for a in client.list_artifacts(children[0].info.run_id)}
    assert {"report.md", "latency_cdf.png", "timeline.png", "requests.jsonl"} <= child_files

    # The same comparison afterwards, from the folder, from the sweep's MLflow run, and from run ids
    # with the slower configuration as the baseline (so the faster one is the improvement).
    uri = f"--tracking-uri=sqlite:///{tmp_path / 'mlflow.db'}"
    from_folder = run_cli(tmp_path, str(compare_md.parent), module="sentinel_exp.compare")
    assert from_folder.returncode == 0 and "vs ttft_ms=40: TTFT p50" in from_folder.stdout
    assert "paired rounds" in from_folder.stdout
    from_parent = run_cli(tmp_path, "--sweep", parent.info.run_id, uri, module="sentinel_exp.compare")
    assert from_parent.returncode == 0 and "vs ttft_ms=40.0: TTFT p50" in from_parent.stdout
    assert "paired rounds" in from_parent.stdout  # the study's pairing survives the upload
    slow = next(c for c in children if c.data.params["server.sim.ttft_ms"] == "48.0").info.run_id
    ids = [c.info.run_id for c in children]
    flipped = run_cli(tmp_path, *ids, "--baseline", slow, uri, "--out", "flip.md", module="sentinel_exp.compare")
    assert flipped.returncode == 0, flipped.output
    [objective] = [line for line in (tmp_path / "flip.md").read_text().splitlines() if "(objective)" in line]
    assert "| improved" in objective and "ttft_ms=40.0 vs ttft_ms=48.0" in (tmp_path / "flip.md").read_text()
    nothing = run_cli(tmp_path, "--experiment", "nope", uri, module="sentinel_exp.compare")
    assert nothing.returncode == 2 and "no experiment named 'nope'" in nothing.stderr


def test_a_sweep_with_a_failed_job_leaves_its_parent_failed(tmp_path):
    result = run_cli(tmp_path, "-m", *SIM, "workload.requests=0,2")
    assert result.returncode == 2, result.output
    assert "1 sweep job(s) failed" in result.stderr
    [parent] = [run for run in mlflow_runs(tmp_path) if run.data.tags.get("sentinel.role") == "sweep"]
    assert parent.info.status == "FAILED"


def test_ctrl_c_during_a_sweep_compares_what_finished_and_closes_the_parent_as_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from support.cli import cli_env, job_runs

    args = [*SIM, "workload.requests=200", "plots=false", "server.sim.ttft_ms=40,48,56"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp", "-m", *args],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A terminal's Ctrl-C finds SIGINT at its default; a background job would inherit it ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def measured(folder: str) -> int:
        paths = list(tmp_path.glob(f"multirun/*/*/{folder}/requests.jsonl"))
        return sum('"phase":"measured"' in line for line in paths[0].read_text().splitlines()) if paths else 0

    # A few rounds in (every arm measures in every round), and far from the 200 requests' end.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and measured("2") < 12:
        time.sleep(0.1)
    assert measured("2") >= 12, "the rounds never got going"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    # What the rounds measured is compared, paired, and every arm's run is KILLED with its records.
    assert "vs ttft_ms=40: TTFT p50" in stdout and "paired rounds" in stdout
    [parent] = [run for run in mlflow_runs(tmp_path) if run.data.tags.get("sentinel.role") == "sweep"]
    assert parent.info.status == "KILLED"
    assert sorted(run.info.status for run in job_runs(tmp_path)) == ["KILLED", "KILLED", "KILLED"]
    assert all(4 <= measured(folder) < 200 for folder in "012"), [measured(folder) for folder in "012"]


def test_resumed_jobs_take_part_in_the_comparison(tmp_path):
    # One run first; then a sweep whose first arm is that run's configuration ("already done").
    assert run_cli(tmp_path, *SIM, "workload.requests=20").returncode == 0
    sweep = ["-m", *SIM, "workload.requests=20"]
    first = run_cli(tmp_path, *sweep, "telemetry.interval_s=0.1,0.1001,0.1002")
    assert first.returncode == 0, first.output
    assert first.stdout.count("already done (") == 1
    # The reused run is the baseline, as the first configuration, and says why it gets no verdict.
    assert "vs interval_s=0.1: TTFT p50" in first.stdout
    assert "#0 reused an earlier run of the same configuration (already done): it is not paired" in first.stdout
    lines = [line for line in first.stdout.splitlines() if "interval_s=0.100" in line and "%" in line]
    assert len(lines) == 2 and all("no verdict (one run per arm)" in line for line in lines), lines

    # Two arms reused and one new: still one comparison, a report and plots.
    second = run_cli(tmp_path, *sweep, "telemetry.interval_s=0.1,0.1001,0.1003")
    assert second.returncode == 0, second.output
    assert second.stdout.count("already done (") == 2
    assert "vs interval_s=0.1: TTFT p50" in second.stdout and "interval_s=0.1003" in second.stdout
    folders = sorted(tmp_path.glob("multirun/*/*/compare.md"))
    assert len(folders) == 2
    assert {"report.md", "ttft_cdfs.png"} <= {p.name for p in folders[-1].parent.iterdir()}
    # ... and `compare` on that folder agrees.
    again = run_cli(tmp_path, str(folders[-1].parent), module="sentinel_exp.compare")
    assert again.returncode == 0 and "interval_s=0.1003" in again.stdout, again.output


def test_an_aa_study_reports_the_noise_and_later_comparisons_quote_it(tmp_path):
    aa = run_cli(tmp_path, "sweep=aa", *SIM, "workload.requests=20")
    assert aa.returncode == 0, aa.output
    assert "noise of this machine: TTFT p50 ±" in aa.stdout and "% in 300 s" in aa.stdout
    [noise_md] = tmp_path.glob("multirun/*/*/noise.md")
    assert "| TTFT p50 | ±" in noise_md.read_text()
    [parent] = [run for run in mlflow_runs(tmp_path) if run.data.tags.get("sentinel.role") == "sweep"]
    assert parent.data.tags["sentinel.noise_of"].endswith("|simulated|smollm2:135m")
    half = parent.data.metrics["noise_ttft_ms_p50_halfwidth_pct"]
    assert 0 < half < 50 and parent.data.metrics["noise_requests"] == 20

    later = run_cli(tmp_path, "-m", *SIM, "workload.requests=20", "server.sim.ttft_ms=40,44")
    assert later.returncode == 0, later.output
    assert f"ttft_ms_p50 ±{half:.1f}% CI half-width" in later.stdout


def test_a_budgeted_study_stops_when_its_objective_is_decided(tmp_path):
    import json

    result = run_cli(tmp_path, "-m", *SIM, "workload.requests=20", "compare.budget_s=120", "server.sim.ttft_ms=40,60")
    assert result.returncode == 0, result.output
    [study] = tmp_path.glob("multirun/*/*/study.json")
    design = json.loads(study.read_text())
    # +50% is decided at the first look, after the 5 planned rounds, far inside the budget.
    assert design["decided"] is True and design["rounds"] == 5 and len(design["looks"]) == 1
    assert design["looks"][0]["elapsed_s"] < 60 and design["alpha"] < 0.05
    assert "sequential: decided after 1 look(s)" in result.stdout
    assert f"{100 * (1 - design['alpha']):.3g}% CI" in result.stdout  # the look's own level
    line = next(line for line in result.stdout.splitlines() if "ttft_ms=60" in line and "%" in line)
    assert "worse" in line


@pytest.fixture(scope="module")
def gpu_sweep(tmp_path_factory) -> tuple[Path, CliResult]:
    """num_gpu=0 against num_gpu=1 on the simulated server, which does not model num_gpu."""
    cwd = tmp_path_factory.mktemp("gpu_sweep")
    return cwd, run_cli(cwd, "-m", *SIM, "server.sim.jitter_ms=0", "options.num_gpu=0,1", "plots=false")


NOT_MODELLED = "the simulated server does not model num_gpu: its value changes no timing on it"


def test_a_comparison_of_options_the_simulated_server_does_not_model_says_so(gpu_sweep):
    """ "no significant change" must not read as evidence about num_gpu, in the sweep's comparison or a
    later one, from its folder or from MLflow."""
    cwd, result = gpu_sweep
    assert result.returncode == 0, result.output
    assert NOT_MODELLED in result.stdout
    [compare_md] = cwd.glob("multirun/*/*/compare.md")
    assert NOT_MODELLED in compare_md.read_text()
    again = run_cli(cwd, str(compare_md.parent), module="sentinel_exp.compare")
    assert again.returncode == 0 and NOT_MODELLED in again.stdout, again.output
    uri = f"--tracking-uri=sqlite:///{cwd / 'mlflow.db'}"
    from_store = run_cli(cwd, *job_ids(cwd), uri, module="sentinel_exp.compare")
    assert from_store.returncode == 0 and NOT_MODELLED in from_store.stdout, from_store.output
    assert "Downloading artifacts" not in from_store.output  # MLflow's bars, one per run read back


def job_ids(cwd: Path) -> list[str]:
    return [run.info.run_id for run in mlflow_runs(cwd) if run.data.tags.get("sentinel.role") != "sweep"]


def test_compare_refuses_what_selects_nothing_and_says_what_it_selects(gpu_sweep):
    cwd, _ = gpu_sweep
    [compare_md] = cwd.glob("multirun/*/*/compare.md")
    written = compare_md.read_text()
    uri = f"--tracking-uri=sqlite:///{cwd / 'mlflow.db'}"

    def compare(*args: str) -> CliResult:
        return run_cli(cwd, *args, module="sentinel_exp.compare")

    nonsense = compare(str(compare_md.parent), "--objective", "ttft_p50")
    assert nonsense.returncode == 2 and "did you mean ttft_ms_p50?" in nonsense.stderr, nonsense.output
    assert compare_md.read_text() == written  # nothing overwritten
    missing = compare("multirun/nope", uri)
    assert missing.returncode == 2 and "no folder multirun/nope" in missing.stderr, missing.output
    assert "no run" not in missing.stderr
    everything = compare(uri)
    assert everything.returncode == 0, everything.output
    assert "nothing named: comparing every finished run of every experiment" in everything.stderr
    one = compare(job_ids(cwd)[0], uri)
    assert one.returncode == 2 and "the 1 run found is all one configuration" in one.stderr
    assert "((" not in one.output


def test_a_comparison_names_two_settings_that_end_alike_by_their_whole_path(tmp_path):
    for server_keep, request_keep in (("1m", "-1"), ("2m", "null")):
        run = run_cli(tmp_path, *SIM, f"server.keep_alive={server_keep}", f"workload.keep_alive={request_keep}")
        assert run.returncode == 0, run.output
    uri = f"--tracking-uri=sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli(tmp_path, *job_ids(tmp_path), uri, module="sentinel_exp.compare")
    assert result.returncode == 0, result.output
    for name in ("server.keep_alive=2m workload.keep_alive=null", "server.keep_alive=1m workload.keep_alive=-1"):
        assert name in result.stdout, result.stdout  # whole, on one line: the output is piped
