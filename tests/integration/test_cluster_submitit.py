"""A sweep through submitit (hydra/launcher=submitit_local): every job pickled into the sweep
folder, run as a process of its own by submitit's local executor and its result read back, the
path a SLURM sweep (submitit_slurm) takes but for the scheduler. Logged to a real `mlflow server`.
Without hydra-submitit-launcher the module is skipped, except in CI, where .ci/run installs it
(the [cluster] extra) and it must run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.util import find_spec

import httpx
import psutil
import pytest
from support.cli import SIM, cli_env
from support.mlflow_server import MlflowServer, parent_and_children, rest_runs
from support.require import require

# Four jobs at once, each a fresh Python with its imports, on two busy cores: more than the default 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

require(
    find_spec("hydra_plugins.hydra_submitit_launcher") is not None,
    "hydra-submitit-launcher is not installed (pip install -e '.[cluster]')",
)

REQUESTS = 10


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("submitit-store")) as server:
        yield server


def test_a_submitit_sweep_gives_one_parent_its_children_and_the_comparison(tmp_path, tracking_server):
    sweep_dir = tmp_path / "multirun"
    command = [sys.executable, "-m", "sentinel_exp", "-m", *SIM, "workload.warmup=1", f"workload.requests={REQUESTS}"]
    command += ["sweep.order=sequential", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep_dir}"]
    command += [f"tracking.uri={tracking_server.uri}", "server.sim.ttft_ms=40,120", "repeat=0,1"]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    parent, children = parent_and_children(rest_runs(tracking_server.uri))
    assert parent["status"] == "FINISHED" and len(children) == 4
    assert all(c["status"] == "FINISHED" and c["metrics"]["requests_ok"] == REQUESTS for c in children)
    # Each job went through submitit: pickled into the sweep folder and run by a process of its own
    # (four runners, none of them the launcher, all gone now), its records in its own folder.
    assert list((sweep_dir / ".submitit").rglob("*_submitted.pkl"))
    folders = sorted(p.parent for p in sweep_dir.glob("*/run.json"))
    runners = {json.loads((folder / "run.json").read_text(encoding="utf-8"))["runner"]["pid"] for folder in folders}
    assert len(folders) == 4 and len(runners) == 4 and not any(psutil.pid_exists(pid) for pid in runners)
    for folder in folders:
        records = [json.loads(line) for line in (folder / "requests.jsonl").read_text(encoding="utf-8").splitlines()]
        assert sum(1 for r in records if r["phase"] == "measured" and r["ok"]) == REQUESTS
    # The comparison, printed by the launcher and kept with the parent: 40 ms against 120 ms of TTFT.
    assert "vs ttft_ms=40: TTFT p50" in result.stdout
    [candidate] = [line for line in result.stdout.splitlines() if line.startswith("│ ttft_ms=120 ")]
    assert "worse" in candidate, candidate
    listed = httpx.get(f"{tracking_server.uri}/api/2.0/mlflow/artifacts/list", params={"run_id": parent["id"]})
    assert "compare.md" in {f["path"] for f in listed.json().get("files", [])}
