"""The doctor run in this process on typed configs: its candidates' configurations composed from
overrides as `variant` composes them (the CLI composes them with Hydra: cli/doctor.py), with no
MLflow, pictures, telemetry or progress bar, and every other step as `sweep=diagnose` takes it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sentinel_exp.cli.doctor import merge_overrides
from sentinel_exp.config.schema import ExperimentConfig, register_configs, typed_config
from sentinel_exp.doctor.steps import Doctor, diagnose
from sentinel_exp.doctor.text import Report
from support.compose import variant
from support.sim_study import QUIET_RUN


def diagnose_here(folder: Path, *overrides: str) -> Report:
    """The doctor of the configuration `overrides` make, in `folder`; its report."""
    register_configs()
    given = (*QUIET_RUN, "progress=false", *overrides)

    def compose(extra: Sequence[str]) -> ExperimentConfig:
        return typed_config(variant(*merge_overrides(given, extra)))

    report = diagnose(Doctor(compose(()), folder, tuple(overrides), {}, compose))
    assert report is not None, "the baseline finished, so there is a report"
    return report
