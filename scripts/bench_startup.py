"""What a run costs beyond its requests: command start -> first request, last request -> exit, for
a single run, and the overhead each job of a sweep adds. Against the bundled simulated server.

Each case runs the real CLI in a subprocess from a scratch folder; the times come from the wall
clock around the process and from each record's own `started_at` and `e2e_ms` in requests.jsonl.
One untimed run first warms the disk cache.

    python scripts/bench_startup.py              # 3 single runs per case, one 8-job sweep
    python scripts/bench_startup.py --repeats 5 --jobs 8
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
ONE_REQUEST = [
    "server=simulated",
    "workload.requests=1",
    "workload.warmup=0",
    "plots=false",
    "telemetry.enabled=false",
    "progress=false",
]


@dataclass
class Timing:
    to_first_s: float  # command start -> first request submitted
    after_last_s: float  # last request ended -> process exited
    total_s: float
    gaps_s: list[float]  # a sweep: one job's last request ended -> the next job's first request


def _env() -> dict[str, str]:
    env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _spans(folder: Path) -> list[tuple[float, float]]:
    """(start, end) wall-clock seconds of each request in a records file."""
    spans = []
    for line in (folder / "requests.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        spans.append((record["started_at"], record["started_at"] + (record["e2e_ms"] or 0.0) / 1000))
    return spans


def run_case(cwd: Path, args: list[str]) -> Timing:
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "sentinel_exp", *args], cwd=cwd, env=_env(), capture_output=True)
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"the run failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    folders = sorted(
        (p.parent for p in cwd.rglob("requests.jsonl") if p.stat().st_mtime >= started - 1),
        key=lambda folder: _spans(folder)[0][0],
    )
    jobs = [_spans(folder) for folder in folders]
    first = jobs[0][0][0]
    last = max(end for _, end in jobs[-1])
    gaps = [nxt[0][0] - max(end for _, end in job) for job, nxt in itertools.pairwise(jobs)]
    return Timing(first - started, ended - last, ended - started, gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="single runs per case")
    parser.add_argument("--jobs", type=int, default=8, help="jobs of the sweep")
    args = parser.parse_args()

    table = Table(title="start-up and per-job cost (simulated server, 1 request a run)", title_justify="left")
    for column in ("case", "start -> first request", "last request -> exit", "total"):
        table.add_column(column, justify="left" if column == "case" else "right")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        root = Path(scratch)
        run_case(root, [*ONE_REQUEST, "tracking.enabled=false"])  # warms the disk cache
        cases = {
            "single run, tracking off": ["tracking.enabled=false"],
            "single run, existing sqlite store": [f"tracking.uri=sqlite:///{root / 'kept.db'}"],
            "single run, new sqlite store": None,
        }
        run_case(root, [*ONE_REQUEST, f"tracking.uri=sqlite:///{root / 'kept.db'}"])  # makes the kept store
        for name, extra in cases.items():
            timings = []
            for i in range(args.repeats):
                overrides = extra if extra is not None else [f"tracking.uri=sqlite:///{root / f'new{i}.db'}"]
                case_dir = root / f"case-{len(timings)}-{abs(hash(name))}"
                case_dir.mkdir()
                timings.append(run_case(case_dir, [*ONE_REQUEST, *overrides]))
            table.add_row(
                name + f" (median of {args.repeats})",
                f"{statistics.median(t.to_first_s for t in timings):.2f} s",
                f"{statistics.median(t.after_last_s for t in timings):.2f} s",
                f"{statistics.median(t.total_s for t in timings):.2f} s",
            )
        sweep_dir = root / "sweep"
        sweep_dir.mkdir()
        seeds = ",".join(str(n) for n in range(1, args.jobs + 1))
        sweep = run_case(
            sweep_dir, ["-m", *ONE_REQUEST, f"tracking.uri=sqlite:///{root / 'kept.db'}", f"workload.seed={seeds}"]
        )
        table.add_row(
            f"sweep of {args.jobs} jobs, existing sqlite store",
            f"{sweep.to_first_s:.2f} s",
            f"{sweep.after_last_s:.2f} s",
            f"{sweep.total_s:.2f} s",
        )
        gap = statistics.mean(sweep.gaps_s)
        table.add_row(
            "  each further job: last request -> next job's first request",
            f"{gap:.2f} s (mean)",
            f"{min(sweep.gaps_s):.2f}-{max(sweep.gaps_s):.2f} s",
            "",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
