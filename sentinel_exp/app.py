"""The `python -m sentinel_exp` entry point: Hydra composes, experiment.run measures."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.markup import escape

from sentinel_exp.cli_help import help_text, wants_help
from sentinel_exp.config import register_configs, typed_config
from sentinel_exp.errors import Interrupted, UserError


def config_dir() -> Path:
    """conf/ ships inside the wheel as sentinel_exp/conf; in a checkout it is ../conf."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf"


# Sweep jobs that stopped on a user error, and every job's outcome for the closing table
# (Hydra's basic launcher runs the jobs in this process, one after another).
_failed_jobs: list[str] = []
_sweep_jobs: list[tuple[tuple[str, ...], dict[str, float] | None]] = []


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from sentinel_exp import console as ui
    from sentinel_exp.experiment import RunContext, run

    hc = HydraConfig.get()
    ctx = RunContext(
        output_dir=Path(hc.runtime.output_dir),
        choices={k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra")},
        overrides=list(hc.overrides.task),
    )
    try:
        outcome = run(typed_config(cfg), ctx)
    except UserError as exc:
        ui.stderr.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        if hc.mode != RunMode.MULTIRUN:
            sys.exit(exc.exit_code)
        # In a sweep, one unusable combination (a model not pulled, say) must not cost the
        # others; the sweep still ends with a non-zero status (see main).
        _failed_jobs.append(f"#{hc.job.num} {' '.join(hc.overrides.task)}: {exc}")
        _sweep_jobs.append((_job_label(hc), None))
        return None
    except Interrupted as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        ui.stderr.print("[yellow]interrupted[/]")
        sys.exit(130)
    if hc.mode == RunMode.MULTIRUN:
        _sweep_jobs.append((_job_label(hc), outcome.metrics))
    # The objective a Hydra sweeper (e.g. Optuna) minimises.
    return outcome.metrics.get("ttft_ms_p50")


def _job_label(hc: Any) -> tuple[str, ...]:
    return (f"#{hc.job.num}", *hc.overrides.task)


def main() -> None:
    register_configs()
    _stop_on_bad_overrides(sys.argv[1:])
    if wants_help(sys.argv[1:]):
        from sentinel_exp.overrides import command_line_overrides

        print(help_text(config_dir(), command_line_overrides(sys.argv[1:])))
        return
    _hydra_main()
    from sentinel_exp import console as ui

    if len(_sweep_jobs) > 1:
        labels = distinguishing_labels([label for label, _ in _sweep_jobs])
        ui.print_sweep_table([(name, metrics) for name, (_, metrics) in zip(labels, _sweep_jobs, strict=False)])
    if _failed_jobs:
        ui.stderr.print(f"[bold red]{len(_failed_jobs)} sweep job(s) failed:[/]", soft_wrap=True)
        for line in _failed_jobs:
            ui.stderr.print("  " + escape(line), soft_wrap=True)
        sys.exit(UserError.exit_code)


def _stop_on_bad_overrides(argv: list[str]) -> None:
    from sentinel_exp.overrides import command_line_overrides, override_problems

    problems = override_problems(command_line_overrides(argv), config_dir())
    if problems:
        from sentinel_exp import console as ui

        for problem in problems:
            ui.stderr.print(f"[bold red]error:[/] {escape(problem)}", soft_wrap=True)
        sys.exit(UserError.exit_code)


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
