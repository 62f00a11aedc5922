"""The real `python -m sentinel_exp` in a subprocess, writing to a real MLflow sqlite store: what
only the command line does (Hydra's folders, logging and sweeps, exit codes, signals, --help, the
installed wheel). What a run measures and logs is tested in process, in test_experiment.py."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support.cli import REPO, SIM, cli_env, job_runs, mlflow_runs, output_dirs, run_cli
from support.require import require_module

from sentinel_exp.records import read_records


def test_a_command_line_run_on_the_simulated_server_prints_and_logs(tmp_path):
    # The README's quickstart on the simulated server, and what the CLI adds around the run:
    # Hydra's run folder and log file, the group choices and overrides in the run's tags and name.
    result = run_cli(tmp_path, "server=simulated", "workload=quick")
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.metrics["requests_ok"] == 5
    assert run.info.run_name == "workload=quick smollm2:135m @simulated"
    tags = run.data.tags
    assert tags["sentinel.choice.workload"] == "quick" and tags["sentinel.choice.server"] == "simulated"
    [out] = output_dirs(tmp_path)
    assert Path(tags["sentinel.output_dir"]).resolve() == out.resolve()
    assert len(read_records(out / "requests.jsonl")) == 6  # 5 + 1 warmup
    line = f"run {out}: smollm2:135m against simulated"
    assert line in result.stderr and line in (out / "sentinel_exp.log").read_text()
    assert "TTFT" in result.stdout and run.info.run_id in result.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model=nope",
            "model=nope is not a choice of model (available: llama32_1b, phi3_mini_q4, qwen05, "
            "smollm2_135m, tinyllama)",
        ),
        ("options=low_cxt", "did you mean options=low_ctx?"),
        ("-m model=qwen05,lama32_1b", "model=lama32_1b is not a choice of model"),
        ("options.num_ctx=abc", "options.num_ctx='abc' is not valid: options.num_ctx takes an integer (or null)"),
        ("workload.rate=fast", "workload.rate takes a number (or null)"),
        ("options.foo=1", "options.foo is not a setting"),
        ("workload.requets=3", "workload.requets is not a setting; did you mean workload.requests?"),
        ("+options.foo=1", "options.foo is not an Ollama option"),
        ("workload.requests=0", "workload.requests must be at least 1"),
        ("workload.keep_alive=abc", "workload.keep_alive"),
        ("server.keep_alive=soon", "server.keep_alive: invalid default keep_alive 'soon'"),
        ("server.sim.faults={2:boom}", "server.sim.faults"),
    ],
)
def test_bad_overrides_stop_before_any_request_or_run(tmp_path, override, message):
    *flags, override = override.split()
    result = run_cli(tmp_path, *flags, *SIM, override)
    assert result.returncode == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 16
    assert mlflow_runs(tmp_path) == []
    assert not list(tmp_path.glob("outputs/*/*/requests.jsonl"))


def test_runs_started_together_get_their_own_folders(tmp_path):
    # A fresh directory: both runs also create the same new MLflow store at once.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sentinel_exp", *SIM, "workload=quick", f"workload.requests={n}"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in (3, 4)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    counts = sorted(len(read_records(d / "requests.jsonl")) for d in output_dirs(tmp_path))
    assert counts == [4, 5]  # each run's own records (plus one warmup), nothing mixed
    assert sorted(run.data.metrics["requests_ok"] for run in mlflow_runs(tmp_path)) == [3, 4]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_logs_what_finished_as_killed(tmp_path, sig):
    env = cli_env()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentinel_exp",
            *SIM,
            "server.sim.itl_ms=20",
            "server.sim.tokens=10",
            "workload.requests=500",
            "workload.warmup=1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    jsonl = None
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("outputs/*/*/requests.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 6:
            jsonl = found[0]
            break
        time.sleep(0.1)
    assert jsonl is not None, "the run never got going"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stdout + stderr
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "KILLED"
    records = read_records(jsonl)
    finished_ok = sum(1 for r in records if r.phase == "measured" and r.ok)
    assert run.data.metrics["requests_ok"] == finished_ok >= 5
    assert finished_ok < 500
    assert sig.name in stderr
    assert not psutil.pid_exists(int(run.data.tags["sentinel.server_pid"]))  # the server was stopped too


def test_the_installed_wheel_runs_from_any_directory(tmp_path):
    repo = str(REPO)
    wheel_dir = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(wheel_dir), repo],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = wheel_dir.glob("sentinel_exp-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    assert (site / "sentinel_exp" / "conf" / "config.yaml").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**cli_env(), "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", "import sentinel_exp, sys; print(sentinel_exp.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip().startswith(str(site))
    run = subprocess.run(
        [sys.executable, "-m", "sentinel_exp", "server=simulated", "workload.requests=5"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    [mlrun] = mlflow_runs(work)
    assert mlrun.info.status == "FINISHED" and mlrun.data.metrics["requests_ok"] == 5


@pytest.mark.embedded
@pytest.mark.timing
def test_the_default_run_benchmarks_the_embedded_model(tmp_path):
    require_module("llama_cpp", "llama-cpp-python is not installed (pip install -e '.[embedded]')")
    from sentinel_exp.serve.threads import THREADS_ENV

    # One llama.cpp thread, as in test_embedded.py: two spin at barriers, and with one core taken by
    # a neighbour a request was seen decoding at 1 token/s (120 s for 105 tokens) instead of 20.
    result = run_cli(tmp_path, "workload=quick", timeout_s=600, env={**cli_env(), THREADS_ENV: "1"})
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    m, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED" and tags["sentinel.server_kind"] == "embedded"
    assert m["requests_ok"] == 5 and m["requests_failed"] == 0
    # Tokens per second is CPU speed: 4.3 was seen with other jobs keeping both cores busy.
    assert 1 < m["ttft_ms_p50"] < m["e2e_ms_p50"] and m["output_tokens_per_s"] > 2
    assert m["output_tokens_total"] >= 5 and m["server_prefill_ms_p50"] > 0
    assert tags["sentinel.model_quantization"] == "Q4_1" and len(tags["sentinel.model_digest"]) == 64
    # Real inference: the server child's threads burn CPU and hold the model in memory.
    assert m["server_cpu_pct_mean"] > 20 and m["server_rss_mb_max"] > 80
    assert "starting the embedded llama.cpp server" in result.stderr


def test_sweeps_run_every_job_under_multirun(tmp_path):
    result = run_cli(tmp_path, "sweep=keep_alive_ab", *SIM, "workload=quick")
    assert result.returncode == 0, result.output
    runs = job_runs(tmp_path)
    assert sorted(r.data.params["workload.keep_alive"] for r in runs) == ["-1", "null"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(list(tmp_path.glob("multirun/*/*/*/requests.jsonl"))) == 2
    # Back to back, the model never sits idle for its 5 minutes: keep_alive cannot matter.
    assert [r.data.metrics["cold_starts"] for r in runs] == [0, 0]


@pytest.mark.timing
def test_keep_alive_ab_shows_the_cold_starts_that_keep_alive_saves(tmp_path):
    # Poisson arrivals (2/s) leave idle gaps around short answers (4 tokens, ~60 ms); a 0.15 s
    # server default lets the model expire in about two gaps of three. How many expire depends on
    # timing (slow answers on a busy machine shorten the gaps): the bound asks for two.
    result = run_cli(
        tmp_path,
        "sweep=keep_alive_ab",
        *SIM,
        "workload=poisson",
        "workload.rate=2",
        "workload.requests=10",
        "server.sim.tokens=4",
        "server.keep_alive=0.15s",
    )
    assert result.returncode == 0, result.output
    cold = {r.data.params["workload.keep_alive"]: r.data.metrics["cold_starts"] for r in job_runs(tmp_path)}
    assert cold["-1"] == 0 and cold["null"] >= 2, cold
    # The closing table puts the two jobs side by side, named by what was swept.
    rows = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"│ (#\d keep_alive=\S+)\s+│.*│\s+(\d+) │\s+0 │$", result.stdout, re.M)
    }
    assert rows == {"#0 keep_alive=null": cold["null"], "#1 keep_alive=-1": 0}, result.stdout


def test_a_failing_sweep_job_does_not_stop_the_others(tmp_path):
    result = run_cli(
        tmp_path,
        "-m",
        "workload=quick",
        "model.name=nope:1b,smollm2:135m",
        "server=ollama",
        "server.url=http://127.0.0.1:9",
    )
    assert result.returncode == 2, result.output
    assert result.stderr.count("error: Ollama does not answer") == 2 and "2 sweep job(s) failed" in result.stderr
    ok = run_cli(tmp_path, "-m", *SIM, "workload=quick", "workload.requests=0,2")
    assert ok.returncode == 2 and "1 sweep job(s) failed" in ok.stderr
    assert re.search(r"│ #0 requests=0\s+│.*│ not run │", ok.stdout) and re.search(r"│ #1 requests=2\s+│", ok.stdout)
    [run] = job_runs(tmp_path)
    assert run.data.metrics["requests_ok"] == 2


def test_a_joblib_sweep_reports_every_job_from_worker_processes(tmp_path, sim_server_factory):
    # Jobs run in joblib's worker processes: the closing table and the failed-job list can only
    # come from what each job left in its folder.
    server = sim_server_factory("--model", "qwen2.5:0.5b", "--model", "llama3.2:1b", "--load-ms", "0")
    result = run_cli(
        tmp_path,
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "server=ollama",
        f"server.url={server.url}",
        "workload=quick",
        "model.name=nope:1b,qwen2.5:0.5b,llama3.2:1b",
    )
    assert result.returncode == 2, result.output
    assert "Joblib.Parallel(n_jobs=2" in result.stdout  # Hydra logs to stdout
    # The closing table: a row per job, named by its swept value (Hydra writes a swept value's
    # ':' escaped, nope\\:1b, in the job's overrides).
    rows = {
        name.replace("\\:", ":"): [cell.strip() for cell in cells.split("│")]
        for name, cells in re.findall(r"^│ (#\d name=\S+)\s+│(.*)│$", result.stdout, re.M)
    }
    assert list(rows) == ["#0 name=nope:1b", "#1 name=qwen2.5:0.5b", "#2 name=llama3.2:1b"], result.stdout
    assert rows["#0 name=nope:1b"] == ["-", "-", "-", "-", "-", "not run"]
    assert "1 sweep job(s) failed:" in result.stderr
    assert re.search(r"^  #0 .*model\.name=nope\\?:1b: model 'nope:1b' is not available", result.stderr, re.M)
    runs = job_runs(tmp_path)
    assert sorted(r.data.params["model.name"] for r in runs) == ["llama3.2:1b", "qwen2.5:0.5b"]
    assert all(r.info.status == "FINISHED" and r.data.metrics["requests_ok"] == 5 for r in runs)
    ttft = {r.data.params["model.name"]: r.data.metrics["ttft_ms_p50"] for r in runs}
    # Two jobs at once swap the server's one loaded model: how many cold starts is timing.
    cold = {r.data.params["model.name"]: int(r.data.metrics["cold_starts"]) for r in runs}
    for model, num in (("qwen2.5:0.5b", 1), ("llama3.2:1b", 2)):
        cells = rows[f"#{num} name={model}"]
        assert cells[0] == f"{ttft[model]:.1f} ms" and cells[-2:] == [str(cold[model]), "0"], cells
    # Each job handed the sweeper its TTFT p50 (sweep.objective); the failed one nothing finite.
    outcomes = {}
    for path in tmp_path.glob("multirun/*/*/*/sweep_job.json"):
        outcome = json.loads(path.read_text())
        outcomes[outcome["num"]] = outcome
    assert outcomes[1]["objective"] == pytest.approx(ttft["qwen2.5:0.5b"])
    assert outcomes[2]["objective"] == pytest.approx(ttft["llama3.2:1b"])
    assert "objective" not in outcomes[0]


def test_help_shows_usage_groups_and_settings(tmp_path):
    result = run_cli(tmp_path, "--help")
    assert result.returncode == 0, result.output
    assert result.stdout.startswith("sentinel-exp: declarative latency experiments")
    assert "python -m sentinel_exp -m group=a,b" in result.stdout
    # One line per choice, this run's marked, each described; a sweep preset with its job count.
    assert re.search(
        r"\noptions:\n  \* default +Send no Ollama options.*\n    low_ctx +The seed's proposal", result.stdout
    )
    assert re.search(
        r"\n    keep_alive_ab +keep_alive unset vs -1 \(the seed's before/after\) \(2 jobs\)\n", result.stdout
    )
    assert re.search(r"\n    num_ctx +num_ctx: 512\n", result.stdout)  # the ablation arms, by their values
    # Every setting with its value and its description from the typed config.
    assert re.search(r"\n  workload\.concurrency: 1 +Requests in flight at once\.\n", result.stdout)
    # The companion commands and what the exit statuses mean.
    for command in ("python -m sentinel_exp.compare", "python -m sentinel_exp.sync", "python -m sentinel_exp.serve"):
        assert command in result.stdout
    assert "Exit status: 0 the run finished; 2 a mistake" in result.stdout and "4 measured, but not in" in result.stdout
    assert not (tmp_path / "outputs").exists() and mlflow_runs(tmp_path) == []


def test_help_for_a_preset_shows_it_whole_and_marks_what_differs_from_the_default(tmp_path):
    options = run_cli(tmp_path, "--help", "options=low_ctx")
    assert options.returncode == 0, options.output
    # Where each of the proposal's numbers comes from in the seed, as its file says.
    assert "== options=low_ctx (conf/options/low_ctx.yaml) ==" in options.stdout
    assert 'num_ctx: 512      # hypothesis 3 "num_ctx: 512 (reducir context window)"' in options.stdout
    assert re.search(r"\n\* options\.num_ctx: 512 +Context window .*\[default: null\]\n", options.stdout)
    assert re.search(r"\n  options\.seed: 42 +Sampling seed", options.stdout)  # as the default: unmarked
    sweep = run_cli(tmp_path, "--help", "-m", "options=default,low_ctx", "sweep=repeat3")
    assert sweep.returncode == 0, sweep.output
    assert "== Sweep repeat3: each configuration three times ==" in sweep.stdout
    assert "\n  options: default, low_ctx\n  repeat: 0, 1, 2\n  6 jobs (sweep.order=sequential)\n" in sweep.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_a_negative_server_keep_alive_reaches_the_server(tmp_path):  # "-1m" is not an option flag
    result = run_cli(tmp_path, *SIM, "workload=quick", "server.keep_alive=-1m")
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    assert run.data.metrics["requests_ok"] == 5 and run.data.metrics["cold_starts"] == 0


def test_version_is_printed_once(tmp_path):
    result = run_cli(tmp_path, "--version")
    assert result.returncode == 0 and result.output.count("Hydra 1.3") == 1, result.output


def bundled_server_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "sentinel_exp.serve" in " ".join(c.cmdline())]


@pytest.mark.timing
@pytest.mark.parametrize(
    ("stage", "overrides"),
    [
        # The bundled server is up; warmup's first request waits on a 20 s model load.
        ("warmup", ["server.sim.load_ms=20000", "workload.warmup=1"]),
        # Ctrl-C while the embedded server is still loading its model, before its ready line.
        pytest.param("server start", ["server=embedded"], marks=pytest.mark.embedded),
    ],
)
def test_ctrl_c_during_start_up_ends_at_once_and_leaves_nothing_running(tmp_path, stage, overrides):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp", *SIM, "workload=quick", *overrides],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not bundled_server_children(proc.pid):
        time.sleep(0.05)
    servers = bundled_server_children(proc.pid)
    assert servers, f"no bundled server started ({stage})"
    time.sleep(1.0)  # into the stage: the server loading, or warmup waiting on the load
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert proc.returncode == 130, stdout + stderr
    # Within a second: 0.45 to 0.51 s on a quiet 2-core machine, interpreter teardown and the run
    # closed as KILLED included; the bound leaves room for a busy one, and is far from the 20 s load
    # or the 10 s a server that ignored SIGTERM would get.
    assert took < 2.0, f"{took:.2f} s from Ctrl-C to exit ({stage})"
    assert "Traceback" not in stdout + stderr
    assert not any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in servers)
    assert [run.info.status for run in mlflow_runs(tmp_path) if run.info.status == "RUNNING"] == []


def test_ctrl_c_before_the_measured_phase_leaves_run_json_killed_and_no_mlflow_run(tmp_path):
    # Warmup's first request waits on a 20 s model load: stopped there, the run measured nothing.
    # Its folder says so (run.json KILLED); a run with no measurement is not uploaded to MLflow.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp", *SIM, "workload=quick", "server.sim.load_ms=20000", "workload.warmup=1"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob("outputs/*/*/run.json")):
        time.sleep(0.05)
    time.sleep(1.0)  # into warmup: the first request waits on the load
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stdout + stderr
    [folder] = output_dirs(tmp_path)
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "KILLED" and run["mlflow_run_id"] is None
    assert not (folder / "requests.jsonl").exists() or all(
        r.phase != "measured" for r in read_records(folder / "requests.jsonl")
    )
    assert mlflow_runs(tmp_path) == []


@pytest.mark.parametrize("after_s", [0.5, 1.0])
def test_ctrl_c_in_the_first_second_prints_no_traceback_and_leaves_no_folder(tmp_path, after_s):
    """Ctrl-C while Python imports, Hydra composes or the bundled server starts: exit 130 with one
    line, and no run folder unless a request had been sent (on a fast machine one may have)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp", "server=simulated", "workload.requests=40"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run as a background job inherits SIGINT ignored; the user's terminal never is.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stderr
    for folder in tmp_path.glob("outputs/*/*"):
        records = folder / "requests.jsonl"
        assert records.is_file() and records.read_text().strip(), f"{sorted(p.name for p in folder.iterdir())}"
    assert mlflow_runs(tmp_path) == []


def test_what_a_run_prints_is_rounded_and_in_number(tmp_path):
    """A duration computed from a rate is shown as a person writes it (2.3 s, not 2.30259 s), and
    one request is one request, not "1 requests"."""
    result = run_cli(
        tmp_path, *SIM, "workload.requests=1", "workload.rate=2", "server.keep_alive=1s", "tracking.enabled=false"
    )
    assert result.returncode == 0, result.output
    text = " ".join(result.output.split())
    # -ln(0.01) / 2 per s: the gap one arrival in a hundred exceeds.
    assert (
        "keep_alive of 1 s (the bundled server's default) is shorter than the workload's longest idle gap of 2.3 s:"
        in text
    )
    assert "(mean shares over 1 request)" in text
    assert "2.30259" not in text and "1 requests" not in text
