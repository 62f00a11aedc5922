"""Sweep bookkeeping through Hydra's Callback API, so that it works with any launcher.

A launcher may run the jobs in worker processes (hydra/launcher=joblib) or elsewhere: nothing a
job does in memory reaches the main process. So each job leaves an outcome file in its output
folder (beside the summary.json every run writes), and the main process builds the closing table
from the sweep folder once every job has ended.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from sentinel_exp import tags as tag
from sentinel_exp.names import Direction, RunStatus
from sentinel_exp.store.run_folder import RunFolder, RunSummary

if TYPE_CHECKING:
    from sentinel_exp.analysis.comparison import Arm, Comparison
    from sentinel_exp.sweep.study import Best

REUSED = "reused_run_id"  # outcome field: the FINISHED run a job reused instead of measuring again
NOT_LOGGED = "not_logged"  # outcome field: why the MLflow store did not take the job's run


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
    RunFolder(output_dir).sweep_job.write_text(json.dumps({"error": message}), encoding="utf-8")


def record_reused(output_dir: Path, run_id: str) -> None:
    """Leave the finished run that a job stood in for (its configuration and repeat were done)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    RunFolder(output_dir).sweep_job.write_text(json.dumps({REUSED: run_id}), encoding="utf-8")


def record_not_logged(output_dir: Path, message: str) -> None:
    """Leave why a job's run is only in its folder (the store did not take it)."""
    path = RunFolder(output_dir).sweep_job
    outcome = _read_json(path) or {}
    outcome[NOT_LOGGED] = message
    path.write_text(json.dumps(outcome), encoding="utf-8")


@dataclass
class JobOutcome:
    """One job of a sweep, as read back from its output folder."""

    num: int
    overrides: list[str]
    error: str | None
    # None: the job wrote no summary (it stopped before measuring).
    metrics: dict[str, float] | None
    folder: Path | None = None
    # The finished run whose measurements the job reused (`already done`); None: it measured.
    reused_run_id: str | None = None
    not_logged: str | None = None  # the run is in its folder only; sentinel_exp.sync uploads it

    @property
    def label(self) -> tuple[str, ...]:
        return (f"#{self.num}", *self.overrides)


