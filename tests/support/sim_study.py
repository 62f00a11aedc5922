"""Interleaved studies on the real simulated server, run in this process through the study's own
code (run/rounds.py) and compared as a sweep compares them: many seeded studies in the time a
few CLI sweeps take. Nothing is logged to MLflow and no plots are drawn; everything else (the
servers over loopback, the rounds, the records, the folders, the comparison) is what a sweep does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sentinel_exp.analysis.comparison import Comparison
from sentinel_exp.config.schema import register_configs, typed_config
from sentinel_exp.run.context import RunContext
from sentinel_exp.run.rounds import StudyArm, StudyPlan, run_study
from sentinel_exp.sweep.callbacks import read_outcomes
from sentinel_exp.sweep.study import MeasuredJob, arms, compare_arms, load_run, study_alpha
from support.compose import variant

# What every study here shares: the simulated server, no tracking, no pictures, no telemetry.
QUIET_RUN = ("server=simulated", "tracking.enabled=false", "plots=false", "telemetry.enabled=false")


@dataclass(frozen=True)
class StudyResult:
    comparisons: list[Comparison]
    seconds: float  # the study's wall time


def run_sim_study(folder: Path, arm_overrides: Sequence[Sequence[str]], common: Sequence[str]) -> StudyResult:
    """One interleaved study of the arms (each a list of overrides on top of `common`), compared."""
    import time

    register_configs()
    sweep_id = uuid.uuid4().hex
    study_arms = []
    for num, own in enumerate(arm_overrides):
        overrides = (*QUIET_RUN, *common, *own)
        cfg = typed_config(variant(*overrides))
        ctx = RunContext(
            output_dir=folder / str(num), overrides=list(own), sweep_id=sweep_id, resume=False, study_id=sweep_id
        )
        study_arms.append(StudyArm(cfg, ctx, num, tuple(own)))
    first = study_arms[0].cfg
    started = time.monotonic()
    run_study(study_arms, StudyPlan(folder, first.compare, first.sweep.objective, progress=False))
    seconds = time.monotonic() - started
    measured = []
    for job in read_outcomes(folder, sweep_id):
        run = None if job.folder is None else load_run(job.folder, {})
        if run is not None:
            measured.append(MeasuredJob(job.num, tuple(job.overrides), run))
    comparisons = compare_arms(
        arms(measured),
        objective=first.sweep.objective,
        min_effect_pct=first.compare.min_effect_pct,
        alpha=study_alpha(folder),
    )
    return StudyResult(comparisons, seconds)


def _one(args: tuple[Path, list[list[str]], list[str]]) -> StudyResult:
    folder, arm_overrides, common = args
    return run_sim_study(folder, arm_overrides, common)


def run_sim_studies(
    root: Path, studies: Sequence[tuple[Sequence[Sequence[str]], Sequence[str]]], workers: int = 2
) -> list[StudyResult]:
    """Many studies, `workers` at a time in processes of their own (a study installs signal
    handlers, which only a main thread may)."""
    jobs = [(root / f"study-{i}", [list(a) for a in arm], list(common)) for i, (arm, common) in enumerate(studies)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_one, jobs))
