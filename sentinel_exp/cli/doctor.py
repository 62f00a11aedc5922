"""`python -m sentinel_exp sweep=diagnose [overrides]`: the doctor (sentinel_exp/doctor/) started
from the Hydra entry point. Each candidate's configuration is composed by Hydra from the command
line's overrides and the candidate's own, as if it had been typed on the command line."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sentinel_exp.config.schema import ExperimentConfig, typed_config
from sentinel_exp.errors import UserError

if TYPE_CHECKING:
    from sentinel_exp.doctor.steps import Compose
    from sentinel_exp.run.context import RunContext

PRESET = "diagnose"  # sweep=diagnose
MULTIRUN = "sweep=diagnose is one run that plans and runs its own studies: start it without -m (--multirun)"


def multirun_problem(argv: Sequence[str]) -> str | None:
    """The doctor asked for as a sweep: said before Hydra starts one (whose study would measure
    first and refuse after)."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    return MULTIRUN if multirun and f"sweep={PRESET}" in argv else None


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def doctors_own(override: str) -> bool:
    """The doctor's own settings: not part of the configuration it diagnoses."""
    key = _key(override)
    return (key == "sweep" and override.partition("=")[2] == PRESET) or key.startswith(f"{PRESET}.")


def merge_overrides(given: Sequence[str], extra: Sequence[str]) -> list[str]:
    """The command line's overrides with a candidate's on top: a key both set is the candidate's."""
    changed = {_key(x) for x in extra}
    return [o for o in given if _key(o) not in changed] + list(extra)


def hydra_composer(given: Sequence[str]) -> Compose:
    """Compose with the Hydra that runs this command (its config search path and choices)."""

    def compose_one(extra: Sequence[str]) -> ExperimentConfig:
        from hydra import compose

        return typed_config(compose(config_name="config", overrides=merge_overrides(given, extra)))

    return compose_one


def run_doctor(cfg: ExperimentConfig, ctx: RunContext, multirun: bool) -> None:
    """The doctor in this run's folder; raises what it raises (Interrupted, UserError) once its
    report is written."""
    import psutil

    from sentinel_exp.doctor.steps import Doctor, diagnose

    if multirun:
        raise UserError(MULTIRUN)
    given = tuple(o for o in ctx.overrides if not doctors_own(o))
    # diagnose.budget_s is the command's machine time: its start-up (imports, Hydra) counts too.
    started_s = max(0.0, time.time() - psutil.Process().create_time())
    diagnose(Doctor(cfg, ctx.output_dir, given, ctx.choices, hydra_composer(ctx.overrides), started_s))