class SweepSummary(Callback):
    """Registered under hydra.callbacks in conf/config.yaml. The instance is created in the main
    process; a launcher that runs jobs elsewhere pickles it along, so what on_multirun_start sets
    reaches every job's on_job_end, but nothing goes back the other way.

    The sweep is one parent run. Its run.json is in the sweep folder (as a run's is in its own) and
    is uploaded to MLflow before the first job; the sweep's id, left in sweep.json, is the parent's
    uid, by which every job's upload finds the parent. At the end the parent is closed with the
    comparison of the configurations among its artifacts."""

    def __init__(self) -> None:
        # Tells this sweep's outcome files from those a reused hydra.sweep.dir still holds.
        self.sweep_id: str | None = None
        self._config: DictConfig | None = None
        self._parent: Any = None  # the parent's run_folder.RunJournal in the sweep folder
        self._finished = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_id = uuid.uuid4().hex
        self._config = config
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        RunFolder(sweep_dir).sweep_json.write_text(json.dumps({"sweep_id": self.sweep_id}), encoding="utf-8")
        self._parent = _open_parent_run(config, self.sweep_id, sweep_dir)
        _ACTIVE.append(self)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        path = RunFolder(Path(config.hydra.runtime.output_dir)).sweep_job
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
        self.finish(interrupted=False)

    def finish(self, interrupted: bool) -> None:
        """The closing table, the comparison, the failed jobs; the parent run closed. Called at the
        end of the sweep, or by the entry point when the sweep was stopped (what finished is still
        compared)."""
        if self._finished or self._config is None:
            return
        self._finished = True
        _ACTIVE.remove(self)
        config = self._config
        from rich.markup import escape

        from sentinel_exp.errors import UserError
        from sentinel_exp.report import console as ui

        # Resolved as the launcher resolved it: `${now:...}` is cached in the config.
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = read_outcomes(sweep_dir, self.sweep_id)
        _show_jobs(jobs, str(config.sweep.objective), str(config.sweep.direction))
        try:
            compared = _compare(config, jobs, sweep_dir)
        except UserError as exc:
            ui.stderr.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            compared = Compared()
        best = compared.best
        if best is not None:
            ui.stdout.print(escape(f"best: {best.name or 'none'} ({best.why})"), soft_wrap=True)
        failed = [job for job in jobs if job.error is not None]
        if failed:
            ui.stderr.print(f"[bold red]{len(failed)} sweep job(s) failed:[/]", soft_wrap=True)
            for job in failed:
                ui.stderr.print("  " + escape(f"{' '.join(job.label)}: {job.error}"), soft_wrap=True)
        parent_logged = self._close_parent(_sweep_status(interrupted, bool(failed)), compared)
        not_logged = [f"#{job.num}" for job in jobs if job.not_logged]
        if not_logged or not parent_logged:
            ui.stderr.print(
                "[yellow]warning:[/] "
                + escape(
                    f"not logged to MLflow: {', '.join(not_logged + ([] if parent_logged else ['the sweep']))}; "
                    f"the sweep folder holds everything: python -m sentinel_exp.sync {sweep_dir}"
                ),
                soft_wrap=True,
            )
        if interrupted:
            return
        # Hydra passes SystemExit through (it catches only Exception around callbacks).
        if failed:
            sys.exit(UserError.exit_code)
        if not_logged or not parent_logged:
            from sentinel_exp.errors import NotLogged

            sys.exit(NotLogged.exit_code)

    def _close_parent(self, status: RunStatus, compared: Compared) -> bool:
        """End the parent's run.json and upload it; False when the store did not take it."""
        from sentinel_exp.report import console as ui
        from sentinel_exp.store.upload import upload_now

        if self._parent is None:
            return True
        best = compared.best
        if best is not None and best.name is not None:
            self._parent.set_tags({tag.BEST_JOB: best.name, tag.BEST_WHY: best.why})
        self._parent.set_tags(compared.tags)
        self._parent.add_artifacts(compared.files)
        self._parent.end(status)
        if self._parent.run.tracking_uri is None:
            return True
        try:
            _, line = upload_now(self._parent.folder)
        except Exception as exc:  # the store went away: the sweep folder still has everything
            ui.stderr.print(f"warning: could not log the sweep's parent run: {exc}", markup=False, soft_wrap=True)
            return False
        ui.stdout.print(f"sweep: {line}", soft_wrap=True, markup=False)
        return True


def _sweep_title(config: DictConfig) -> str:
    """`Sweep keep_alive_ab: ...` for a preset, `Sweep: ...` for an ad-hoc `-m` sweep."""
    name = "" if config.sweep.name == "none" else f" {config.sweep.name}"
    return f"Sweep{name}: {' '.join(str(o) for o in config.hydra.overrides.task)}"


def _sweep_status(interrupted: bool, any_failed: bool) -> RunStatus:
    if interrupted:
        return RunStatus.KILLED
    return RunStatus.FAILED if any_failed else RunStatus.FINISHED


# The sweep this process is running, so the entry point can close it when the sweep is stopped.
_ACTIVE: list[SweepSummary] = []


def _show_jobs(jobs: list[JobOutcome], objective: str, direction: str) -> None:
    """The closing table of the jobs, and a warning for the jobs the objective is missing from."""
    from rich.markup import escape

    from sentinel_exp.report import console as ui

    if len(jobs) > 1:
        labels = distinguishing_labels([job.label for job in jobs])
        ui.print_sweep_table([(name, job.metrics) for name, job in zip(labels, jobs, strict=True)])
    unmeasured = [f"#{job.num}" for job in jobs if job.metrics is not None and objective not in job.metrics]
    if unmeasured:  # a misspelt objective, or runs where every request failed
        ui.stderr.print(
            f"[yellow]warning:[/] {escape(f'sweep.objective={objective} is not among the metrics of job(s)')} "
            f"{', '.join(unmeasured)}: the sweeper got {failed_value(direction)} for them",
            soft_wrap=True,
        )


