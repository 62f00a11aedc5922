"""A team's setup: runs logged to a shared `mlflow server` (tracking=server), a sweep over server
URLs comparing machines, PostgreSQL with basic-auth through scripts/mlflow_server.sh, and a sweep
launched in parallel by joblib. Everything is read back through MLflow's REST API, as a teammate's
browser or script would."""

from __future__ import annotations

import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.cli import cli_env, mlflow_runs, run_cli
from support.mlflow_server import MlflowServer, ScriptServer, parent_and_children, rest_runs
from support.remote_host import LoopbackProxy
from support.require import require

from sentinel_exp.errors import UserError
from sentinel_exp.names import ServerKind
from sentinel_exp.serve.launch import running_server
from sentinel_exp.store.tracking import Tracker

QUICK = ["workload.warmup=0", "plots=false", "telemetry.interval_s=0.5"]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real `mlflow server` (sqlite backend) shared by the tests, as a team shares one; each
    test logs to its own experiment."""
    with MlflowServer(tmp_path_factory.mktemp("team-store")) as server:
        yield server


def test_a_sweep_over_server_urls_lands_under_one_parent_on_the_tracking_server(tmp_path, tracking_server):
    # Two "machines": two servers, one per URL; the sweep compares them as one study.
    with (
        running_server(ServerKind.simulated, ["--load-ms", "0", "--ttft-ms", "20"]) as box_a,
        running_server(ServerKind.simulated, ["--load-ms", "0", "--ttft-ms", "60"]) as box_b,
    ):
        result = run_cli(
            tmp_path,
            "-m",
            "server=ollama",
            f"server.url={box_a.url},{box_b.url}",
            "tracking=server",
            "tracking.experiment=machines",
            "workload.requests=4",
            *QUICK,
            env=cli_env(MLFLOW_TRACKING_URI=tracking_server.uri),
        )
    assert result.returncode == 0, result.output
    assert "View run" not in result.stdout  # MLflow's own run links stay out of the console
    parent, children = parent_and_children(rest_runs(tracking_server.uri, experiment="machines"))
    assert parent["status"] == "FINISHED" and len(children) == 2, result.output
    host = socket.gethostname()
    by_target = {child["tags"]["sentinel.target"]: child for child in children}
    assert set(by_target) == {box_a.url, box_b.url}
    for child in children:
        tags = child["tags"]
        assert child["status"] == "FINISHED" and child["metrics"]["requests_ok"] == 4
        # Loopback targets: this machine is both the client and the target, and its fingerprint says so.
        assert tags["sentinel.client_host"] == host and tags["sentinel.target_host"] == host
        assert tags["sentinel.fingerprint_of"] == "client,target" and tags["sentinel.target_remote"] == "false"
    # The two machines' measured difference is the one the servers were given (40 ms of TTFT): in
    # that order, neither the same (0) nor swapped (-40). A median of 4 beside other tests on two
    # cores can come several ms late on either side, so the band is wide.
    ttft_a = by_target[box_a.url]["metrics"]["ttft_ms_p50"]
    ttft_b = by_target[box_b.url]["metrics"]["ttft_ms_p50"]
    assert ttft_a >= 20 and ttft_b >= 60 and 15 < ttft_b - ttft_a < 100


def test_a_remote_target_is_measured_and_tagged_as_another_host(tmp_path):
    # `gpu-box` is reached through a proxy on loopback (support/remote_host.py): to the client it
    # is another machine, reached as a remote one is.
    with (
        running_server(ServerKind.simulated, ["--load-ms", "0", "--ttft-ms", "30"]) as box,
        LoopbackProxy(int(box.url.rsplit(":", 1)[1])) as proxy,
    ):
        url = f"http://gpu-box:{proxy.target_port}"
        env = cli_env(HTTP_PROXY=proxy.url, http_proxy=proxy.url, NO_PROXY="", no_proxy="")
        remote = ["server=ollama", f"server.url={url}", "hardware=rtx3060_12gb", "workload.requests=3"]
        result = run_cli(tmp_path, *remote, *QUICK, env=env)
        through_proxy = proxy.connections
    assert result.returncode == 0, result.output
    assert through_proxy >= 2  # the probe and the run's own connection both went "to gpu-box"
    [run] = mlflow_runs(tmp_path)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and run.data.metrics["requests_ok"] == 3
    assert run.data.metrics["ttft_ms_p50"] >= 30
    assert tags["sentinel.target"] == url and tags["sentinel.target_host"] == "gpu-box"
    assert tags["sentinel.client_host"] == socket.gethostname() and tags["sentinel.target_remote"] == "true"
    # This machine's fingerprint is the client's, and the RTX 3060 profile is not judged by it.
    assert tags["sentinel.fingerprint_of"] == "client" and tags["sentinel.fingerprint_host"] == socket.gethostname()
    assert tags["sentinel.hardware_match"] == "unchecked"
    assert "sentinel.hardware_match=false" not in result.stderr


def test_a_joblib_sweep_of_four_jobs_lands_four_children_with_every_record(tmp_path, tracking_server):
    # Four jobs at once in joblib's worker processes, each with its own simulated server, all
    # logging to one store at the same moment: nothing may be lost or land outside the sweep.
    requests = 6
    result = run_cli(
        tmp_path,
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        "server=simulated",
        "server.sim.load_ms=0",
        "server.sim.ttft_ms=10,20,30,40",
        "tracking=server",
        "tracking.experiment=joblib",
        f"workload.requests={requests}",
        *QUICK,
        env=cli_env(MLFLOW_TRACKING_URI=tracking_server.uri),
    )
    assert result.returncode == 0, result.output
    assert "Joblib.Parallel(n_jobs=4" in result.stdout
    parent, children = parent_and_children(rest_runs(tracking_server.uri, experiment="joblib"))
    assert parent["status"] == "FINISHED" and len(children) == 4
    # Each child holds its own job's requests: its TTFT is never below its own server's (records of
    # a faster job would be), with room above it for four jobs and the tests beside them on two cores
    # (a median of 6: late wake-ups of tens of ms are ordinary there).
    injected = {c["id"]: float(c["params"]["server.sim.ttft_ms"]) for c in children}
    assert sorted(injected.values()) == [10.0, 20.0, 30.0, 40.0]
    for child in children:
        assert injected[child["id"]] <= child["metrics"]["ttft_ms_p50"] < injected[child["id"]] + 100, child
    for child in children:
        assert child["status"] == "FINISHED"
        assert child["metrics"]["requests_ok"] + child["metrics"].get("requests_failed", 0) == requests
        # Every record reached the store: the uploaded requests.jsonl holds one line per request.
        records = httpx.get(
            f"{tracking_server.uri}/get-artifact", params={"path": "requests.jsonl", "run_uuid": child["id"]}
        )
        assert records.status_code == 200 and len(records.text.splitlines()) == requests


def _postgres_missing() -> str | None:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) and shutil.which("pg_ctl") is None:
        return "PostgreSQL is not installed (apt-get install postgresql; .ci/run installs it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[server]')"
    return None


def test_the_team_server_script_keeps_runs_in_postgresql_behind_basic_auth(tmp_path, monkeypatch):
    missing = _postgres_missing()
    require(missing is None, str(missing))
    credentials = ("sentinel-admin", "team-" + secrets.token_hex(8))  # MLflow wants 12 characters or more
    # A short path the postgres user can reach (pytest's own temporary folders are root's only).
    root = Path(tempfile.mkdtemp(prefix="sx-pg-", dir="/tmp"))
    root.chmod(0o711)
    try:
        with ScriptServer(root / "srv", credentials) as server:
            # Without credentials the server answers nothing but its health check.
            refused = httpx.post(f"{server.uri}/api/2.0/mlflow/runs/search", json={"experiment_ids": ["0"]})
            assert refused.status_code == 401
            user, password = credentials
            env = cli_env(
                MLFLOW_TRACKING_URI=server.uri, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password
            )
            result = run_cli(
                tmp_path,
                "-m",
                "server=simulated",
                "server.sim.load_ms=0",
                "server.sim.ttft_ms=15,45",
                "tracking=server",
                "workload.requests=4",
                *QUICK,
                env=env,
            )
            assert result.returncode == 0, result.output
            parent, children = parent_and_children(rest_runs(server.uri, auth=credentials))
            assert parent["status"] == "FINISHED" and len(children) == 2
            assert all(c["status"] == "FINISHED" and c["metrics"]["requests_ok"] == 4 for c in children)
            # The runs live in PostgreSQL, not in a file of the server's folder.
            assert (root / "srv" / "pg" / "data" / "PG_VERSION").is_file() and not list(root.rglob("*.db"))
            # A wrong password: the store refuses the run (a run then exits 4, "not logged"), and the
            # message says where credentials go.
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
            with pytest.raises(UserError, match=r"error code 401 .*MLFLOW_TRACKING_PASSWORD"):
                Tracker(server.uri, "sentinel-exp")
        # The password reached the server from the environment only: no file of the runs holds it.
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and password in p.read_text(errors="replace")]
        assert leaked == []
        assert password not in result.output
    finally:
        shutil.rmtree(root, ignore_errors=True)
