"""Shared fixtures: real servers on loopback, the real CLI in a subprocess, a real MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sentinel_exp.names import ServerKind
from sentinel_exp.serve.launch import BundledServer, start_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def sim_server_factory() -> Iterator[Callable[..., BundledServer]]:
    """Start simulated servers with these `python -m sentinel_exp.serve` flags; all stop at the end."""
    started: list[BundledServer] = []

    def factory(*args: str) -> BundledServer:
        server = start_server(ServerKind.simulated, args, timeout_s=120.0)
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
