"""A real `mlflow server` on a loopback port, for tests that log through its REST API: started,
stopped and started again on the same port and store, as a server restarted by its operator."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MlflowServer:
    """`mlflow server` with a sqlite backend store and proxied artifacts, both under `root`."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--backend-store-uri", f"sqlite:///{self.root / 'server.db'}", "--workers", "1"]
        return [*command, "--artifacts-destination", str(self.root / "artifacts")]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }

    def start(self, timeout_s: float = 120) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "mlflow_server.log", "ab")  # noqa: SIM115 - closed with the process
        self._proc = subprocess.Popen(
            self.command(),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                log_path = self.root / "mlflow_server.log"
                raise RuntimeError(f"mlflow server exited with {self._proc.returncode}: see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mlflow server did not answer on {self.uri} within {timeout_s:.0f} s")
            time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM to its process group (uvicorn workers with it), SIGKILL when that is not enough."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


REPO = Path(__file__).resolve().parents[2]


class ScriptServer(MlflowServer):
    """The team's server as scripts/mlflow_server.sh starts it: PostgreSQL under `root`, and with
    `auth` MLflow's basic-auth app, its admin taken from `credentials` (user, password) in the
    environment. Stopping it stops its PostgreSQL too (the script's own exit, then --stop)."""

    def __init__(self, root: Path, credentials: tuple[str, str] | None = None) -> None:
        super().__init__(root)
        self.credentials = credentials

    def command(self) -> list[str]:
        command = ["bash", str(REPO / "scripts" / "mlflow_server.sh"), "--dir", str(self.root)]
        command += ["--port", str(self.port), *(["--auth"] if self.credentials else [])]
        return [*command, "--", "--workers", "1"]

    def env(self) -> dict[str, str]:
        env = {**super().env(), "PYTHON": sys.executable}
        if self.credentials:
            env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = self.credentials
        return env

    def stop(self) -> None:
        super().stop()
        subprocess.run(
            ["bash", str(REPO / "scripts" / "mlflow_server.sh"), "--dir", str(self.root), "--stop"], check=False
        )


def rest_runs(uri: str, auth: tuple[str, str] | None = None, experiment: str = "sentinel-exp") -> list[dict[str, Any]]:
    """Every run of the experiment as the REST API gives it, tags and metrics made dicts."""
    found = httpx.get(
        f"{uri}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": experiment}, auth=auth
    )
    found.raise_for_status()
    experiment_id = found.json()["experiment"]["experiment_id"]
    runs = httpx.post(
        f"{uri}/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment_id], "max_results": 100}, auth=auth
    )
    runs.raise_for_status()
    return [
        {
            "id": run["info"]["run_id"],
            "status": run["info"]["status"],
            "tags": {t["key"]: t["value"] for t in run["data"].get("tags", [])},
            "metrics": {m["key"]: m["value"] for m in run["data"].get("metrics", [])},
            "params": {p["key"]: p["value"] for p in run["data"].get("params", [])},
        }
        for run in runs.json().get("runs", [])
    ]


def parent_and_children(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    [parent] = [run for run in runs if run["tags"].get("sentinel.role") == "sweep"]
    children = [run for run in runs if run["tags"].get("mlflow.parentRunId") == parent["id"]]
    assert len(children) == len(runs) - 1  # no run outside the sweep
    return parent, children
