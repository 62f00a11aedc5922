"""Can the verdicts be trusted on a real engine? Repeated interleaved studies on the embedded
llama.cpp server, through the real CLI (`python -m sentinel_exp -m ...`), as a user runs them:

- A/A studies: one configuration as two arms (`arm=A,B`): every improved or worse verdict on the
  objective, or on any row, is a false one;
- studies with a known true effect (by default `workload.input_tokens=100,110`: a longer prompt
  lengthens prefill, so TTFT grows): how often the change is found (power), and how often its CI
  covers the true change. The truth is taken from all the effect studies' rounds together (the
  geometric mean of every round's ratio), far more precise than any one study.

Prints each rate with its 95% Wilson interval and the machine time per study. Goals on a 2-core
machine: A/A false verdicts <= 5% of studies; a 10% TTFT p50 change found with >= 80% power in
<= 5 minutes of machine time per two-arm study.

    python scripts/bench_verdicts.py [--studies 10] [--requests 40] [--effect workload.input_tokens=100,110]
                                     [--budget-s 300] [--threads 1] [--out DIR]

With --out, a study already in DIR is read back rather than run again: `--studies 1`, then
`--studies 2` with the same DIR, and so on, runs one more pair each time and reports on all.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sentinel_exp.analysis.comparison import Comparison, Verdict  # noqa: E402
from sentinel_exp.sweep.callbacks import read_outcomes, sweep_record  # noqa: E402
from sentinel_exp.sweep.study import MeasuredJob, arms, compare_arms, load_run, read_study, study_alpha  # noqa: E402

CALLED = {Verdict.IMPROVED, Verdict.WORSE}


@dataclass(frozen=True)
class Study:
    comparison: Comparison
    seconds: float  # the rounds' machine time
    wall_s: float  # the whole command


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"{hits}/{n} = {100 * hits / n:.0f}% [95% CI {100 * low:.0f}, {100 * high:.0f}]"


def run_study(folder: Path, sweep: list[str], common: list[str]) -> Study:
    """One study through the CLI, in `folder`; its comparison read back from the sweep folder. A
    study that finished in an earlier call with the same --out is read again, not rerun, so a long
    bench can be run a study at a time (between other work on a shared machine)."""
    timing = folder / "bench_wall_s.txt"
    if timing.exists():
        wall = float(timing.read_text(encoding="utf-8"))
    else:
        shutil.rmtree(folder, ignore_errors=True)  # a study cut short earlier starts again
        folder.mkdir(parents=True)
        env = {**os.environ, "CI": "true", "PYTHONPATH": str(REPO)}
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "sentinel_exp", "-m", *common, *sweep],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        wall = time.monotonic() - started
        if done.returncode != 0:
            sys.exit(f"a study failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        timing.write_text(f"{wall:.3f}", encoding="utf-8")
    [sweep_dir] = [p.parent for p in folder.glob("multirun/*/*/multirun.yaml")]
    measured = []
    for job in read_outcomes(sweep_dir, sweep_record(sweep_dir)):
        run = None if job.folder is None or job.metrics is None else load_run(job.folder, job.metrics)
        if run is not None:
            measured.append(MeasuredJob(job.num, tuple(job.overrides), run))
    [comparison] = compare_arms(arms(measured), alpha=study_alpha(sweep_dir))
    return Study(comparison, float(read_study(sweep_dir).get("seconds", wall)), wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10, help="A/A studies, and as many with the true effect")
    parser.add_argument("--requests", type=int, default=40, help="measured requests per arm")
    parser.add_argument("--effect", default="workload.input_tokens=100,110", help="the sweep with a true effect")
    parser.add_argument("--budget-s", type=float, help="compare.budget_s: stop each study when decided")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (SENTINEL_LLAMA_THREADS)")
    parser.add_argument(
        "--out",
        type=Path,
        help="keep the studies' folders here (default: a temporary one); studies already there are read, not rerun",
    )
    args = parser.parse_args()
    os.environ["SENTINEL_LLAMA_THREADS"] = str(args.threads)
    common = [
        "server=embedded",
        f"workload.requests={args.requests}",
        "workload.input_tokens=100",  # the A/A arms' prompts; the effect sweep overrides it
        "options.num_predict=8",  # TTFT is the objective: short answers keep a study short
        "tracking.enabled=false",
        "plots=false",
    ]
    if args.budget_s is not None:
        common.append(f"compare.budget_s={args.budget_s:g}")
    root = args.out or Path(tempfile.mkdtemp(prefix="bench-verdicts-"))
    null, effect = [], []
    for i in range(args.studies):
        null.append(run_study(root / f"aa-{i}", ["arm=A,B"], [*common, f"compare.seed={i}"]))
        effect.append(run_study(root / f"effect-{i}", [args.effect], [*common, f"compare.seed={i}"]))
        print(
            f"  study {i + 1}/{args.studies}: A/A {null[-1].comparison.primary.change_pct:+.1f}%, "  # type: ignore[union-attr]
            f"effect {effect[-1].comparison.primary.change_pct:+.1f}%",
            flush=True,
        )  # type: ignore[union-attr]
    report(null, effect, args)


def report(null: list[Study], effect: list[Study], args: argparse.Namespace) -> None:
    n = len(null)
    objective_false = sum(s.comparison.primary.verdict in CALLED for s in null)  # type: ignore[union-attr]
    any_false = sum(any(r.verdict in CALLED for r in s.comparison.rows) for s in null)
    rows = [s.comparison.primary for s in effect]
    logs = [math.log1p(r.change_pct / 100) for r in rows if r is not None and r.change_pct is not None]
    truth = 100 * math.expm1(sum(logs) / len(logs))
    found = sum(r is not None and r.verdict == Verdict.WORSE for r in rows)
    covered = sum(r is not None and r.ci_low is not None and r.ci_low <= truth <= r.ci_high for r in rows)  # type: ignore[operator]
    machine = sorted(s.seconds for s in [*null, *effect])
    wall = sorted(s.wall_s for s in [*null, *effect])
    mde = sorted(r.mde_pct for r in rows if r is not None and r.mde_pct is not None)
    print(
        f"\nbench_verdicts: embedded llama.cpp, {args.requests} requests per arm, {args.threads} thread(s)"
        + (f", compare.budget_s={args.budget_s:g}" if args.budget_s else "")
    )
    print(f"  A/A ({n} studies): objective false verdicts {rate(objective_false, n)}; any row {rate(any_false, n)}")
    print(f"  {args.effect}: true TTFT p50 change {truth:+.1f}% (all {len(effect)} studies' rounds together)")
    print(f"  found (worse) in {rate(found, n)}; CI covers the truth in {rate(covered, n)}")
    if mde:
        print(f"  smallest change found with 80% power, per study: median {mde[len(mde) // 2]:.1f}%")
    print(
        f"  machine time per two-arm study: median {machine[len(machine) // 2]:.0f} s of rounds, "
        f"{wall[len(wall) // 2]:.0f} s for the whole command"
    )


if __name__ == "__main__":
    main()
