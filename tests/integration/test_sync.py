"""The run folder is the source of truth and MLflow an upload of it: a tracking server down at the
start or stopped mid-run, a runner killed with SIGKILL, a sweep killed midway; then
`python -m sentinel_exp.sync` or the next run puts the store right. Real processes throughout:
the CLI, `mlflow server`, the simulated server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from support.cli import SIM, cli_env, mlflow_runs, output_dirs, run_cli
from support.mlflow_server import MlflowServer, free_port

from sentinel_exp.records import read_records
from sentinel_exp.store.run_folder import Runner, boot_start

QUICK = [*SIM, "workload=quick", "telemetry.enabled=false"]
# About 40 ms a request one at a time: 400 requests are 16 s, time enough to stop things midway.
LONG = [*SIM, "workload.warmup=1", "workload.requests=400", "server.sim.tokens=4", "telemetry.enabled=false"]
# Still measuring for seconds after the store is stopped (about 2 s), and over sooner than LONG.
MID_RUN = [arg.replace("requests=400", "requests=200") for arg in LONG]


def _run_json(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str) -> list:
    client = _client(uri)
    experiment = client.get_experiment_by_name("sentinel-exp")
    return [] if experiment is None else list(client.search_runs([experiment.experiment_id]))


def _wait_for_records(root: Path, pattern: str, count: int, proc: subprocess.Popen, timeout_s: float = 60) -> Path:
    """The records file of the run `proc` is measuring, once it holds `count` lines."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for path in root.glob(pattern):
            if len(path.read_text().splitlines()) >= count:
                return path
        time.sleep(0.1)
    raise TimeoutError(f"no {count} records under {root} within {timeout_s} s")


def _sync(cwd: Path, *args: str, columns: int = 1000) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentinel_exp.sync", *args],
        cwd=cwd,
        env=cli_env(COLUMNS=str(columns)),  # 1000: its table's messages unwrapped, however long the folder names
        capture_output=True,
        text=True,
        timeout=180,
    )


def _kill_tree(proc: subprocess.Popen) -> list[psutil.Process]:
    """SIGKILL to the runner alone, as `kill -9 <pid>` does; returns its children (the bundled
    server), which the test then waits for or stops itself."""
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return children


