"""Sweeps on a real Ray cluster (hydra/launcher=sentinel_ray): a head node and a second node
process started with `ray start` on this machine, the second holding the custom resource `gpu_box`
(support/ray_cluster.py), and the team's tracking server, `scripts/mlflow_server.sh` on
PostgreSQL. Every sweep sets `sweep.order=sequential`: each job runs by itself where the launcher
puts it.

The cluster and the server are started once for the module (about a minute on two cores). The
first test runs in CI's default pass; the others are marked `cluster` and run in a pass of their
own, one at a time, sharing one cluster. Without Ray, hydra-ray-launcher or PostgreSQL the module
is skipped, except in CI, where .ci/run installs them and it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from support.cli import SIM, cli_env
from support.mlflow_server import ScriptServer, parent_and_children, rest_runs
from support.ray_cluster import GPU_BOX, RayCluster
from support.require import require

# A cluster and a PostgreSQL server start within a test's time on two busy cores: more than the default 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _missing() -> str | None:
    if find_spec("ray") is None or find_spec("hydra_plugins.hydra_ray_launcher") is None:
        return "Ray or hydra-ray-launcher is not installed (pip install -e '.[cluster]')"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) and shutil.which("pg_ctl") is None:
        return "PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)"
    return None


require(_missing() is None, str(_missing()))

REQUESTS = 10
# About 0.2 s a request: a job of LONG requests runs long enough to be killed or stopped mid-run.
LONG = 60
STOPPED = 400  # a job Ctrl-C stops: it must still be running when the later of two jobs has begun


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    with RayCluster(tmp_path_factory.mktemp("ray")) as started:
        yield started


@pytest.fixture(scope="module")
def team_server() -> Iterator[ScriptServer]:
    """The team's server as scripts/mlflow_server.sh starts it, PostgreSQL under a short folder
    the postgres user can reach (pytest's own temporary folders are root's only)."""
    root = Path(tempfile.mkdtemp(prefix="sx-ray-pg-", dir="/tmp"))
    root.chmod(0o711)
    try:
        with ScriptServer(root / "srv") as server:
            yield server
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sweep_command(cluster: RayCluster, server: ScriptServer, sweep_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sentinel_exp",
        "-m",
        *SIM,
        "workload.warmup=1",
        "sweep.order=sequential",
        "hydra/launcher=sentinel_ray",
        f"hydra.launcher.ray.init.address={cluster.address}",
        f"hydra.sweep.dir={sweep_dir}",
        f"tracking.uri={server.uri}",
        *overrides,
    ]


def run_sweep(cwd: Path, command: list[str], timeout_s: float = 420) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout_s)


def start_sweep(cwd: Path, command: list[str]) -> subprocess.Popen[str]:
    log = open(cwd / "launcher.log", "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(command, cwd=cwd, env=cli_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    log.close()
    return process


def wait_for(what: str, check: Any, process: subprocess.Popen[str], timeout_s: float = 240) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert process.poll() is None, f"the launcher exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.3)
    return found


def measured(folder: Path) -> int:
    """The measured requests that succeeded, in a job's folder (warmup and stopped ones left out)."""
    path = folder / "requests.jsonl"
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.endswith("}")]
    return sum(1 for record in lines if record.get("phase") == "measured" and record.get("ok"))