def finish_interrupted_sweep() -> None:
    """Compare what finished and close the parent run as KILLED, if a sweep was stopped midway."""
    for sweep in list(_ACTIVE):
        sweep.finish(interrupted=True)


def _open_parent_run(config: DictConfig, sweep_id: str, sweep_dir: Path) -> Any:
    """The sweep's parent run: its run.json in the sweep folder, uploaded to MLflow at once so
    that the runs of its jobs nest under it as they end. A store that cannot take it only warns:
    each job's upload, or a later sync, makes the parent from the folder."""
    from sentinel_exp.names import Role
    from sentinel_exp.report import console as ui
    from sentinel_exp.store.run_folder import RunJournal, new_sweep_file
    from sentinel_exp.store.upload import upload_now

    swept = " ".join(str(o) for o in config.hydra.overrides.task)
    name = str(config.sweep.name) if config.sweep.name != "none" else "sweep"
    tags = {
        tag.ROLE: Role.SWEEP,
        tag.SWEEP_ID: sweep_id,
        tag.SWEEP_OVERRIDES: swept,
        tag.OBJECTIVE: f"{config.sweep.objective} ({config.sweep.direction})",
        tag.OUTPUT_DIR: str(sweep_dir),
    }
    tracking_uri = str(config.tracking.uri) if config.tracking.enabled else None
    run_file = new_sweep_file(f"{name}: {swept}"[:250], str(config.tracking.experiment), tracking_uri, tags, sweep_id)
    journal = RunJournal(sweep_dir, run_file)
    if tracking_uri is not None:
        try:
            upload_now(sweep_dir, keep_open=True)
        except Exception as exc:
            ui.stderr.print(f"warning: no MLflow parent run for this sweep yet: {exc}", markup=False, soft_wrap=True)
    return journal


@dataclass
class Compared:
    """What a sweep's comparison leaves for its parent run: the files, the best, more tags."""

    files: list[Path] = field(default_factory=list)
    best: Best | None = None
    tags: dict[str, str] = field(default_factory=dict)


def _compare(config: DictConfig, jobs: list[JobOutcome], sweep_dir: Path) -> Compared:
    """Compare the configurations that measured something: the one-screen table on the console,
    compare.md, report.md and plots in the sweep folder (their paths returned, for the parent
    run), and the best configuration where the verdicts name one."""
    from sentinel_exp.analysis.comparison import to_markdown
    from sentinel_exp.report import console as ui
    from sentinel_exp.sweep.study import (
        MeasuredJob,
        arm_setups,
        arms,
        best_arm,
        compare_arms,
        folder_setup,
        load_run,
        study_alpha,
        study_lines,
        with_setup_notes,
    )

    measured = []
    for job in jobs:
        run = None if job.folder is None or job.metrics is None else load_run(job.folder, job.metrics)
        if run is not None and job.folder is not None:
            measured.append(MeasuredJob(job.num, tuple(job.overrides), run, folder_setup(job.folder)))
    configurations = arms(measured)
    comparisons = compare_arms(
        configurations,
        baseline=None if config.compare.baseline is None else str(config.compare.baseline),
        objective=str(config.sweep.objective),
        min_effect_pct=float(config.compare.min_effect_pct),
        alpha=study_alpha(sweep_dir),
    )
    comparisons = with_setup_notes(comparisons, arm_setups(measured))
    if not comparisons:
        return Compared()
    comparisons = [_with_sweep_notes(c, jobs) for c in comparisons]
    path = RunFolder(sweep_dir).compare
    lines = study_lines(sweep_dir)
    noise_files: list[Path] = []
    noise_tags: dict[str, str] = {}
    if str(config.sweep.name) == "aa":
        noise_files, noise_lines, noise_tags = _noise_of_this_machine(config, jobs, sweep_dir, comparisons[0])
        lines += noise_lines
    else:
        lines += _quoted_noise(config, jobs)
    ui.print_study(comparisons, lines, str(path))
    table = to_markdown(comparisons)
    path.write_text(table, encoding="utf-8")
    best = best_arm(comparisons[0].baseline, comparisons)
    report = _sweep_report(config, sweep_dir, configurations, comparisons, table)
    return Compared([path, *noise_files, *report], best, noise_tags)


