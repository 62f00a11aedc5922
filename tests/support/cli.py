"""The real CLI in a subprocess, and what a run leaves behind: MLflow runs and output folders."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Run

REPO = Path(__file__).resolve().parents[2]

# No test may find a real Ollama on this machine by accident: port 9 (discard) never answers.
NO_OLLAMA = "127.0.0.1:9"


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
    env["OLLAMA_HOST"] = NO_OLLAMA
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


def mlflow_runs(cwd: Path, experiment: str = "sentinel-exp") -> list[Run]:
    """All runs in the sqlite store under `cwd` (empty when there is no store or experiment)."""
    db = cwd / "mlflow.db"
    if not db.exists():
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(client.search_runs([exp.experiment_id], max_results=1000))


def job_runs(cwd: Path) -> list[Run]:
    """A sweep's job runs, without the sweep's own parent run (tagged sentinel.role=sweep)."""
    return [run for run in mlflow_runs(cwd) if run.data.tags.get("sentinel.role") != "sweep"]


def output_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in cwd.glob("outputs/*/*/config.yaml"))


# The simulated server with fixed latencies (no jitter): what most runs in the tests measure.
SIM = [
    "server=simulated",
    "server.sim.jitter_ms=0",
    "server.sim.load_ms=200",
    "server.sim.ttft_ms=40",
    "server.sim.itl_ms=5",
    "telemetry.interval_s=0.05",
    "plots=false",  # drawing costs about a second a run; tests/integration/test_figures_on_disk.py draws
]
