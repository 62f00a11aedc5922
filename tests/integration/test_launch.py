"""The one helper that starts a bundled server: ready line, failure with the log's tail, stop, and
the standby process a sweep's next job starts its server from."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from support.cli import run_cli

from sentinel_exp.names import ServerKind
from sentinel_exp.serve.__main__ import build_parser
from sentinel_exp.serve.launch import ServerStartError, running_server, start_server


def serve_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "sentinel_exp.serve" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_a_server_is_ready_with_its_url_and_pid_and_stopped_on_exit() -> None:
    with running_server(ServerKind.simulated, ["--load-ms", "0"]) as server:
        assert server.engine == ServerKind.simulated and server.pid == server.process.pid
        version = httpx.get(f"{server.url}/api/version", trust_env=False).json()["version"]
        assert version.endswith("-sentinel-simulated")
        assert server.log_path.is_file()
    assert server.process.poll() is not None
    assert not server.log_path.exists()  # a log made for the server goes with it
    assert serve_children() == []


def test_a_child_that_exits_before_its_ready_line_fails_at_once_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "server.log"
    started = time.perf_counter()
    with pytest.raises(ServerStartError) as failed:
        start_server("no-such-engine", timeout_s=60, log_path=log)
    assert time.perf_counter() - started < 20  # not the 60 s timeout: the exit is seen at once
    assert failed.value.exit_code == 2
    assert "argument --engine: invalid choice: 'no-such-engine'" in failed.value.log_tail
    message = str(failed.value)
    assert message.startswith(f"the no-such-engine server did not start: it exited with code 2. Its log ({log}):")
    assert "invalid choice" in message
    assert log.is_file()  # a log the caller named stays, for the caller to keep
    assert serve_children() == []


def test_a_child_not_ready_in_time_is_stopped_and_named(tmp_path: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(ServerStartError) as failed:
        start_server(ServerKind.simulated, timeout_s=0.05, log_path=tmp_path / "server.log")
    assert time.perf_counter() - started < 15
    assert failed.value.exit_code is None
    assert "the simulated server did not start: it was not ready within 0.05 s" in str(failed.value)
    assert serve_children() == []  # terminated, not left running


def test_the_arguments_reach_the_child() -> None:
    with pytest.raises(ServerStartError) as failed:
        start_server(ServerKind.simulated, ["--tokens", "0"], timeout_s=60)
    assert failed.value.exit_code == 2
    assert failed.value.log_tail == "error: tokens must be at least 1 (got 0)"


@pytest.mark.parametrize("name", ["embedded", "llamacpp"])
def test_embedded_is_the_engine_name_and_llamacpp_a_deprecated_alias(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_parser().parse_args(["--engine", name]).engine == ServerKind.embedded
    warned = "warning: --engine llamacpp is deprecated; use --engine embedded" in capsys.readouterr().err
    assert warned == (name == "llamacpp")


def _generate(url: str, model: str) -> None:
    body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    httpx.post(f"{url}/api/generate", json=body, trust_env=False, timeout=30).raise_for_status()


def test_a_standby_serves_the_next_start_with_its_arguments_and_its_own_log(tmp_path: Path) -> None:
    from sentinel_exp.serve import launch

    launch.prepare_standby()
    standby = launch._standby
    assert standby is not None and standby.poll() is None
    log = tmp_path / "server.log"
    server = start_server(ServerKind.simulated, ["--model", "m1", "--load-ms", "0"], log_path=log)
    try:
        assert server.pid == standby.pid  # the standby, not a new process
        assert launch._standby is None  # used once
        assert [m["name"] for m in httpx.get(f"{server.url}/api/tags", trust_env=False).json()["models"]] == ["m1"]
        _generate(server.url, "m1")
        assert "loaded m1" in log.read_text(encoding="utf-8")  # its stderr went to the log it was given
    finally:
        server.stop()
    assert standby.poll() is not None
    fresh = start_server(ServerKind.simulated, ["--load-ms", "0"], log_path=tmp_path / "fresh.log")
    try:
        assert fresh.pid != standby.pid  # no standby left: a process of its own
    finally:
        fresh.stop()
    assert serve_children() == []


def test_a_standby_given_bad_arguments_fails_with_its_log_like_a_fresh_server(tmp_path: Path) -> None:
    from sentinel_exp.serve import launch

    launch.prepare_standby()
    with pytest.raises(ServerStartError) as failed:
        start_server(ServerKind.simulated, ["--tokens", "0"], timeout_s=60, log_path=tmp_path / "server.log")
    assert failed.value.exit_code == 2
    assert failed.value.log_tail == "error: tokens must be at least 1 (got 0)"
    assert serve_children() == []


@pytest.mark.parametrize("how", ["exits", "is killed"])
def test_an_unused_standby_ends_with_the_process_that_made_it(how: str) -> None:
    script = (
        "import os, sys, time\n"
        "from sentinel_exp.serve import launch\n"
        "launch.prepare_standby()\n"
        "print(launch._standby.pid, flush=True)\n"
        "time.sleep(0.5)\n" + ("os.kill(os.getpid(), 9)\n" if how == "is killed" else "")  # its imports under way
    )
    maker = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    standby_pid = int(maker.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and psutil.pid_exists(standby_pid):
        try:
            if psutil.Process(standby_pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    alive = psutil.pid_exists(standby_pid) and psutil.Process(standby_pid).status() != psutil.STATUS_ZOMBIE
    assert not alive, f"the standby ({standby_pid}) outlived the process that made it ({how})"


def _serve_processes(under: Path) -> set[int]:
    """The bundled servers (and standbys) running in `under`: a test beside it may start its own."""
    found = set()
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = process.info["cmdline"] or []
        ours = (process.info["cwd"] or "").startswith(str(under))
        if ours and "sentinel_exp.serve" in cmdline and process.status() != psutil.STATUS_ZOMBIE:
            found.add(process.pid)
    return found


def test_a_sequential_sweeps_jobs_each_get_their_own_server_and_log_and_none_is_left(tmp_path: Path) -> None:
    before = _serve_processes(tmp_path)
    result = run_cli(
        tmp_path,
        "-m",
        "sweep.order=sequential",
        "server=simulated",
        "workload.requests=2",
        "workload.warmup=1",
        "plots=false",
        "tracking.enabled=false",
        "workload.seed=1,2,3",
        "hydra.sweep.dir=sweep",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    urls = set()
    for job in ("0", "1", "2"):
        folder = tmp_path / "sweep" / job
        assert "loaded " in (folder / "server.log").read_text(encoding="utf-8"), job  # jobs 1, 2: from a standby
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        assert summary["metrics"]["requests_ok"] == 2
        urls.add(summary["server"]["url"])
    assert len(urls) == 3  # a server (and port) per job
    assert _serve_processes(tmp_path) - before == set()  # neither a server nor an unused standby outlives the sweep


def test_an_interleaved_studys_arms_share_one_server_started_once_and_none_is_left(tmp_path: Path) -> None:
    before = _serve_processes(tmp_path)
    result = run_cli(
        tmp_path,
        "-m",
        "server=simulated",
        "workload.requests=4",
        "workload.warmup=1",
        "plots=false",
        "tracking.enabled=false",
        "workload.seed=1,2,3",
        "hydra.sweep.dir=sweep",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    urls = {json.loads((tmp_path / "sweep" / job / "summary.json").read_text())["server"]["url"] for job in "012"}
    assert len(urls) == 1  # one server for the study
    assert "loaded " in (tmp_path / "sweep" / "0" / "server.log").read_text(encoding="utf-8")
    assert not (tmp_path / "sweep" / "1" / "server.log").exists()
    assert _serve_processes(tmp_path) - before == set()