def test_a_tracking_server_down_at_the_start_then_sync_uploads_the_whole_run_once(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    result = run_cli(tmp_path, *QUICK, f"tracking.uri={uri}")
    assert result.returncode == 4, result.output
    assert "does not answer" in result.stderr and "Measuring anyway" in result.stderr
    [folder] = output_dirs(tmp_path)
    assert f"python -m sentinel_exp.sync {folder}" in result.stderr
    local = _run_json(folder)
    assert local["status"] == "FINISHED" and local["mlflow_run_id"] is None
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["metrics"]["requests_ok"] == 5
    # Still down: the store did not take it, so 4 (try again later), not 2 (cannot be synced as it is).
    down = _sync(tmp_path, str(folder))
    assert down.returncode == 4, down.stdout + down.stderr
    assert "not logged" in down.stdout and "does not answer" in down.stdout and "Traceback" not in down.stderr

    with MlflowServer(tmp_path / "store", port=port):
        first = _sync(tmp_path, str(folder))
        assert first.returncode == 0, first.stdout + first.stderr
        assert "uploaded" in first.stdout
        again = _sync(tmp_path, str(tmp_path / "outputs"))  # the folder above it finds the same run
        assert again.returncode == 0 and "already logged" in again.stdout, again.stdout + again.stderr
        [run] = _runs(uri)
        client = _client(uri)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert run.info.status == "FINISHED"
    # The original times, not the time of the upload.
    assert (run.info.start_time, run.info.end_time) == (local["start_ms"], local["end_ms"])
    assert run.data.metrics == pytest.approx(summary["metrics"])
    assert run.data.params["workload.requests"] == "5" and len(run.data.params) == len(local["params"])
    assert run.data.tags["sentinel.run_uid"] == local["uid"] and run.data.tags["sentinel.verdict"]
    assert {"requests.jsonl", "config.yaml", "summary.json", "server.log"} <= artifacts
    assert _run_json(folder)["mlflow_run_id"] == run.info.run_id
    # Piped into a file or another command, the table keeps each run id and folder on one line.
    with MlflowServer(tmp_path / "store", port=port):
        piped = _sync(tmp_path, str(folder), columns=80)
    assert piped.returncode == 0, piped.stdout + piped.stderr
    [line] = [line for line in piped.stdout.splitlines() if "already logged" in line]
    assert str(folder) in line and f"MLflow run {run.info.run_id}" in line


def test_a_tracking_server_stopped_mid_run_loses_nothing(tmp_path):
    store = tmp_path / "store"
    server = MlflowServer(store).start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel_exp", *MID_RUN, f"tracking.uri={server.uri}"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_records(tmp_path, "outputs/*/*/requests.jsonl", 20, proc)
        server.stop()  # the store goes away while the run measures
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        server.stop()
    assert proc.returncode == 4, stdout + stderr
    assert "not logged to MLflow" in stderr and "Traceback" not in stdout + stderr
    [folder] = output_dirs(tmp_path)
    assert len(read_records(folder / "requests.jsonl")) == 201 and _run_json(folder)["status"] == "FINISHED"

    with MlflowServer(store, port=server.port):  # the same store, back on its port
        synced = _sync(tmp_path, str(folder))
        assert synced.returncode == 0, synced.stdout + synced.stderr
        # The upload cut short made the run in MLflow already: sync completes that one run.
        [run] = _runs(server.uri)
        artifacts = {a.path for a in _client(server.uri).list_artifacts(run.info.run_id)}
        logged = _client(server.uri).download_artifacts(run.info.run_id, "requests.jsonl", str(tmp_path))
    local = _run_json(folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert run.info.status == "FINISHED" and run.data.metrics["requests_ok"] == 200
    assert local["mlflow_run_id"] == run.info.run_id and run.data.tags["sentinel.run_uid"] == local["uid"]
    assert (run.info.start_time, run.info.end_time) == (local["start_ms"], local["end_ms"])
    assert run.data.metrics == pytest.approx(summary["metrics"])
    assert len(run.data.params) == len(local["params"]) and run.data.tags["sentinel.verdict"]
    assert {"requests.jsonl", "config.yaml", "summary.json", "server.log"} <= artifacts
    assert Path(logged).read_bytes() == (folder / "requests.jsonl").read_bytes()


def test_a_runner_killed_with_sigkill_is_synced_as_failed_with_its_records(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp", *LONG, "plots=true"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    records = _wait_for_records(tmp_path, "outputs/*/*/requests.jsonl", 30, proc)
    children = _kill_tree(proc)
    folder = records.parent
    # The bundled server sees its parent gone and exits by itself (--exit-with-parent).
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    assert _run_json(folder)["status"] == "RUNNING" and not (folder / "summary.json").exists()
    left = [r for r in read_records(records) if r.phase == "measured"]
    assert mlflow_runs(tmp_path) == []  # nothing reached MLflow: it is imported after measuring

    synced = _sync(tmp_path, str(folder))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    [run] = mlflow_runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.metrics["requests_ok"] == len([r for r in left if r.ok]) >= 29
    local = _run_json(folder)
    assert local["status"] == "FAILED" and "ended without closing the run" in local["failure"]
    assert run.info.end_time == local["end_ms"] > local["start_ms"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "FAILED" and summary["metrics"]["requests_ok"] == run.data.metrics["requests_ok"]
    # Why it failed and what it measured, as a run that ended by itself says them.
    assert run.data.tags["sentinel.failure"] == local["failure"]
    assert run.data.tags["sentinel.verdict"].startswith("TTFT is mostly")
    artifacts = {a.path for a in _client(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(run.info.run_id)}
    assert {"server.log", "report.md", "latency_cdf.png", "timeline.png", "requests.jsonl"} <= artifacts
    assert "ended without closing the run" in (folder / "report.md").read_text()


def test_a_run_still_measuring_is_not_synced(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp", *LONG],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        records = _wait_for_records(tmp_path, "outputs/*/*/requests.jsonl", 5, proc)
        synced = _sync(tmp_path, str(records.parent))
        assert synced.returncode == 2, synced.stdout + synced.stderr
        assert "is still being measured" in synced.stdout
        assert _run_json(records.parent)["status"] == "RUNNING"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def test_the_next_run_closes_a_sweep_killed_midway_and_sync_files_its_jobs_under_it(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp", "-m", *LONG, "workload.seed=1,2"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    records = _wait_for_records(tmp_path, "multirun/*/*/0/requests.jsonl", 20, proc)
    for child in _kill_tree(proc):
        child.wait(timeout=10)
    [parent] = mlflow_runs(tmp_path)
    assert parent.info.status == "RUNNING" and parent.data.tags["sentinel.role"] == "sweep"

    later = run_cli(tmp_path, *QUICK)  # the next run in the same store
    assert later.returncode == 0, later.output
    assert f"closed run {parent.info.run_id}" in later.stderr
    # The jobs' runs exist only in their folders (the arms of the interleaved study were measured
    # together): the message names them, and how to upload them.
    sweep_folder = records.parent.parent
    running = sorted(p.parent for p in sweep_folder.glob("*/run.json") if _run_json(p.parent)["status"] == "RUNNING")
    assert records.parent in running
    named = ", ".join(str(folder.relative_to(tmp_path)) for folder in running)  # as the run named them
    folders = f"its job folder {named} is" if len(running) == 1 else f"its job folders {named} are"
    said = " ".join(later.stderr.split())
    assert f"{folders} still RUNNING: python -m sentinel_exp.sync {sweep_folder.relative_to(tmp_path)}" in said
    statuses = {run.info.run_id: run.info.status for run in mlflow_runs(tmp_path)}
    assert statuses[parent.info.run_id] == "FAILED"

    synced = _sync(tmp_path, str(sweep_folder))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    jobs = [r for r in mlflow_runs(tmp_path) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(jobs) == len(running) and {job.info.status for job in jobs} == {"FAILED"}
    assert max(job.data.metrics["requests_ok"] for job in jobs) >= 19


def test_a_zombie_runner_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:  # ended, not yet waited for
        time.sleep(0.01)
    boot_id, ticks = boot_start(os.getpid()) or ("", 0)
    assert boot_start(child.pid) is None
    assert Runner(child.pid, socket.gethostname(), 0.0, boot_id, ticks).gone() is True
    child.wait()


def test_jobs_of_a_sweep_synced_side_by_side_file_under_one_parent(tmp_path):
    # A sweep measured with tracking off: nothing of it is in any store yet.
    sweep = run_cli(tmp_path, "-m", *QUICK, "tracking.enabled=false", "workload.seed=1,2,3")
    assert sweep.returncode == 0, sweep.output
    jobs = sorted(path.parent for path in tmp_path.glob("multirun/*/*/*/requests.jsonl"))
    assert len(jobs) == 3
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    from sentinel_exp.store.tracking import Tracker
    from sentinel_exp.store.upload import Uploader

    # Each job at once, as joblib's processes or syncs run side by side: each finds the sweep's
    # parent run missing from the store, and each would make it.
    start = threading.Barrier(len(jobs))
    failures: list[BaseException] = []

    def upload(job: Path) -> None:
        uploader = Uploader(uri, open_store=lambda store, experiment: Tracker(store, experiment))
        start.wait()
        try:
            uploader.upload(job)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=upload, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    runs = _runs(uri)
    [parent] = [run for run in runs if run.data.tags.get("sentinel.role") == "sweep"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 4 and len(children) == 3
