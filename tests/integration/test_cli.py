"""The real `python -m sentinel_exp` in a subprocess, writing to a real MLflow sqlite store."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import cli_env, mlflow_runs, output_dirs, run_cli

from sentinel_exp.records import read_records

pytestmark = pytest.mark.slow

SIM = [
    "server=simulated",
    "server.sim.jitter_ms=0",
    "server.sim.load_ms=200",
    "server.sim.ttft_ms=40",
    "server.sim.itl_ms=5",
    "telemetry.interval_s=0.05",
]


def test_simulated_run_logs_exact_latencies_to_mlflow(tmp_path):
    result = run_cli(tmp_path, *SIM, "workload.requests=20", "workload.warmup=2", "server.sim.tokens=10")
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert abs(m["ttft_ms_p50"] - 40.0) <= 2.0
    assert abs(m["itl_ms_p50"] - 5.0) <= 1.0
    assert m["requests_ok"] == 20 and m["requests_failed"] == 0 and m["error_rate"] == 0
    # The cold load happened in warmup, which stays out of the statistics.
    assert m["cold_starts"] == 0 and m["ttft_ms_max"] < 100
    for name in ("ttfb", "ttft", "itl", "tpot", "e2e"):
        assert {f"{name}_ms_{s}" for s in ("p50", "p90", "p95", "p99", "mean", "min", "max")} <= set(m)
    assert m["throughput_tokens_per_s"] > 0 and m["output_tokens_per_s"] == pytest.approx(200, rel=0.1)

    params = run.data.params
    assert params["server.sim.ttft_ms"] == "40.0" and params["model.name"] == "smollm2:135m"
    assert params["workload.requests"] == "20"
    tags = run.data.tags
    assert tags["sentinel.server_kind"] == "simulated" and len(tags["sentinel.config_hash"]) == 16
    assert tags["sentinel.model_digest"] and tags["sentinel.ollama_version"].endswith("simulated")
    assert run.info.run_name.startswith("smollm2_135m-default-default@simulated")

    [out] = output_dirs(tmp_path)
    records = read_records(out / "requests.jsonl")
    assert [r.phase for r in records].count("warmup") == 2 and len(records) == 22
    # Prompts cycle on from where warmup stopped: the first measured one is not the one just cached.
    assert [r.prompt_index for r in records[:6]] == [0, 1, 2, 3, 0, 1]
    assert records[0].cold is True and records[0].load_duration_ms >= 195  # first warmup request loaded
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == run.info.run_id and summary["status"] == "FINISHED"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"requests.jsonl", "config.yaml", "summary.json", "server.log"} <= artifacts
    assert "TTFT" in result.stdout and run.info.run_id in result.stdout

    # Telemetry: the server child's CPU and memory, sampled every 50 ms through the measured phase.
    assert m["server_rss_mb_max"] > 5 and m["server_cpu_pct_max"] > 0
    assert m["telemetry_samples"] >= 0.5 * summary["metrics"]["measured_duration_s"] / 0.05
    assert 0 < m["cpu_pct_mean"] <= 100
    assert tags["sentinel.server_pid"].isdigit() and tags["sentinel.gpu_available"] in ("true", "false")
    assert tags["sentinel.hardware_match"] == "true" and tags["sentinel.cpu_cores_logical"].isdigit()
    history = client.get_metric_history(run.info.run_id, "server_rss_mb")
    assert len(history) >= m["telemetry_samples"] and [h.step for h in history] == list(range(len(history)))


def test_a_cold_first_measured_request_shows_the_load(tmp_path):
    result = run_cli(tmp_path, *SIM, "workload.requests=5", "workload.warmup=0", "tracking.enabled=false")
    assert result.returncode == 0, result.output
    records = read_records(output_dirs(tmp_path)[0] / "requests.jsonl")
    assert records[0].cold is True and 195 <= records[0].load_duration_ms <= 260
    assert records[0].ttft_ms >= 240  # load 200 ms + ttft 40 ms
    assert all(r.cold is False for r in records[1:])
    assert mlflow_runs(tmp_path) == []


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
        (
            "tracking.uri=http://127.0.0.1:9",
            "MLflow tracking server at tracking.uri='http://127.0.0.1:9' does not answer",
        ),
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


def test_a_run_never_writes_into_another_runs_folder(tmp_path):
    first = run_cli(tmp_path, *SIM, "workload=quick", "hydra.run.dir=fixed")
    assert first.returncode == 0, first.output
    second = run_cli(tmp_path, *SIM, "workload=quick", "workload.requests=7", "hydra.run.dir=fixed")
    assert second.returncode == 2
    assert "already holds the records of another run" in second.stderr and "Traceback" not in second.output
    assert len(read_records(tmp_path / "fixed" / "requests.jsonl")) == 6  # 5 + 1 warmup, the first run's
    assert len(mlflow_runs(tmp_path)) == 1


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


def test_scripted_failures_give_failed_records_and_a_finished_run(tmp_path):
    result = run_cli(
        tmp_path,
        *SIM,
        "workload.requests=10",
        "workload.warmup=1",
        "workload.timeout_s=2",
        "server.sim.faults={3:http_500,5:error_midstream,7:cut_stream,9:malformed}",
    )
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert m["requests_ok"] == 6 and m["requests_failed"] == 4 and m["error_rate"] == pytest.approx(0.4)
    records = read_records(output_dirs(tmp_path)[0] / "requests.jsonl")
    failed = {r.error_class for r in records if not r.ok}
    assert failed == {"HTTP500", "ServerError", "RemoteProtocolError", "MalformedChunk"}
    assert abs(m["ttft_ms_p50"] - 40) <= 2  # failures stay out of the latency statistics


def test_hardware_mismatch_warns_and_tags_the_run(tmp_path):
    result = run_cli(tmp_path, *SIM, "workload.requests=3", "hardware=h100")
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    if run.data.tags["sentinel.gpu_name"].find("H100") < 0:
        assert run.data.tags["sentinel.hardware_match"] == "false"
        assert "Hardware profile 'h100' expects a GPU" in result.stderr
        # Said again under the results, where it cannot scroll away.
        assert "warning: Hardware profile 'h100' expects a GPU" in result.stdout.split("TTFT", 1)[1]
    assert run.data.tags["sentinel.hardware_profile"] == "h100"


def test_unreachable_server_is_one_clear_message(tmp_path):
    result = run_cli(tmp_path, "server=ollama", "server.url=http://127.0.0.1:9")
    assert result.returncode == 2
    assert "Ollama does not answer at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.output and mlflow_runs(tmp_path) == []


def test_a_bad_ollama_host_is_one_clear_message(tmp_path):
    result = run_cli(tmp_path, "server=ollama", env=cli_env(OLLAMA_HOST="http://[bad"))
    assert result.returncode == 2, result.output
    assert "OLLAMA_HOST is not a valid host or URL: 'http://[bad'" in result.stderr
    assert "Traceback" not in result.output and mlflow_runs(tmp_path) == []


def test_server_url_without_a_scheme_reaches_the_server(tmp_path, sim_server_factory):
    server = sim_server_factory("--load-ms", "0")
    bare = server.url.removeprefix("http://")
    result = run_cli(tmp_path, "server=ollama", f"server.url={bare}", "workload=quick")
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    assert run.data.tags["sentinel.server_url"] == server.url
    assert run.data.metrics["requests_ok"] == 5  # workload=quick


def test_unknown_model_names_what_the_server_has(tmp_path, sim_server_factory):
    server = sim_server_factory("--model", "qwen2.5:0.5b", "--model", "llama3.2:1b")
    result = run_cli(tmp_path, "server=ollama", f"server.url={server.url}", "model=tinyllama")
    assert result.returncode == 2
    assert "model 'tinyllama' is not available" in result.stderr
    assert "llama3.2:1b, qwen2.5:0.5b" in result.stderr and "ollama pull tinyllama" in result.stderr
    assert mlflow_runs(tmp_path) == []


def test_auto_prefers_ollama_when_it_answers(tmp_path, sim_server_factory):
    server = sim_server_factory("--load-ms", "0")
    host = server.url.removeprefix("http://")
    result = run_cli(tmp_path, "workload=quick", env=cli_env(OLLAMA_HOST=host))
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    assert run.data.tags["sentinel.server_kind"] == "ollama" and run.data.tags["sentinel.server_url"] == server.url
    assert f"Ollama {run.data.tags['sentinel.ollama_version']} answers at {server.url}" in result.stderr


def test_auto_without_ollama_or_a_servable_model_names_both_ways(tmp_path):
    result = run_cli(tmp_path, "model=qwen05")
    assert result.returncode == 2
    message = result.stderr
    assert "Ollama does not answer at http://127.0.0.1:9" in message
    assert "ollama pull qwen2.5:0.5b" in message and "model=smollm2_135m" in message
    from sentinel_exp.serve.engines import registry

    installed = registry.llama_cpp_missing() is None and registry.bundled_model_path() is not None
    assert ("pip install 'sentinel-exp[embedded]'" in message) is not installed  # no advice to redo it
    assert "Traceback" not in result.output and mlflow_runs(tmp_path) == []


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
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
def test_the_default_run_benchmarks_the_embedded_model(tmp_path):
    pytest.importorskip("llama_cpp")
    result = run_cli(tmp_path, "workload=quick", timeout_s=600)
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    m, tags = run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED" and tags["sentinel.server_kind"] == "embedded"
    assert m["requests_ok"] == 5 and m["requests_failed"] == 0
    assert 1 < m["ttft_ms_p50"] < m["e2e_ms_p50"] and m["output_tokens_per_s"] > 10
    assert m["output_tokens_total"] >= 5 and m["server_prefill_ms_p50"] > 0
    assert tags["sentinel.model_quantization"] == "Q4_1" and len(tags["sentinel.model_digest"]) == 64
    # Real inference: the server child's threads burn CPU and hold the model in memory.
    assert m["server_cpu_pct_mean"] > 20 and m["server_rss_mb_max"] > 80
    assert "starting the embedded llama.cpp server" in result.stderr


def test_embedded_without_the_extra_says_which_extra_to_install(tmp_path):
    # llama_cpp made unimportable in the CLI process, as on a machine without the extra.
    code = (
        "import sys; sys.modules['llama_cpp'] = None; "
        "sys.argv = ['sentinel_exp', 'server=embedded']; from sentinel_exp.app import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "pip install 'sentinel-exp[embedded]'" in done.stderr and "Traceback" not in done.stderr
    assert mlflow_runs(tmp_path) == []


@pytest.mark.embedded
def test_a_registered_gguf_is_served_under_its_tag(tmp_path):
    pytest.importorskip("llama_cpp")
    from sentinel_exp.serve.engines.registry import bundled_model_path

    gguf = bundled_model_path()
    if gguf is None:
        pytest.skip("bundled model not installed")
    result = run_cli(
        tmp_path,
        "server=embedded",
        "model.name=mysmol:q4",
        f"server.models={{mysmol\\:q4:{gguf}}}",
        "workload=quick",
        "workload.requests=2",
        "options.num_predict=8",
        timeout_s=600,
    )
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    assert run.data.params["model.name"] == "mysmol:q4" and run.data.metrics["requests_ok"] == 2
    assert run.data.metrics["output_tokens_total"] == 16


def test_sweeps_run_every_job_under_multirun(tmp_path):
    result = run_cli(tmp_path, "sweep=keep_alive_ab", *SIM, "workload=quick")
    assert result.returncode == 0, result.output
    runs = mlflow_runs(tmp_path)
    assert sorted(r.data.params["workload.keep_alive"] for r in runs) == ["-1", "null"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(list(tmp_path.glob("multirun/*/*/*/requests.jsonl"))) == 2
    # Back to back, the model never sits idle for its 5 minutes: keep_alive cannot matter.
    assert [r.data.metrics["cold_starts"] for r in runs] == [0, 0]


def test_keep_alive_ab_shows_the_cold_starts_that_keep_alive_saves(tmp_path):
    # Poisson arrivals (2/s) leave idle gaps around short answers (4 tokens, ~60 ms); a 0.15 s
    # server default lets the model expire in about two gaps of three.
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
    cold = {r.data.params["workload.keep_alive"]: r.data.metrics["cold_starts"] for r in mlflow_runs(tmp_path)}
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
    [run] = mlflow_runs(tmp_path)
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
    runs = mlflow_runs(tmp_path)
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
    assert "options: default, low_ctx, seed_baseline" in result.stdout
    # Every setting with its value and its description from the typed config.
    assert re.search(r"\n  workload\.concurrency: 1 +Requests in flight at once\.\n", result.stdout)
    assert not (tmp_path / "outputs").exists() and mlflow_runs(tmp_path) == []


def test_server_log_explains_every_cold_start(tmp_path):
    result = run_cli(tmp_path, *SIM, "workload=quick", "workload.keep_alive=0")
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    assert run.data.metrics["cold_starts"] == 5  # every measured request found the model unloaded
    lines = (output_dirs(tmp_path)[0] / "server.log").read_text().splitlines()
    loads = [line for line in lines if " loaded smollm2:135m in " in line]
    unloads = [line for line in lines if line.endswith("unloaded smollm2:135m (keep_alive 0)")]
    assert len(loads) == len(unloads) == 6  # warmup + 5 measured


def test_a_busy_bystander_is_measured_and_warned_about(tmp_path):
    # Spinners on half the cores: well over the quarter of the machine that warrants a warning.
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(1, psutil.cpu_count() // 2))
    ]
    try:
        result = run_cli(tmp_path, *SIM, "workload.requests=30", "workload.warmup=1")
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    assert run.data.metrics["other_cpu_pct_mean"] > 50 * len(spinners)
    assert run.data.tags["sentinel.contended"] == "true"
    assert "warning: other processes kept" in result.stdout
    summary = json.loads((output_dirs(tmp_path)[0] / "summary.json").read_text())
    assert any(w.startswith("other processes kept") for w in summary["warnings"])


def test_artifacts_go_beside_the_database_named_in_tracking_uri(tmp_path):
    result = run_cli(tmp_path, *SIM, "workload=quick", "tracking.uri=sqlite:///results/lab.db")
    assert result.returncode == 0, result.output
    assert (tmp_path / "results" / "lab.db").is_file() and not (tmp_path / "mlruns").exists()
    [jsonl] = (tmp_path / "results" / "mlruns").glob("*/artifacts/requests.jsonl")
    assert len(read_records(jsonl)) == 6


def test_a_negative_server_keep_alive_reaches_the_server(tmp_path):  # "-1m" is not an option flag
    result = run_cli(tmp_path, *SIM, "workload=quick", "server.keep_alive=-1m")
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    assert run.data.metrics["requests_ok"] == 5 and run.data.metrics["cold_starts"] == 0


def test_version_is_printed_once(tmp_path):
    result = run_cli(tmp_path, "--version")
    assert result.returncode == 0 and result.output.count("Hydra 1.3") == 1, result.output


def test_waiting_for_a_slot_is_queueing_not_a_cold_start(tmp_path):
    # One generation slot, four clients: each request waits for about three others (~85 ms each).
    result = run_cli(
        tmp_path,
        *SIM,
        "server.sim.parallel=1",
        "server.sim.tokens=10",
        "workload.concurrency=4",
        "workload.requests=12",
        "workload.warmup=1",
    )
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    m = run.data.metrics
    assert m["cold_starts"] == 0 and m["server_load_ms_max"] < 50
    assert m["server_queue_ms_p50"] > 150 and m["ttft_ms_p50"] > 150
    assert m["server_prefill_ms_p50"] == pytest.approx(40, abs=5)  # the prefill clock starts with the slot
    assert "server queue" in result.stdout


def test_openai_server_gets_what_its_api_can_carry_and_the_rest_is_named(tmp_path, sim_server_factory):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "20", "--itl-ms", "2")
    result = run_cli(
        tmp_path,
        "server=openai",
        f"server.url={server.url}",
        "options=low_ctx",
        "options.num_predict=8",
        "workload=quick",
        "workload.keep_alive=-1",
    )
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    m = run.data.metrics
    assert m["requests_ok"] == 5 and m["output_tokens_total"] == 5 * 8  # counted from `usage`
    assert abs(m["ttft_ms_p50"] - 20) <= 3
    assert json.loads(run.data.params["sent_options"]) == {"num_predict": 8, "seed": 42, "temperature": 0.7}
    assert run.data.tags["sentinel.api"] == "openai" and run.data.tags["sentinel.options_not_sent"] == "true"
    warning = "the OpenAI API has no field for num_batch, num_ctx, num_gpu, num_thread, keep_alive: not sent"
    assert warning in result.stderr and warning in result.stdout.split("TTFT", 1)[1]


@pytest.mark.parametrize("api", ["generate", "openai"])
def test_an_ollama_server_spoken_to_in_generate_or_openai_still_says_what_the_model_is(tmp_path, api):
    result = run_cli(
        tmp_path, *SIM, f"workload.api={api}", "workload=quick", "options=low_ctx", "options.num_predict=6"
    )
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    m, tags = run.data.metrics, run.data.tags
    assert m["requests_ok"] == 5 and m["output_tokens_total"] == 5 * 6
    assert abs(m["ttft_ms_p50"] - 40) <= 3
    assert tags["sentinel.api"] == api
    # Model facts and placement come from the server's own API whichever API the requests speak.
    assert tags["sentinel.model_digest"] and tags["sentinel.ollama_version"].endswith("simulated")
    assert m["model_size_mb"] > 0 and "gpu_offload_fraction" in m
    records = read_records(output_dirs(tmp_path)[0] / "requests.jsonl")
    assert {r.api for r in records} == {api}
    assert all(r.total_duration_ms is not None for r in records) == (api == "generate")
    assert ("sentinel.options_not_sent" in tags) == (api == "openai")


def test_an_open_loop_that_outruns_its_clients_is_flagged(tmp_path):
    result = run_cli(
        tmp_path,
        *SIM,
        "workload=poisson",
        "workload.rate=50",
        "workload.concurrency=2",
        "workload.requests=20",
        "server.sim.tokens=10",
    )
    assert result.returncode == 0, result.output
    [run] = mlflow_runs(tmp_path)
    assert run.data.metrics["queue_ms_p95"] > 200  # ~85 ms per request, two at a time, 50/s offered
    assert "warning: arrivals at workload.rate=50/s outran 2 concurrent client(s)" in result.stdout
    assert "client queue" in result.stdout
