"""Soak: many requests at high concurrency with injected faults of every kind, through the real CLI.

The simulated server is scripted to fail 1% of the requests, spread evenly over every fault it can
inject (HTTP 500 and 503, an error mid-stream, a cut stream, an early end, a malformed chunk, a
stall past the read timeout). The runner runs as `python -m sentinel_exp` in a subprocess whose
memory is sampled from here. Checked at the end, and printed as one table:

- ok + failed = sent (nothing lost, nothing counted twice), and the records on disk = sent;
- the client's RSS grows less than 50 MB from the start of the measured phase to its end;
- the run ends FINISHED, exit status 0.

    python scripts/soak.py                       # 10,000 requests at concurrency 64
    python scripts/soak.py --requests 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sentinel_exp.names import FaultKind, Phase
from sentinel_exp.records import read_records

REPO = Path(__file__).resolve().parent.parent
RSS_GROWTH_LIMIT_MB = 50.0


def fault_plan(requests: int, warmup: int, fraction: float) -> dict[int, str]:
    """Request numbers (the server counts from 1, warmup first) -> a fault, every kind in turn."""
    kinds = list(FaultKind)
    count = round(requests * fraction)
    step = requests / max(count, 1)
    return {warmup + 1 + int(i * step): kinds[i % len(kinds)].value for i in range(count)}


def faults_override(plan: dict[int, str]) -> str:
    return "server.sim.faults={" + ",".join(f"{n}:{kind}" for n, kind in sorted(plan.items())) + "}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-fraction", type=float, default=0.01)
    parser.add_argument("--keep", action="store_true", help="keep the run folder and print where it is")
    args = parser.parse_args()

    warmup = 2
    plan = fault_plan(args.requests, warmup, args.fault_fraction)
    work = Path(tempfile.mkdtemp(prefix="sentinel-soak-"))
    run_dir = work / "run"
    overrides = [
        "server=simulated",
        "server.sim.load_ms=0",
        "server.sim.ttft_ms=5",
        "server.sim.itl_ms=1",
        "server.sim.tokens=8",
        "server.sim.jitter_ms=0",
        faults_override(plan),
        f"workload.requests={args.requests}",
        f"workload.warmup={warmup}",
        f"workload.concurrency={args.concurrency}",
        "workload.timeout_s=2",  # a stalled stream ends as ReadTimeout after 2 s
        "telemetry.enabled=false",
        "plots=false",
        "progress=false",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CI": "true", "OLLAMA_HOST": "http://127.0.0.1:9"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentinel_exp", *overrides],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    runner = psutil.Process(proc.pid)
    records_path = run_dir / "requests.jsonl"
    rss_at_start: float | None = None  # when the first measured record is on disk
    rss_peak = 0.0
    rss_last = 0.0
    while proc.poll() is None:
        try:
            rss = runner.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            break
        rss_peak = max(rss_peak, rss)
        if rss_at_start is None and records_path.exists() and '"phase":"measured"' in records_path.read_text():
            rss_at_start = rss
        rss_last = rss
        time.sleep(0.25)
    output = proc.communicate()[0]
    wall_s = time.perf_counter() - started

    records = read_records(records_path) if records_path.exists() else []
    measured = [r for r in records if r.phase == Phase.MEASURED]
    ok = sum(r.ok for r in measured)
    failed = sum(not r.ok for r in measured)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    by_class: dict[str, int] = summary.get("errors", {})
    growth = rss_last - (rss_at_start or rss_last)
    checks = {
        "ok + failed = sent": ok + failed == args.requests,
        "records on disk = sent": len(measured) == args.requests,
        f"RSS growth < {RSS_GROWTH_LIMIT_MB:.0f} MB": growth < RSS_GROWTH_LIMIT_MB,
        "status FINISHED, exit 0": summary.get("status") == "FINISHED" and proc.returncode == 0,
    }
    print(f"soak: {args.requests:,} requests at concurrency {args.concurrency}, {len(plan)} faults injected")
    print(f"  wall time          {wall_s:8.1f} s")
    print(f"  ok / failed        {ok:,} / {failed:,}  (sent {args.requests:,}, on disk {len(measured):,})")
    print(f"  failures by class  {json.dumps(by_class, sort_keys=True)}")
    start_mb = rss_at_start or 0.0
    print(f"  runner RSS (MB)    measured phase start {start_mb:.1f}, end {rss_last:.1f}, peak {rss_peak:.1f}")
    print(f"  requests/s         {summary.get('metrics', {}).get('requests_per_s', 0):.0f}")
    for name, passed in checks.items():
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")
    if not all(checks.values()):
        print(output[-3000:])
    if args.keep:
        print(f"run folder: {run_dir}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
