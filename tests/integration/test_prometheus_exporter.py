"""Remote telemetry end to end: the real `prometheus-node-exporter` (Debian's package, which
.ci/run installs) on a loopback port, scraped during a run against a remote-style target.

A target is remote when its URL does not name loopback (sentinel_exp/urls.py). The simulated
server is therefore bound to a non-loopback address of this very machine (the tests' traffic still
never leaves it) and addressed by that address; the exporter stays on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from support.cli import SIM, mlflow_runs, run_cli
from support.require import require

from sentinel_exp.serve.launch import BundledServer
from sentinel_exp.store.run_folder import read_run_file, read_series

EXPORTER = shutil.which("prometheus-node-exporter")
SIM_FLAGS = ("--model", "smollm2:135m", "--load-ms", "0", "--ttft-ms", "40", "--itl-ms", "5", "--jitter-ms", "0")
RUN = ("server=ollama", "workload.requests=6", "workload.warmup=1", "plots=false", "progress=false")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def served_scrapes(url: str) -> float:
    """How many scrapes the exporter has answered with 200 (its own promhttp counter)."""
    text = httpx.get(url, timeout=5.0).text
    found = re.search(r'^promhttp_metric_handler_requests_total\{code="200"\} (\S+)$', text, re.M)
    assert found, "node-exporter no longer counts its scrapes"
    return float(found.group(1))


@pytest.fixture(scope="module")
def node_exporter() -> Iterator[str]:
    """The real node-exporter's /metrics URL on a free loopback port, CPU and memory collectors only."""
    require(EXPORTER, "prometheus-node-exporter is not installed (Debian: apt-get install prometheus-node-exporter)")
    assert EXPORTER is not None
    port = free_port()
    process = subprocess.Popen(
        [
            EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",  # the rest (disks, network, ...) is noise here
            "--collector.cpu",
            "--collector.meminfo",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 15.0
        while True:
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                err = process.stderr.read().decode() if process.stderr and process.poll() is not None else ""
                pytest.fail(f"node-exporter did not answer on {url}: {err[-500:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def this_machines_address() -> str:
    """A non-loopback IPv4 address of one of this machine's interfaces that are up."""
    up = {name for name, stats in psutil.net_if_stats().items() if stats.isup}
    for name, addresses in psutil.net_if_addrs().items():
        for address in addresses:
            if name in up and address.family == socket.AF_INET and not address.address.startswith("127."):
                return str(address.address)
    require(False, "this machine has no non-loopback IPv4 address to address a remote-style target by")
    raise AssertionError("unreachable")


@pytest.fixture
def remote_style_server(sim_server_factory: Callable[..., BundledServer]) -> BundledServer:
    server = sim_server_factory("--host", this_machines_address(), *SIM_FLAGS)
    assert not server.url.startswith("http://127."), server.url
    return server


def run_folder(cwd: Path) -> Path:
    folders = sorted(p.parent for p in cwd.glob("outputs/*/*/run.json"))
    assert len(folders) == 1, folders
    return folders[0]


def test_a_remote_run_logs_the_exporters_cpu_figures(tmp_path, node_exporter, remote_style_server):
    scrapes_before = served_scrapes(node_exporter)
    result = run_cli(
        tmp_path,
        *RUN,
        f"server.url={remote_style_server.url}",
        f"telemetry.prometheus_url={node_exporter}",
        "telemetry.prometheus_interval_s=0.25",
    )
    assert result.returncode == 0, result.output
    assert "unavailable" not in result.output
    folder = run_folder(tmp_path)
    assert read_run_file(folder).tags["sentinel.telemetry_source"] == "prometheus"
    series = read_series(folder)
    cpu = [(ts, step, value) for key, value, ts, step in series if key == "cpu_pct"]
    assert len(cpu) >= 3, series
    assert all(0.0 <= value <= 100.0 for _, _, value in cpu), cpu
    assert [ts for ts, _, _ in cpu] == sorted({ts for ts, _, _ in cpu})  # strictly increasing
    # One sample per scrape, at the exporter's interval (0.25 s), not the local one (0.1 s).
    gaps = [(b - a) / 1000.0 for (a, _, _), (b, _, _) in itertools.pairwise(cpu)]
    assert sorted(gaps)[len(gaps) // 2] >= 0.2, gaps
    # The samples came from the exporter: it answered the start-up check and every sample.
    samples = len({step for key, _, _, step in series if key == "client_cpu_pct"})
    assert served_scrapes(node_exporter) - scrapes_before >= samples + 1
    # Memory is the exporter's MemTotal - MemAvailable: this same machine's, within what changed meanwhile.
    memory = [value for key, value, _, _ in series if key == "mem_used_mb"]
    vm = psutil.virtual_memory()
    assert memory and abs(memory[-1] - (vm.total - vm.available) / 2**20) < 0.25 * vm.total / 2**20
    assert not [key for key, *_ in series if key.startswith(("gpu", "server_", "other_"))]
    (run,) = mlflow_runs(tmp_path)
    assert run.data.tags["sentinel.telemetry_source"] == "prometheus"
    assert 0.0 <= run.data.metrics["cpu_pct_mean"] <= 100.0 and run.data.metrics["mem_used_mb_max"] > 0


def test_a_remote_run_without_an_exporter_logs_no_host_figures(tmp_path, remote_style_server):
    result = run_cli(tmp_path, *RUN, f"server.url={remote_style_server.url}", "tracking.enabled=false")
    assert result.returncode == 0, result.output
    assert re.search(r"its CPU, memory and GPU telemetry\s+is unavailable", result.output), result.output
    folder = run_folder(tmp_path)
    assert read_run_file(folder).tags["sentinel.telemetry_source"] == "unavailable"
    keys = {key for key, *_ in read_series(folder)}
    assert keys == {"client_cpu_pct"}  # this client's own CPU, nothing passed off as the target's
    metrics = json.loads((folder / "summary.json").read_text())["metrics"]
    assert "client_cpu_pct_mean" in metrics and not {"cpu_pct_mean", "mem_used_mb_max"} & set(metrics)


def test_an_exporter_that_does_not_answer_warns_and_the_run_goes_on(tmp_path, remote_style_server):
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    result = run_cli(
        tmp_path,
        *RUN,
        f"server.url={remote_style_server.url}",
        f"telemetry.prometheus_url={dead}",
        "tracking.enabled=false",
    )
    assert result.returncode == 0, result.output
    assert f"cannot scrape {dead}: ConnectError" in result.output
    folder = run_folder(tmp_path)
    assert read_run_file(folder).tags["sentinel.telemetry_source"] == "unavailable"
    assert {key for key, *_ in read_series(folder)} == {"client_cpu_pct"}


def test_a_local_target_keeps_this_machines_telemetry(tmp_path, run_experiment):
    result = run_experiment(tmp_path, *SIM, "workload=quick", "tracking.enabled=false")
    assert read_run_file(result.output_dir).tags["sentinel.telemetry_source"] == "local"
    assert {"cpu_pct", "mem_used_mb", "server_cpu_pct"} <= {key for key, *_ in read_series(result.output_dir)}
