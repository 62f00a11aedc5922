"""The order of a sweep's jobs, for the default sweeper (hydra_plugins/sentinel_exp_sweeper).

That sweeper is Hydra's basic sweeper (every combination), which varies the last override
fastest, so where the `repeat` override stands decides the order: last, a configuration's
repeats run back to back (A A A B B B); first, the arms alternate (A B A B A B). `sequential`
puts it last. `interleaved` puts it first and, so that every arm is measured at several points
in time, splits each configuration into `sweep.chunks` jobs, `repeat=0..chunks-1`, each measuring
its share of the requests (ExperimentConfig.job_share). Drift of the machine (thermal throttling,
background load) then falls on every arm alike.
"""

from __future__ import annotations

from sentinel_exp.names import SweepOrder

REPEAT = "repeat"


class InterleaveError(ValueError):
    """A sweep that sets `repeat` while the interleaved order numbers the chunks itself."""


def override_key(override: str) -> str:
    """`repeat=range(0,3)` -> repeat; a key holds no `=`, whatever its value does."""
    return override.split("=", 1)[0].lstrip("+~")


def arrange(overrides: list[str], order: str, chunks: int) -> list[str]:
    """The sweep's overrides (a preset's params first, then the command line's) with `repeat`
    where `order` wants it. A key given twice keeps its last value, as Hydra's sweeper does."""
    repeats = [o for o in overrides if override_key(o) == REPEAT]
    rest = [o for o in overrides if override_key(o) != REPEAT]
    if order == SweepOrder.interleaved:
        if repeats:
            raise InterleaveError(
                f"sweep.order=interleaved numbers each configuration's chunks as repeat=0..sweep.chunks-1 "
                f"itself, so the sweep cannot set repeat as well (got {repeats[-1]}); for more or longer "
                f"chunks, raise sweep.chunks or workload.requests"
            )
        return [f"{REPEAT}=range(0,{chunks})", *rest]
    return [*rest, *repeats[-1:]]
