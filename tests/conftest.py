"""Shared fixtures: real servers on loopback, the real CLI in a subprocess, a real MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
READY_PREFIX = "SENTINEL_SERVER_READY "


@dataclass
class ServerProcess:
    url: str
    pid: int
    proc: subprocess.Popen[str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(engine: str, *args: str, timeout_s: float = 120.0) -> ServerProcess:
    """`python -m sentinel_exp.serve` on 127.0.0.1 and a free port; waits for its ready line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp.serve", "--engine", engine, "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY_PREFIX):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    ready = json.loads(line[len(READY_PREFIX) :])
    return ServerProcess(ready["url"], ready["pid"], proc)


@pytest.fixture
def sim_server_factory() -> Iterator[object]:
    started: list[ServerProcess] = []

    def factory(*args: str) -> ServerProcess:
        server = start_server("simulated", *args)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    cwd: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CI": "true"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    # No test may find a real Ollama on this machine by accident: port 9 (discard) never answers.
    env["OLLAMA_HOST"] = "127.0.0.1:9"
    env.update(extra)
    return env


def run_cli(
    cwd: Path,
    *overrides: str,
    timeout_s: float = 180.0,
    module: str = "sentinel_exp",
    env: dict[str, str] | None = None,
) -> CliResult:
    """The real `python -m sentinel_exp` in a subprocess, from `cwd` (where mlflow.db lands)."""
    done = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return CliResult(done.returncode, done.stdout, done.stderr, cwd)


def mlflow_runs(cwd: Path, experiment: str = "sentinel-exp") -> list:
    """All runs in the sqlite store under `cwd` (empty when there is no store or experiment)."""
    db = cwd / "mlflow.db"
    if not db.exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=1000)


def output_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in cwd.glob("outputs/*/*/config.yaml"))
