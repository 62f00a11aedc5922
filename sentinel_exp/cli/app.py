"""The `python -m sentinel_exp` entry point: Hydra composes, experiment.run measures."""

from __future__ import annotations

import gc
import logging
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.markup import escape

from sentinel_exp.cli import early_stop
from sentinel_exp.cli.help import help_text, wants_help
from sentinel_exp.config.schema import register_configs, typed_config
from sentinel_exp.errors import Interrupted, NotLogged, RunFailed, UserError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sentinel_exp.run.context import RunContext


def config_dir() -> Path:
    """conf/ ships inside the wheel as sentinel_exp/conf; in a checkout it is beside sentinel_exp/."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "conf"
    return packaged if packaged.is_dir() else package.parent / "conf"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    from sentinel_exp.report import console as ui
    from sentinel_exp.run.experiment import run
    from sentinel_exp.sweep.callbacks import objective_value, record_not_logged, record_reused

    early_stop.release()
    # A full disk must not print a traceback per log line from Hydra's log file in the run folder:
    # the run reports the full disk itself, once.
    logging.raiseExceptions = False
    ctx = _run_context()
    try:
        typed = typed_config(cfg)
        if typed.sweep.name == "diagnose":
            from sentinel_exp.cli.doctor import run_doctor

            run_doctor(typed, ctx, HydraConfig.get().mode == RunMode.MULTIRUN)
            return objective_value(None, cfg.sweep.objective, cfg.sweep.direction)
        outcome = run(typed, ctx)
        metrics: Mapping[str, float] | None = outcome.metrics
        if outcome.reused and outcome.run_id is not None:
            record_reused(ctx.output_dir, outcome.run_id)
        if outcome.not_logged:
            # Measured, and the folder holds it all; the warning said how to upload it. A sweep
            # goes on, and names the jobs that are not logged at its end.
            if HydraConfig.get().mode != RunMode.MULTIRUN:
                sys.exit(NotLogged.exit_code)
            record_not_logged(ctx.output_dir, outcome.not_logged)
    except UserError as exc:
        _user_error(exc, ctx)  # exits, except in a sweep
        metrics = None
    except Interrupted as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        ui.stderr.print("[yellow]interrupted[/]")
        sys.exit(130)
    # What a Hydra sweeper (e.g. Optuna) optimises; a single run's value goes nowhere.
    return objective_value(metrics, cfg.sweep.objective, cfg.sweep.direction)


class OutputFolderCheck(Callback):
    """Registered first under hydra.callbacks in conf/config.yaml: before Hydra makes the run's (or
    the sweep's) folder, a folder that cannot be written is one clear message and exit status 2,
    not Hydra's traceback or a failure halfway through the run."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.run.dir))
        _stop_if_unwritable(folder, "hydra.run.dir")
        # A single run stopped before its first request leaves no folder behind (a sweep's jobs
        # keep theirs, for the sweep's table): it holds nothing a user would look for.
        early_stop.RUN_FOLDERS.append(folder)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        early_stop.release()  # a stopped sweep still compares and logs what finished
        _stop_if_unwritable(Path(str(config.hydra.sweep.dir)), "hydra.sweep.dir")


def _stop_if_unwritable(folder: Path, setting: str) -> None:
    from sentinel_exp.store.writable import folder_problem

    problem = folder_problem(folder)
    if problem:
        from sentinel_exp.report import console as ui

        ui.stderr.print(
            f"[bold red]error:[/] {escape(f'cannot write the output folder {folder} ({setting}): {problem}')}",
            soft_wrap=True,
        )
        sys.exit(UserError.exit_code)


def _run_context() -> RunContext:
    from sentinel_exp.run.context import RunContext
    from sentinel_exp.sweep.callbacks import sweep_record, swept_keys

    hc = HydraConfig.get()
    in_sweep = hc.mode == RunMode.MULTIRUN
    sweep_id = sweep_record(Path(hc.sweep.dir)) if in_sweep else None
    return RunContext(
        output_dir=Path(hc.runtime.output_dir),
        choices={k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra")},
        overrides=list(hc.overrides.task),
        swept=swept_keys(Path(hc.sweep.dir)) if in_sweep else frozenset(),
        sweep_id=sweep_id,
        resume=in_sweep,
    )


def _user_error(exc: UserError, ctx: RunContext) -> None:
    """A single run exits with the error's status. In a sweep, one unusable combination (a model
    not pulled, say) must not cost the others: the job is recorded as failed and the sweep goes
    on; it still ends with exit status 2 (sweep.SweepSummary)."""
    from sentinel_exp.report import console as ui
    from sentinel_exp.store.run_folder import RunFolder
    from sentinel_exp.sweep.callbacks import record_error

    ui.stderr.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        if not isinstance(exc, RunFailed) and not any(ctx.output_dir.rglob(RunFolder.RECORDS)):
            # Stopped before any request: no half-made run folder is left to mistake for a run (the
            # doctor's runs are in folders of its own, below this one).
            shutil.rmtree(ctx.output_dir, ignore_errors=True)
        sys.exit(exc.exit_code)
    record_error(ctx.output_dir, str(exc))


def main() -> None:
    if sys.argv[1:2] == ["compare"]:  # `sentinel-exp compare ...` is `python -m sentinel_exp.compare ...`
        from sentinel_exp.cli.compare import main as compare_main

        early_stop.release()

        sys.exit(compare_main(sys.argv[2:]))
    register_configs()
    _stop_on_bad_overrides(sys.argv[1:])
    if wants_help(sys.argv[1:]):
        from sentinel_exp.cli.overrides import command_line_overrides

        print(help_text(config_dir(), command_line_overrides(sys.argv[1:])))
        return
    try:
        _hydra_main()
    except (KeyboardInterrupt, SystemExit) as exc:
        # A sweep stopped midway (Ctrl-C, SIGTERM): what finished is still compared and logged.
        from sentinel_exp.sweep.callbacks import finish_interrupted_sweep

        finish_interrupted_sweep()
        if isinstance(exc, KeyboardInterrupt) or exc.code in (130, 143):
            early_stop.drop_unstarted_runs()
        raise
    finally:
        # Everything is written and closed by now. Without a cyclic collection of MLflow's,
        # Hydra's and SQLAlchemy's objects, the interpreter exits about a second sooner.
        gc.freeze()


def _stop_on_bad_overrides(argv: list[str]) -> None:
    from sentinel_exp.cli.doctor import multirun_problem
    from sentinel_exp.cli.overrides import command_line_overrides, override_problems

    problems = override_problems(command_line_overrides(argv), config_dir())
    problems += [p for p in [multirun_problem(argv)] if p]
    if problems:
        from sentinel_exp.report import console as ui

        for problem in problems:
            ui.stderr.print(f"[bold red]error:[/] {escape(problem)}", soft_wrap=True)
        sys.exit(UserError.exit_code)
