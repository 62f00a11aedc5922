"""A real Ray cluster on this machine: a head node and a second node process started with
`ray start`, the second holding a custom resource that stands in for "the GPU box". Each node is
`ray start --block` in a session of its own, so stopping kills exactly this cluster's processes
(the raylets, GCS, agents and workers), never another Ray on the machine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from support.mlflow_server import free_port

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
GPU_BOX = "gpu_box"  # the custom resource only the second node has


@dataclass
class RayNode:
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class RayCluster:
    """`start()` returns once both nodes are up; `stop()` (also on every failure path) kills them."""

    root: Path
    cpus_per_node: int = 1
    port: int = field(default_factory=free_port)
    nodes: list[RayNode] = field(default_factory=list)
    # Ray's socket paths must stay under the 107 bytes of a unix socket name: a short folder.
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ray", dir="/tmp")))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The nodes' environment, which their worker processes inherit: this checkout first on the
        path, so that the jobs run the code under test."""
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        return env

    def _ports(self) -> list[str]:
        """Every port a node listens on, free ones: two nodes on one machine must not share any.
        The workers' range is drawn first and the other ports outside it: Ray refuses to start a
        node whose object manager port falls among its worker ports."""
        low = free_port() // 100 * 100 % 50000 + 10000
        workers = range(low, low + 100)

        def outside() -> int:
            port = free_port()
            while port in workers:
                port = free_port()
            return port

        return [
            f"--node-manager-port={outside()}",
            f"--object-manager-port={outside()}",
            f"--dashboard-agent-listen-port={outside()}",
            f"--dashboard-agent-grpc-port={outside()}",
            f"--metrics-export-port={outside()}",
            f"--runtime-env-agent-port={outside()}",
            f"--min-worker-port={low}",
            f"--max-worker-port={low + 99}",
        ]

    def _start_node(self, name: str, args: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / f"ray-{name}.log"
        with open(log, "wb") as out:
            command = [RAY, "start", "--block", f"--num-cpus={self.cpus_per_node}"]
            command += ["--object-store-memory=80000000", "--disable-usage-stats", *self._ports(), *args]
            process = subprocess.Popen(
                command,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nodes.append(RayNode(process, log))

    def start(self, timeout_s: float = 180) -> RayCluster:
        try:
            self._start_node(
                "head",
                [
                    "--head",
                    f"--port={self.port}",
                    f"--temp-dir={self.temp_dir}",
                    "--include-dashboard=false",
                    f"--dashboard-port={free_port()}",
                    f"--ray-client-server-port={free_port()}",
                ],
            )
            self._start_node("gpu-box", [f"--address={self.address}", f"--resources={json.dumps({GPU_BOX: 1})}"])
            self.wait_for_nodes(2, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_nodes(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.alive_nodes()) < count:
            for node in self.nodes:
                if node.process.poll() is not None:
                    raise RuntimeError(f"a Ray node exited with {node.process.returncode}: see {node.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Ray cluster at {self.address} had no {count} nodes within {timeout_s:.0f} s")
            time.sleep(1)

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes as `ray.nodes()` gives them (NodeID, Resources, ...), read in a
        subprocess, so that the test process never becomes a Ray driver itself."""
        script = (
            f"import json, ray; ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False); "
            "print(json.dumps([n for n in ray.nodes() if n['Alive']]))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], env=self.env(), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            return []
        nodes: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
        return nodes

    def node_id_with(self, resource: str) -> str:
        return next(str(node["NodeID"]) for node in self.alive_nodes() if resource in node["Resources"])

    def stop(self) -> None:
        """SIGKILL to each node's session, as `ray stop --force` does to every Ray on the machine: a
        graceful stop drains each node for up to 30 s, and this cluster's state is thrown away."""
        nodes, self.nodes = self.nodes, []
        for node in reversed(nodes):
            # Ray's worker processes have process groups of their own: found before the raylet goes.
            workers = _descendants(node.process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            for worker in workers:
                with contextlib.suppress(psutil.Error):
                    worker.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=10)
        with contextlib.suppress(OSError):
            subprocess.run(["rm", "-rf", str(self.temp_dir)], check=False)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []
