"""A run that measured nothing, or too many failures, or a server that died: FAILED, exit status 3,
one message, and what finished kept (the simulated server scripted to fail, a real server killed)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from support.cli import mlflow_runs, run_cli

from sentinel_exp.errors import RunFailed
from sentinel_exp.records import read_records

SIM = ["server=simulated", "server.sim.jitter_ms=0", "server.sim.load_ms=0", "telemetry.enabled=false", "plots=false"]


def test_a_run_whose_every_request_failed_is_failed_with_exit_3(tmp_path):
    # Each request's first token comes after the read timeout: all ReadTimeout.
    result = run_cli(
        tmp_path, *SIM, "server.sim.ttft_ms=600", "workload.timeout_s=0.2", "workload=quick", "workload.warmup=0"
    )
    assert result.returncode == 3, result.output
    assert "no measured request succeeded: 5 failed (ReadTimeout 5)" in result.stderr
    assert "Traceback" not in result.output
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED" and run.data.metrics["requests_failed"] == 5
    [summary_path] = tmp_path.glob("outputs/*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "FAILED" and summary["failure"].startswith("no measured request succeeded")


def test_a_timeout_no_request_can_meet_stops_after_the_warmup(tmp_path):
    # 100,000 requests that would each wait out the timeout: the warmup shows it, and the run stops there.
    result = run_cli(tmp_path, *SIM, "server.sim.ttft_ms=600", "workload.timeout_s=0.2", "workload.requests=100000")
    assert result.returncode == 3, result.output
    assert "every warmup request (2) timed out after workload.timeout_s=0.2 s" in result.stderr
    assert "raise workload.timeout_s" in result.stderr and "Traceback" not in result.output
    [records] = tmp_path.glob("outputs/*/*/requests.jsonl")
    assert [(r.phase, r.error_class) for r in read_records(records)] == [("warmup", "ReadTimeout")] * 2
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED"


def test_an_error_rate_over_the_limit_stops_the_run_early(tmp_path, run_experiment):
    faults = "{" + ",".join(f"{n}:http_500" for n in range(3, 40)) + "}"  # from the 1st measured request on
    with pytest.raises(RunFailed, match=r"error rate 100% after 6 measured requests is above .*max_error_rate=0.2"):
        run_experiment(
            tmp_path,
            *SIM,
            f"server.sim.faults={faults}",
            "workload.requests=200",
            "workload.max_error_rate=0.2",
            "workload.error_rate_min_requests=6",
            "hydra.run.dir=run",
        )
    measured = [r for r in read_records(tmp_path / "run" / "requests.jsonl") if r.measured]
    assert len(measured) == 6  # concurrency 1: it stopped on the 6th
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED"


def test_a_server_that_dies_mid_run_stops_it_within_seconds(tmp_path, run_experiment, sim_server_factory):
    server = sim_server_factory("--load-ms", "0", "--ttft-ms", "5", "--itl-ms", "1", "--tokens", "4")
    records = tmp_path / "run" / "requests.jsonl"
    killed_at: list[float] = []

    def kill_after_ten_measured() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if records.exists() and records.read_text().count('"phase":"measured"') >= 10:
                server.process.kill()
                killed_at.append(time.monotonic())
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_ten_measured)
    killer.start()
    with pytest.raises(RunFailed, match=rf"the server at {server.url} stopped answering: 5 requests in a row"):
        run_experiment(
            tmp_path,
            "server=ollama",
            f"server.url={server.url}",
            "workload.requests=100000",
            "workload.concurrency=2",
            "telemetry.enabled=false",
            "plots=false",
            "hydra.run.dir=run",
        )
    ended = time.monotonic()
    killer.join()
    # From the kill to the end of the run, the failed run's MLflow upload included: seconds, not the
    # minutes of running out 100000 requests (the record counts below pin where it stopped).
    assert killed_at and ended - killed_at[0] < 20.0
    measured = [r for r in read_records(records) if r.measured]
    failed = [r for r in measured if not r.ok]
    assert 10 <= len(measured) < 100 and len(failed) <= 10  # a handful of errors, not thousands
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED"