def run_file(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    return data


def test_a_sweep_runs_each_job_as_a_ray_task_on_the_node_holding_its_resource(tmp_path, cluster, team_server):
    gpu_box = cluster.node_id_with(GPU_BOX)
    sweep_dir = tmp_path / "multirun"
    command = sweep_command(
        cluster,
        team_server,
        sweep_dir,
        f"+hydra.launcher.ray.remote.resources={{{GPU_BOX}:1}}",
        "tracking.experiment=ray-pinned",
        f"workload.requests={REQUESTS}",
        "server.sim.ttft_ms=40,120",
        "repeat=0,1",
    )
    result = run_sweep(tmp_path, command)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    parent, children = parent_and_children(rest_runs(team_server.uri, experiment="ray-pinned"))
    assert parent["status"] == "FINISHED" and len(children) == 4
    host = socket.gethostname()
    for child in children:
        assert child["status"] == "FINISHED" and child["metrics"]["requests_ok"] == REQUESTS
        # Every job ran on the node that holds the resource it was pinned to, and says so.
        assert child["tags"]["sentinel.ray_node_id"] == gpu_box
        assert child["tags"]["sentinel.client_host"] == host
    # Each job ran in a Ray worker process of that node, not in the launcher: four tasks' folders,
    # each written by a process that is neither the launcher nor one of the others at the same time.
    folders = sorted(p.parent for p in sweep_dir.glob("*/run.json"))
    assert len(folders) == 4
    runners = {run_file(folder)["runner"]["pid"] for folder in folders}
    assert os.getpid() not in runners and all(measured(folder) == REQUESTS for folder in folders)
    # The closing comparison is printed by the launcher, and only there: 40 ms against 120 ms of TTFT.
    assert "vs ttft_ms=40: TTFT p50" in result.stdout
    [candidate] = [line for line in result.stdout.splitlines() if line.startswith("│ ttft_ms=120 ")]
    assert "worse" in candidate, candidate
    assert (sweep_dir / "compare.md").is_file()
    listed = httpx.get(f"{team_server.uri}/api/2.0/mlflow/artifacts/list", params={"run_id": parent["id"]})
    assert "compare.md" in {f["path"] for f in listed.json().get("files", [])}


@pytest.mark.cluster
def test_a_job_whose_worker_is_killed_fails_alone_and_its_records_sync(tmp_path, cluster, team_server):
    sweep_dir = tmp_path / "multirun"
    command = sweep_command(
        cluster,
        team_server,
        sweep_dir,
        "tracking.experiment=ray-killed",
        f"workload.requests={LONG}",
        "server.sim.ttft_ms=40,41,42,43",
    )
    launcher = start_sweep(tmp_path, command)
    victim = sweep_dir / "1"
    try:
        wait_for("10 records of job #1", lambda: measured(victim) >= 10, launcher)
        worker = run_file(victim)["runner"]["pid"]
        assert psutil.Process(worker).name().startswith("ray::")  # a Ray worker, not the launcher
        os.kill(worker, signal.SIGKILL)
        returncode = launcher.wait(timeout=420)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    output = (tmp_path / "launcher.log").read_text(encoding="utf-8")
    assert returncode == 2, output[-4000:]
    assert "job #1: lost on the Ray cluster (WorkerCrashedError" in output
    assert "1 sweep job(s) failed" in output
    parent, children = parent_and_children(rest_runs(team_server.uri, experiment="ray-killed"))
    assert parent["status"] == "FAILED"
    # The other three finished and are logged; the lost one is not, yet.
    assert len(children) == 3 and all(
        c["status"] == "FINISHED" and c["metrics"]["requests_ok"] == LONG for c in children
    )
    # Its records are on disk, the run still marked RUNNING by a process that is gone.
    kept = measured(victim)
    assert kept >= 10 and run_file(victim)["status"] == "RUNNING"
    synced = subprocess.run(
        [sys.executable, "-m", "sentinel_exp.sync", str(victim)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    parent, children = parent_and_children(rest_runs(team_server.uri, experiment="ray-killed"))
    [lost] = [c for c in children if c["tags"]["sentinel.output_dir"] == str(victim)]
    assert lost["status"] == "FAILED" and lost["metrics"]["requests_ok"] == kept


@pytest.mark.cluster
def test_ctrl_c_on_the_launcher_stops_the_jobs_and_closes_the_sweep_killed(tmp_path, cluster, team_server):
    sweep_dir = tmp_path / "multirun"
    command = sweep_command(
        cluster,
        team_server,
        sweep_dir,
        "tracking.experiment=ray-stopped",
        f"workload.requests={STOPPED}",
        "server.sim.ttft_ms=40,41,42,43",
    )
    launcher = start_sweep(tmp_path, command)
    try:
        # Two jobs at a time: one CPU a node, one job a CPU.
        wait_for(
            "two jobs measuring", lambda: measured(sweep_dir / "0") >= 5 and measured(sweep_dir / "1") >= 5, launcher
        )
        launcher.send_signal(signal.SIGINT)
        returncode = launcher.wait(timeout=180)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    output = (tmp_path / "launcher.log").read_text(encoding="utf-8")
    assert returncode == 130, output[-4000:]
    parent, children = parent_and_children(rest_runs(team_server.uri, experiment="ray-stopped"))
    assert parent["status"] == "KILLED"
    # The two running jobs stopped as a run stops at Ctrl-C: KILLED, with what they measured logged.
    assert len(children) == 2 and all(c["status"] == "KILLED" for c in children)
    for child in children:
        assert 5 <= child["metrics"]["requests_ok"] < STOPPED
        assert child["metrics"]["requests_ok"] == measured(Path(child["tags"]["sentinel.output_dir"]))
    # The queued ones never started, and the stopped ones' worker processes are gone, with the
    # simulated servers they had started (each exits with its parent).
    assert not (sweep_dir / "2" / "run.json").exists() and not (sweep_dir / "3" / "run.json").exists()
    workers = [run_file(sweep_dir / job)["runner"]["pid"] for job in ("0", "1")]
    deadline = time.monotonic() + 20
    while any(psutil.pid_exists(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(psutil.pid_exists(pid) for pid in workers)


@pytest.mark.cluster
def test_two_sweeps_at_once_into_one_experiment_keep_their_children_apart(tmp_path, cluster, team_server):
    commands = [
        sweep_command(
            cluster,
            team_server,
            tmp_path / name / "multirun",
            "tracking.experiment=ray-two",
            f"workload.requests={REQUESTS}",
            f"server.sim.ttft_ms={ttfts}",
        )
        for name, ttfts in (("a", "40,50"), ("b", "60,70"))
    ]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    launchers = [start_sweep(tmp_path / name, command) for name, command in zip("ab", commands, strict=True)]
    try:
        returncodes = [launcher.wait(timeout=420) for launcher in launchers]
    finally:
        for launcher in launchers:
            if launcher.poll() is None:
                launcher.kill()
    assert returncodes == [0, 0], [(tmp_path / n / "launcher.log").read_text(encoding="utf-8")[-3000:] for n in "ab"]
    runs = rest_runs(team_server.uri, experiment="ray-two")
    parents = [run for run in runs if run["tags"].get("sentinel.role") == "sweep"]
    assert len(parents) == 2 and len(runs) == 6
    for parent in parents:
        children = [run for run in runs if run["tags"].get("mlflow.parentRunId") == parent["id"]]
        sweep_dir = Path(parent["tags"]["sentinel.output_dir"])
        # Each parent holds its own sweep's two jobs: their folders are in its sweep folder, and
        # their servers are the ones its command line swept.
        assert len(children) == 2 and parent["status"] == "FINISHED"
        assert all(Path(c["tags"]["sentinel.output_dir"]).parent == sweep_dir for c in children)
        ttfts = sorted(float(c["params"]["server.sim.ttft_ms"]) for c in children)
        assert ttfts == ([40.0, 50.0] if sweep_dir.parent.name == "a" else [60.0, 70.0])
