"""The one helper that starts a bundled server: ready line, failure with the log's tail, stop."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
import pytest

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
