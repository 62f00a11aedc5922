"""Sweep bookkeeping through Hydra's Callback API, so that it works with any launcher.

A launcher may run the jobs in worker processes (hydra/launcher=joblib) or elsewhere: nothing a
job does in memory reaches the main process. So each job leaves an outcome file in its output
folder (beside the summary.json every run writes), and the main process builds the closing table
from the sweep folder once every job has ended.
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from sentinel_exp.names import Direction

OUTCOME_FILE = "sweep_job.json"
REUSED = "reused_run_id"  # outcome field: the FINISHED run a job reused instead of measuring again
SUMMARY_FILE = "summary.json"


def failed_value(direction: str) -> float:
    """The worst value for the sweeper: it ranks a job that measured nothing below every other."""
    return math.inf if direction == Direction.minimize else -math.inf


def objective_value(metrics: Mapping[str, float] | None, objective: str, direction: str) -> float:
    """What a job returns to the sweeper (an optimizer such as Optuna's takes any float, never None):
    the objective metric, or the worst value when the job did not run (None) or lacks the metric."""
    value = None if metrics is None else metrics.get(objective)
    return failed_value(direction) if value is None else float(value)


def record_error(output_dir: Path, message: str) -> None:
    """Leave a job's user error where the main process finds it (on_job_end adds the rest)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / OUTCOME_FILE).write_text(json.dumps({"error": message}), encoding="utf-8")


def record_reused(output_dir: Path, run_id: str) -> None:
    """Leave the finished run that a job stood in for (its configuration and repeat were done)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / OUTCOME_FILE).write_text(json.dumps({REUSED: run_id}), encoding="utf-8")


@dataclass
class JobOutcome:
    """One job of a sweep, as read back from its output folder."""

    num: int
    overrides: list[str]
    error: str | None
    # None: the job wrote no summary (it stopped before measuring).
    metrics: dict[str, float] | None
    # The finished run whose measurements the job reused (`already done`); None: it measured.
    reused_run_id: str | None = None

    @property
    def label(self) -> tuple[str, ...]:
        return (f"#{self.num}", *self.overrides)


class SweepSummary(Callback):
    """Registered under hydra.callbacks in conf/config.yaml. The instance is created in the main
    process; a launcher that runs jobs elsewhere pickles it along, so what on_multirun_start sets
    reaches every job's on_job_end, but nothing goes back the other way."""

    def __init__(self) -> None:
        # Tells this sweep's outcome files from those a reused hydra.sweep.dir still holds.
        self.sweep_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_id = uuid.uuid4().hex

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        path = Path(config.hydra.runtime.output_dir) / OUTCOME_FILE
        outcome = _read_json(path) or {}
        if job_return.status == JobStatus.FAILED:  # an exception the task did not expect
            exc = job_return._return_value  # the `return_value` property would raise it
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        elif isinstance(job_return.return_value, float) and math.isfinite(job_return.return_value):
            outcome["objective"] = job_return.return_value
        outcome.update(
            sweep_id=self.sweep_id,
            num=int(config.hydra.job.num),
            overrides=list(config.hydra.overrides.task),
        )
        path.write_text(json.dumps(outcome, indent=2), encoding="utf-8")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rich.markup import escape

        from sentinel_exp import console as ui
        from sentinel_exp.errors import UserError

        # Resolved as the launcher resolved it: `${now:...}` is cached in the config.
        jobs = read_outcomes(Path(str(config.hydra.sweep.dir)), self.sweep_id)
        if len(jobs) > 1:
            labels = distinguishing_labels([job.label for job in jobs])
            ui.print_sweep_table([(name, job.metrics) for name, job in zip(labels, jobs, strict=True)])
        objective = str(config.sweep.objective)
        unmeasured = [f"#{job.num}" for job in jobs if job.metrics is not None and objective not in job.metrics]
        if unmeasured:  # a misspelt objective, or runs where every request failed
            ui.stderr.print(
                f"[yellow]warning:[/] {escape(f'sweep.objective={objective} is not among the metrics of job(s)')} "
                f"{', '.join(unmeasured)}: the sweeper got {failed_value(str(config.sweep.direction))} for them",
                soft_wrap=True,
            )
        failed = [job for job in jobs if job.error is not None]
        if failed:
            ui.stderr.print(f"[bold red]{len(failed)} sweep job(s) failed:[/]", soft_wrap=True)
            for job in failed:
                ui.stderr.print("  " + escape(f"{' '.join(job.label)}: {job.error}"), soft_wrap=True)
            # Hydra passes SystemExit through (it catches only Exception around callbacks).
            sys.exit(UserError.exit_code)


def read_outcomes(sweep_dir: Path, sweep_id: str | None) -> list[JobOutcome]:
    """Every job of sweep `sweep_id` under `sweep_dir`, in job order; an outcome file of another
    sweep is skipped. The search goes down any depth: hydra.sweep.subdir may nest folders."""
    jobs = []
    for path in sweep_dir.rglob(OUTCOME_FILE):
        outcome = _read_json(path)
        if outcome is None or outcome.get("sweep_id") != sweep_id:
            continue
        summary = _read_json(path.parent / SUMMARY_FILE)
        error = outcome.get("error")
        jobs.append(
            JobOutcome(
                num=int(outcome["num"]),
                overrides=[str(o) for o in outcome["overrides"]],
                error=None if error is None else str(error),
                metrics=None if error is not None or summary is None else dict(summary["metrics"]),
                reused_run_id=outcome.get(REUSED),
            )
        )
    return sorted(jobs, key=lambda job: job.num)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def distinguishing_labels(jobs: list[tuple[str, ...]]) -> list[str]:
    """Each job named by its number and the overrides that differ between jobs (the swept ones)."""
    values: dict[str, set[str]] = {}
    for _, *overrides in jobs:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    swept = {key for key, seen in values.items() if len(seen) > 1}

    def short(override: str) -> str:  # workload.concurrency=4 -> concurrency=4: the table is narrow
        key, _, value = override.partition("=")
        return f"{key.rsplit('.', 1)[-1]}={value}"

    return [
        " ".join([number, *(short(o) for o in overrides if o.partition("=")[0] in swept)])
        for number, *overrides in jobs
    ]


def swept_keys(sweep_dir: Path) -> frozenset[str]:
    """The settings a sweep varies (`a=x,y`, ranges, and a preset's hydra.sweeper.params), read from
    the multirun.yaml Hydra writes into the sweep folder, so a job on any launcher can name its run
    by them."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        recorded = yaml.safe_load((sweep_dir / "multirun.yaml").read_text(encoding="utf-8"))
        hydra_node = recorded.get("hydra") or {}
        parsed = OverridesParser.create().parse_overrides(list(hydra_node["overrides"]["task"]))
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, HydraException):
        return frozenset()
    keys = {override.key_or_group for override in parsed if override.is_sweep_override()}
    keys |= set((hydra_node.get("sweeper") or {}).get("params") or {})
    return frozenset(keys)
