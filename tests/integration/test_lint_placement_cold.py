"""Option lint, the model's placement read during the measured phase, and deliberate cold starts,
through real runs against the bundled servers (simulated, and embedded where it is installed)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator

import psutil
import pytest
from support.cli import SIM, mlflow_runs, output_dirs, run_cli
from support.require import require, require_module

from sentinel_exp.errors import ConfigError
from sentinel_exp.names import ServerKind
from sentinel_exp.records import read_records
from sentinel_exp.serve.launch import running_server

QUICK = ("workload.requests=3", "workload.warmup=1", "telemetry.enabled=false", "plots=false")
PHYSICAL_CORES = psutil.cpu_count(logical=False) or 0


@pytest.fixture(scope="module")
def as_ollama() -> Iterator[tuple[str, ...]]:
    """The simulated server run as an Ollama the tool did not start: the lint judges the options
    sent to a llama.cpp runner, which the simulated server itself is not."""
    with running_server(ServerKind.simulated, ["--load-ms", "200", "--ttft-ms", "40", "--itl-ms", "5"]) as server:
        yield ("server=ollama", f"server.url={server.url}", "plots=false")


def measured(out):
    return [r for r in read_records(out / "requests.jsonl") if r.phase == "measured"]


@pytest.mark.skipif(not 0 < PHYSICAL_CORES < 4, reason="options=low_ctx's num_thread 4 is over the cores only below 4")
def test_low_ctx_on_this_machine_is_tagged_and_warned_for_num_thread_and_num_gpu(tmp_path, run_experiment, as_ollama):
    result = run_experiment(tmp_path, *as_ollama, "options=low_ctx", *QUICK)
    [run] = mlflow_runs(tmp_path)
    tags = run.data.tags
    assert tags["sentinel.lint.num_thread"].startswith(f"num_thread=4 is more than the {PHYSICAL_CORES} physical cores")
    assert f"; fix: num_thread={PHYSICAL_CORES}" in tags["sentinel.lint.num_thread"]
    assert "num_gpu=1 offloads 1 layer" in tags["sentinel.lint.num_gpu"]
    summary = json.loads((result.output_dir / "summary.json").read_text())
    assert tags["sentinel.lint.num_thread"] in summary["warnings"]
    # Said when the run starts and again under the results; and it still measured.
    assert f"warning: {tags['sentinel.lint.num_thread']}" in result.stderr
    assert "num_thread=4 is more than" in result.stdout.split("TTFT", 1)[1]
    assert run.data.metrics["requests_ok"] == 3
    assert "lint=" not in run.info.run_name


def test_the_simulated_server_is_not_linted_for_options_it_does_not_model(tmp_path, run_experiment):
    """num_thread=4 over 2 cores, num_gpu=1 one layer: facts of a llama.cpp runner. The simulated
    server has no threads or layers, so nothing is judged, and the run says what it does not model."""
    prompt = " ".join(["w"] * 300)  # over what num_ctx=512 keeps, on a server that truncates
    result = run_experiment(tmp_path, *SIM, "options=low_ctx", f"workload.prompts=[{prompt!r}]", *QUICK)
    [run] = mlflow_runs(tmp_path)
    assert [t for t in run.data.tags if t.startswith("sentinel.lint.")] == []
    assert "num_thread=4 is more than" not in result.output and "offloads 1 layer" not in result.output
    [note] = [w for w in json.loads((result.output_dir / "summary.json").read_text())["warnings"] if "model" in w]
    assert note.startswith("the simulated server does not model num_ctx, num_batch, num_thread, num_gpu:")
    assert run.data.metrics["requests_ok"] == 3


def test_a_clean_run_has_no_lint_tags(tmp_path, run_experiment):
    run_experiment(tmp_path, *SIM, *QUICK)
    [run] = mlflow_runs(tmp_path)
    assert not [t for t in run.data.tags if t.startswith("sentinel.lint.")]


def test_lint_off_looks_for_nothing(tmp_path, run_experiment, as_ollama):
    result = run_experiment(tmp_path, *as_ollama, "options=low_ctx", "lint=off", *QUICK)
    [run] = mlflow_runs(tmp_path)
    assert not [t for t in run.data.tags if t.startswith("sentinel.lint.")]
    assert "num_thread=4 is more than" not in result.stdout + result.stderr
    assert run.data.metrics["requests_ok"] == 3


def test_lint_strict_exits_2_before_any_request(tmp_path, as_ollama):
    result = run_cli(tmp_path, *as_ollama, "options.num_gpu=1", "lint=strict", *QUICK)
    assert result.returncode == 2, result.output
    assert "error: lint=strict: 1 option lint finding(s)" in result.stderr
    assert "num_gpu=1 offloads 1 layer" in result.stderr and "Traceback" not in result.output
    # Stopped before any request: no records, and no half-made run folder left behind.
    assert output_dirs(tmp_path) == [] and not list(tmp_path.rglob("requests.jsonl"))
    assert mlflow_runs(tmp_path) == []


def test_the_counted_prompt_length_is_linted_after_warmup(tmp_path, run_experiment, as_ollama):
    """The simulated server counts words: a 300-word prompt fits num_ctx=512 by the character
    estimate (about 150 tokens of 'w '), but the server's count (300 + 3 template words) is over
    the 258 tokens num_ctx=512 keeps of a truncated prompt."""
    prompt = " ".join(["w"] * 300)
    result = run_experiment(tmp_path, *as_ollama, "options.num_ctx=512", f"workload.prompts=[{prompt!r}]", *QUICK)
    [run] = mlflow_runs(tmp_path)
    finding = run.data.tags["sentinel.lint.num_ctx"]
    assert "about 258 tokens" in finding
    assert finding.startswith("the longest prompt is 303 tokens (counted by the server in warmup)")
    assert finding in json.loads((result.output_dir / "summary.json").read_text())["warnings"]


def test_placement_is_read_while_the_model_is_loaded(tmp_path, run_experiment):
    # keep_alive 0: the model is gone once the run ends, so only a read during the phase sees it.
    result = run_experiment(
        tmp_path, *SIM, "server.sim.gpu_fraction=0.5", "server.keep_alive=0.2s", "hardware=h100", *QUICK
    )
    [run] = mlflow_runs(tmp_path)
    assert run.data.metrics["gpu_offload_fraction"] == pytest.approx(0.5)
    assert run.data.metrics["model_size_vram_mb"] == pytest.approx(50.0)
    assert run.data.tags["sentinel.placement"] == "partial"
    summary = json.loads((result.output_dir / "summary.json").read_text())
    [warning] = [w for w in summary["warnings"] if "on the CPU" in w]
    assert warning.startswith("Hardware profile 'h100' expects a GPU, but the server had the model partly on the CPU")
    assert "gpu_offload_fraction 0.50" in warning


@pytest.mark.parametrize(("fraction", "placement"), [(0.0, "cpu"), (1.0, "gpu")])
def test_placement_tag_without_a_gpu_expectation_warns_of_nothing(tmp_path, run_experiment, fraction, placement):
    result = run_experiment(tmp_path, *SIM, f"server.sim.gpu_fraction={fraction}", *QUICK)
    [run] = mlflow_runs(tmp_path)
    assert run.data.tags["sentinel.placement"] == placement
    assert run.data.metrics["gpu_offload_fraction"] == fraction
    assert not [w for w in json.loads((result.output_dir / "summary.json").read_text())["warnings"] if "CPU" in w]


def test_cold_start_makes_every_measured_request_cold(tmp_path, run_experiment):
    cold = run_experiment(tmp_path, *SIM, "workload.cold_start=true", "workload.requests=4", *QUICK[1:])
    records = measured(cold.output_dir)
    assert len(records) == 4 and all(r.cold is True for r in records)
    # The server's 200 ms load, inside each request (one load, not two); the unload before it is
    # not timed: no queue (a load done ahead of the request would put 200 ms there). The ceilings
    # leave room for the other tests this one runs beside on two cores.
    assert all(195 <= r.load_duration_ms <= 380 for r in records)
    assert all(r.ttft_ms >= 240 and r.queue_ms < 150 for r in records)
    assert cold.outcome.metrics["cold_starts"] == 4
    warm = run_experiment(tmp_path, *SIM, "workload.requests=4", *QUICK[1:])
    assert all(r.cold is False and r.load_duration_ms < 150 for r in measured(warm.output_dir))
    assert warm.outcome.metrics["cold_starts"] == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("workload.concurrency=2",), "workload.cold_start=true needs a closed loop of one request at a time"),
        (("workload.rate=2",), "workload.cold_start=true needs a closed loop of one request at a time"),
        (("server=openai", "server.url=http://127.0.0.1:9"), "server=openai has no way to unload a model"),
    ],
)
def test_cold_start_where_it_cannot_hold_is_a_config_error(tmp_path, run_experiment, overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        run_experiment(tmp_path, *SIM, "workload.cold_start=true", *overrides)
    assert caught.value.exit_code == 2


@pytest.mark.embedded
def test_embedded_cold_start_ttft_is_clearly_above_warm(tmp_path, run_experiment, monkeypatch):
    require_module("llama_cpp", "llama-cpp-python is not installed (pip install -e '.[embedded]')")
    from sentinel_exp.serve.engines.registry import bundled_model_path
    from sentinel_exp.serve.threads import THREADS_ENV

    # One llama.cpp thread, as test_embedded.py: spinning threads stall for seconds beside a busy neighbour.
    monkeypatch.setenv(THREADS_ENV, "1")

    require(bundled_model_path(), "the bundled model is not installed (pip install -e '.[embedded]')")
    common = ("server=embedded", "options.num_predict=4", "options.temperature=0", "workload.requests=3")
    common += ("workload.warmup=1", "telemetry.enabled=false", "tracking.enabled=false", "plots=false")
    warm = measured(run_experiment(tmp_path, *common).output_dir)
    cold = measured(run_experiment(tmp_path, *common, "workload.cold_start=true").output_dir)
    assert all(r.ok for r in warm + cold)
    assert all(r.cold is False for r in warm) and all(r.cold is True for r in cold)
    # Each cold request holds a whole model load, and the client's TTFT holds it too: that is what
    # separates the two. Checked within each request, not between the runs' TTFTs: the two runs
    # decode one after the other, and the tests beside this one on two cores can slow one run's
    # llama.cpp several times over and not the other's.
    load_ms = statistics.median(r.load_duration_ms for r in cold)
    assert load_ms > 50 and all(r.load_duration_ms < 0.5 * load_ms for r in warm), (load_ms, warm)
    assert all(r.ttft_ms >= r.load_duration_ms for r in cold), cold