def _first_run(jobs: list[JobOutcome]) -> dict[str, Any]:
    """The run.json of the sweep's first measured job: whose host, server and model it is."""
    for job in jobs:
        run = None if job.folder is None else _read_json(RunFolder(job.folder).run_json)
        if run:
            return run
    return {}


def _noise_of_this_machine(
    config: DictConfig, jobs: list[JobOutcome], sweep_dir: Path, comparison: Comparison
) -> tuple[list[Path], list[str], dict[str, str]]:
    """sweep=aa: the A/A comparison as this machine's noise: noise.md, console lines, and the
    parent's metrics and tag (by which later comparisons find it)."""
    from sentinel_exp.sweep.noise import NOISE_TAG, console_lines, noise_identity, noise_report, to_markdown
    from sentinel_exp.sweep.study import read_study

    design = read_study(sweep_dir)
    report = noise_report(comparison, int(config.workload.requests), float(design.get("seconds", 0.0)))
    objective = str(config.sweep.objective)
    path = RunFolder(sweep_dir).noise
    path.write_text(to_markdown(report, objective), encoding="utf-8")
    RunSummary(metrics=report.metrics()).write(sweep_dir)
    run = _first_run(jobs)
    identity = noise_identity(run.get("tags") or {}, run.get("params") or {})
    return [path], console_lines(report, objective), {NOISE_TAG: identity}


def _quoted_noise(config: DictConfig, jobs: list[JobOutcome]) -> list[str]:
    """The latest A/A study of this host, server and model, quoted beside a comparison."""
    if not config.tracking.enabled:
        return []
    from datetime import datetime

    from sentinel_exp.store.tracking import RunStore
    from sentinel_exp.sweep.noise import NOISE_TAG, noise_identity, quote

    run = _first_run(jobs)
    identity = noise_identity(run.get("tags") or {}, run.get("params") or {})
    try:
        found = RunStore(str(config.tracking.uri)).latest_tagged(str(config.tracking.experiment), NOISE_TAG, identity)
    except Exception:  # the store is away: the comparison stands without the quote
        return []
    if found is None:
        return []
    when = datetime.fromtimestamp(found.start_time / 1000).strftime("%Y-%m-%d %H:%M")
    line = quote(found.metrics, str(config.sweep.objective), when)
    return [line] if line else []


def _with_sweep_notes(comparison: Comparison, jobs: list[JobOutcome]) -> Comparison:
    """What the sweep knows and the statistics do not: a reused arm is not paired with this
    study's rounds, and a contended machine may have moved the numbers."""
    import dataclasses

    notes = list(comparison.notes)
    reused = [job for job in jobs if job.reused_run_id is not None]
    if reused:
        names = ", ".join(f"#{job.num}" for job in reused)
        notes.append(
            f"{names} reused an earlier run of the same configuration (already done): it is not paired with "
            f"this study's rounds, so its comparisons get no significance verdict; force=true measures it "
            f"again beside the others"
        )
    contended = [job for job in jobs if job.folder is not None and _tag(job.folder, tag.CONTENDED) == "true"]
    if contended:
        names = ", ".join(f"#{job.num}" for job in contended)
        notes.append(
            f"{names} ran on a contended machine ({tag.CONTENDED}=true: other processes took CPU the "
            f"server needed); the verdicts hold for the noise the rounds saw, but the numbers are not this "
            f"machine's quiet ones"
        )
    return dataclasses.replace(comparison, notes=tuple(notes))


def _tag(folder: Path, name: str) -> str | None:
    run = _read_json(RunFolder(folder).run_json) or {}
    tags = run.get("tags")
    return str(tags[name]) if isinstance(tags, dict) and name in tags else None


