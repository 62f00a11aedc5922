"""What the Ray launcher adds per job over Hydra's local launcher: the same 4-job sweep against the
simulated server, run with `hydra/launcher=basic` (jobs one after another in the launching
process) and with `hydra/launcher=sentinel_ray` (each job a Ray task) on a one-node Ray cluster
this script starts with `ray start --head --num-cpus=1`, so that its jobs too run one at a time.

Each sweep runs the real CLI in a subprocess from a scratch folder and logs to a sqlite store of
its own. Per job: the sweep's wall time over its jobs, and the gap from one job's last request to
the next job's first, from the records' own times. The legs alternate; the cluster is started
once (its start is not counted) and killed at the end, on every way out.

    python scripts/bench_launchers.py               # 2 sweeps each way, 4 jobs of 5 requests
    python scripts/bench_launchers.py --repeats 3 --requests 10
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
JOBS = 4
SWEEP = ["-m", "server=simulated", "server.sim.ttft_ms=40,41,42,43", "sweep.order=sequential", "plots=false"]


@dataclass
class Leg:
    launcher: str
    wall_s: float
    to_first_s: float  # command start -> the first job's first request
    gaps_s: list[float]  # one job's last request ended -> the next job's first request
    after_last_s: float  # the last job's last request ended -> the command's exit


def _env() -> dict[str, str]:
    env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def ray_head(scratch: Path) -> Iterator[str]:
    """A one-node Ray cluster, one CPU: its address. The node is `ray start --block` in a session
    of its own, killed with everything it started (its workers too) when the block ends."""
    import psutil

    port = _free_port()
    log = scratch / "ray-head.log"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}"]
    command += ["--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"]
    # Ray's socket paths must stay under the 107 bytes of a unix socket name: a short folder.
    ray_temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    command += [f"--temp-dir={ray_temp}", f"--ray-client-server-port={_free_port()}"]
    with open(log, "wb") as out:
        head = subprocess.Popen(command, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while b"Ray runtime started" not in log.read_bytes():
            if head.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Ray head did not start: see {log}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        started = list(psutil.Process(head.pid).children(recursive=True)) if head.poll() is None else []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        for process in started:
            with contextlib.suppress(psutil.Error):
                process.kill()
        head.wait(timeout=30)
        shutil.rmtree(ray_temp, ignore_errors=True)


def _first_and_last(folder: Path) -> tuple[float, float]:
    """When a job's first request started and its last one ended (wall clock, seconds)."""
    spans = []
    for line in (folder / "requests.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        spans.append((record["started_at"], record["started_at"] + (record["e2e_ms"] or 0.0) / 1000))
    return min(start for start, _ in spans), max(end for _, end in spans)


def run_leg(scratch: Path, launcher: str, overrides: list[str]) -> Leg:
    cwd = Path(tempfile.mkdtemp(prefix=f"{launcher}-", dir=scratch))
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "sentinel_exp", *SWEEP, *overrides, f"hydra.sweep.dir={cwd / 'multirun'}"],
        cwd=cwd,
        env=_env(),
        capture_output=True,
    )
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"the {launcher} sweep failed ({done.returncode}): {done.stderr.decode()[-3000:]}")
    jobs = sorted(_first_and_last(p.parent) for p in (cwd / "multirun").glob("*/requests.jsonl"))
    if len(jobs) != JOBS:
        raise SystemExit(f"the {launcher} sweep left {len(jobs)} job folders, not {JOBS}")
    gaps = [nxt[0] - job[1] for job, nxt in itertools.pairwise(jobs)]
    return Leg(launcher, ended - started, jobs[0][0] - started, gaps, ended - jobs[-1][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="sweeps each way (default 2)")
    parser.add_argument("--requests", type=int, default=5, help="measured requests per job (default 5)")
    args = parser.parse_args()
    workload = [f"workload.requests={args.requests}", "workload.warmup=1", "progress=false"]
    legs: list[Leg] = []
    with tempfile.TemporaryDirectory(prefix="bench-launchers-") as tmp, ray_head(Path(tmp)) as address:
        scratch = Path(tmp)
        ray = ["hydra/launcher=sentinel_ray", f"hydra.launcher.ray.init.address={address}"]
        for _ in range(args.repeats):
            legs.append(run_leg(scratch, "local", [*workload, "hydra/launcher=basic"]))
            legs.append(run_leg(scratch, "ray", [*workload, *ray]))
    report(legs, args.repeats)


def report(legs: list[Leg], repeats: int) -> None:
    columns = ("sweep wall", "start → first request", "gap between jobs (mean)", "last request → exit")
    table = Table(title=f"{JOBS}-job sweep, simulated server, median of {repeats}")
    table.add_column("launcher")
    for column in columns:
        table.add_column(column, justify="right")
    medians: dict[str, list[float]] = {}
    for launcher in ("local", "ray"):
        mine = [leg for leg in legs if leg.launcher == launcher]
        values = [
            statistics.median(leg.wall_s for leg in mine),
            statistics.median(leg.to_first_s for leg in mine),
            statistics.median(statistics.mean(leg.gaps_s) for leg in mine),
            statistics.median(leg.after_last_s for leg in mine),
        ]
        medians[launcher] = values
        table.add_row(launcher, *(f"{value:.2f} s" for value in values))
    console = Console()
    console.print(table)
    local, ray = medians["local"], medians["ray"]
    console.print(
        f"the Ray launcher adds {ray[2] - local[2]:+.2f} s per job (gap between jobs) and "
        f"{ray[1] - local[1]:+.2f} s once, before the first request; "
        f"{(ray[0] - local[0]) / JOBS:+.2f} s per job of the sweep's wall time"
    )


if __name__ == "__main__":
    main()