def _sweep_report(
    config: DictConfig, sweep_dir: Path, configurations: list[Arm], comparisons: list[Comparison], table: str
) -> list[Path]:
    """report.md of the sweep with its CDFs and percentile bars; a failure costs only the pictures."""
    from sentinel_exp.report import console as ui
    from sentinel_exp.report.markdown import SweepText, write_sweep_report
    from sentinel_exp.sweep.study import arm_records, percentile_rows, verdict_line

    try:
        return write_sweep_report(
            sweep_dir,
            SweepText(_sweep_title(config), table, [verdict_line(comparison) for comparison in comparisons]),
            {arm.name: arm_records(arm) for arm in configurations},
            percentile_rows(configurations),
        )
    except Exception as exc:
        ui.stderr.print(f"warning: could not draw the sweep's plots: {type(exc).__name__}: {exc}", markup=False)
        return []


def read_outcomes(sweep_dir: Path, sweep_id: str | None) -> list[JobOutcome]:
    """Every job of sweep `sweep_id` under `sweep_dir`, in job order; an outcome file of another
    sweep is skipped. The search goes down any depth: hydra.sweep.subdir may nest folders."""
    jobs = []
    for path in sweep_dir.rglob(RunFolder.SWEEP_JOB):
        outcome = _read_json(path)
        if outcome is None or outcome.get("sweep_id") != sweep_id:
            continue
        summary = RunSummary.read(path.parent)
        error = outcome.get("error")
        jobs.append(
            JobOutcome(
                num=int(outcome["num"]),
                overrides=[str(o) for o in outcome["overrides"]],
                error=None if error is None else str(error),
                metrics=None if error is not None or summary is None else dict(summary.metrics),
                folder=path.parent,
                reused_run_id=outcome.get(REUSED),
                not_logged=outcome.get(NOT_LOGGED),
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
    """Each job named by its number and the overrides that differ between jobs (the swept ones),
    keys shortened as the comparison's names are (study.short_keys)."""
    from sentinel_exp.sweep.study import short_keys

    values: dict[str, set[str]] = {}
    for _, *overrides in jobs:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    swept = {key for key, seen in values.items() if len(seen) > 1}
    label = short_keys(swept)

    def short(override: str) -> str:  # workload.concurrency=4 -> concurrency=4: the table is narrow
        key, _, value = override.partition("=")
        return f"{label[key]}={value}"

    return [
        " ".join([number, *(short(o) for o in overrides if o.partition("=")[0] in swept)])
        for number, *overrides in jobs
    ]


def sweep_record(sweep_dir: Path) -> str | None:
    """The sweep id that on_multirun_start left in the sweep folder for the jobs."""
    sweep_id = (_read_json(RunFolder(sweep_dir).sweep_json) or {}).get("sweep_id")
    return None if sweep_id is None else str(sweep_id)


def swept_keys(sweep_dir: Path) -> frozenset[str]:
    """The settings a sweep varies (`a=x,y`, ranges, and a preset's hydra.sweeper.params), read from
    the multirun.yaml Hydra writes into the sweep folder, so a job on any launcher can name its run
    by them."""
    record = RunFolder(sweep_dir).multirun
    try:
        written = record.stat().st_mtime_ns
    except OSError:
        return frozenset()
    return _swept_keys(record, written)


@functools.lru_cache(maxsize=8)
def _swept_keys(record: Path, written: int) -> frozenset[str]:
    """Parsed once per process and version of the file (`written`): every job of a sweep reads it."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it: 10x faster
        recorded = yaml.load(record.read_text(encoding="utf-8"), Loader=loader)
        hydra_node = recorded.get("hydra") or {}
        parsed = OverridesParser.create().parse_overrides(list(hydra_node["overrides"]["task"]))
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, HydraException):
        return frozenset()
    keys = {override.key_or_group for override in parsed if override.is_sweep_override()}
    keys |= set((hydra_node.get("sweeper") or {}).get("params") or {})
    return frozenset(keys)
